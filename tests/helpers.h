// Shared test helpers: temporary folders, tiny files in each data format, running the CLI.
#pragma once
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "quantize/qnet.h"
#include "train/trainer.h"

namespace shrink::test {

// A fresh folder under the system temp dir, removed when the object dies.
struct TempDir {
  std::filesystem::path path;
  TempDir();
  ~TempDir();
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Writes /GROUP/data (float32, or uint8 when x is uint8) and /GROUP/target (int32) to an HDF5 file.
void write_hdf5(const std::string& path, const std::string& group, const torch::Tensor& x, const torch::Tensor& y, bool append = false);
// Writes one IDX file (raw, or gzip'd when the name ends in .gz).
void write_idx(const std::string& path, const torch::Tensor& t);
void write_text(const std::string& path, const std::string& text);
std::string read_text(const std::string& path);

// Run options for jobs in tests: nothing printed.
inline RunOptions quiet() {
  RunOptions o;
  o.quiet = true;
  return o;
}

// Arguments of a small job on synthetic 1x16x16 data (600 train, 200 test, one thread).
std::vector<std::string> synthetic_job_args(const std::string& out, int64_t epochs,
                                            const std::string& spec = "conv(8) bn relu maxpool(2) conv(16) bn relu gap linear(classes)");
// Trains that job into DIR/NAME and returns its last checkpoint.
std::string train_synthetic(const TempDir& dir, const std::string& name, int64_t epochs, std::vector<std::string> extra = {});
// Quantizes `checkpoint` (post-training calibration on that job's data) into DIR/NAME and returns
// its checkpoint: a quantized one.
std::string quantize_synthetic(const TempDir& dir, const std::string& name, const std::string& checkpoint);
// The int8 simulation of `spec` with a float checkpoint's weights, calibrated on `calibration`
// (post-training), saved as DIR/q.pt and exported as DIR/q.shrink; returned in eval mode.
QuantNet calibrated_int8(const TempDir& dir, const ModelSpec& spec, const std::string& float_checkpoint, const QuantSettings& settings,
                         const torch::Tensor& calibration);

struct CliResult {
  int code;
  std::string out;  // stdout and stderr together
};
CliResult run_cli(const std::string& args);  // the shrink binary with these arguments
CliResult run_cmd(const std::string& command);

}  // namespace shrink::test
