// Shared test helpers: temporary folders, tiny files in each data format, running the CLI.
#pragma once
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <map>
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

// A ShuffleNetV2 unit: the channels split in two halves (slice), one passes, the other goes through
// pointwise, depthwise and pointwise convs; joined (concat) and shuffled; then a strided conv.
inline constexpr const char* kShuffleUnit =
    "conv(16) bn x=relu l=slice(0,8) slice(8,16,from=x) conv(8,k=1) bn relu dwconv bn conv(8,k=1) bn b=relu concat(l,b) shuffle(2) "
    "conv(16,s=2) bn relu gap linear(classes)";

// Kernels of another height than width (Inception v3's 1x7 and 7x1, padded along one axis), a
// strided 3x1, a depthwise 1x5.
inline constexpr const char* kNonSquareKernels =
    "conv(8,k=1,kw=7,p=0,pl=3,pr=3) bn relu conv(8,k=7,kw=1,p=3,pl=0,pr=0) bn relu conv(16,k=3,kw=1,s=2,pl=0,pr=0) bn relu "
    "dwconv(k=1,kw=5,p=0,pl=2,pr=2) bn relu gap linear(classes)";
// Strides and pool windows of another width than height, as spectrogram models use: a 2x1 stride,
// 2x1 and 1x3 pools, padding per axis, ceil mode. (The average counts its padding and divides by
// 3: no rounding ties, where ONNX Runtime's int8 average rounds differently.)
inline constexpr const char* kUnequalStridesAndPools =
    "conv(8,s=2,sw=1) bn relu maxpool(k=2,kw=1,sw=1) conv(8,k=3,kw=5,sw=2,pl=2,pr=2) bn relu avgpool(k=1,kw=3,s=1,sw=2,pw=1) "
    "maxpool(k=3,kw=2,s=2,sw=1,p=1,pw=0,ceil=1) conv(8,k=1) relu gap linear(classes)";

// SENet's squeeze-excite: linear layers on the pooled features, the gate unflattened to C,1,1.
inline constexpr const char* kSqueezeExciteLinear = "conv(8) bn x=relu gap linear(4) relu linear(8) sigmoid unflatten mul(x) gap linear(classes)";

// Run options for jobs in tests: nothing printed.
inline RunOptions quiet() {
  RunOptions o;
  o.quiet = true;
  return o;
}

// Arguments of a small job on synthetic 1x16x16 data (600 train, 200 test, one thread).
std::vector<std::string> synthetic_job_args(const std::string& out, int64_t epochs,
                                            const std::string& spec = "conv(8) bn relu maxpool(2) conv(16) bn relu gap linear(classes)");
// Trains that job into DIR/NAME (`extra` --key=value arguments added or replacing the defaults) and
// returns its last checkpoint.
std::string train_synthetic(const TempDir& dir, const std::string& name, int64_t epochs, std::vector<std::string> extra = {});
// Quantizes `checkpoint` (post-training calibration on that job's data) into DIR/NAME and returns
// its checkpoint: a quantized one.
std::string quantize_synthetic(const TempDir& dir, const std::string& name, const std::string& checkpoint);
// The int8 simulation of `spec` with a float checkpoint's weights, calibrated on `calibration`
// (post-training), saved as DIR/q.pt and exported as DIR/q.shrink; returned in eval mode.
QuantNet calibrated_int8(const TempDir& dir, const ModelSpec& spec, const std::string& float_checkpoint, const QuantSettings& settings,
                         const torch::Tensor& calibration);

// A checkpoint of `text` with random weights and batchnorm statistics, saved as DIR/NAME (`meta`
// adds to its metadata: normalization, say).
std::string random_checkpoint(const TempDir& dir, const std::string& name, const std::string& text, std::vector<int64_t> input, int64_t classes,
                              const nlohmann::json& meta = nlohmann::json::object());
// The logits shrink-run's engine computes for the raw inputs x (one thread).
torch::Tensor run_runtime(const std::string& model_file, const torch::Tensor& x, int threads = 1);

// Settings that keep float every batchnorm that is not the only reader of the conv or linear right
// before it (docs/quantization.md: such a batchnorm cannot be folded).
QuantSettings unfoldable_batchnorm_float(const ModelSpec& spec);
// The logits ONNX Runtime computes for x (tools/ort/ort.js: one thread, all graph optimizations);
// with `optimized`, ONNX Runtime also writes the graph it ran there.
// With `outputs`, every output of the graph is written there as NAME.f32 (see first_departing_layer).
torch::Tensor run_ort(const std::string& onnx_file, const torch::Tensor& x, const std::string& optimized = "", const std::string& outputs = "");
// The op types of an ONNX file's graph and how often each occurs (tests/onnx/inspect_export.py).
std::map<std::string, int> onnx_op_counts(const std::string& onnx_file);
// The fraction of rows whose largest logit is in the same place.
double top1_agreement(const torch::Tensor& a, const torch::Tensor& b);
// The largest difference from `expect`, relative to expect's largest magnitude.
double relative_error(const torch::Tensor& got, const torch::Tensor& expect);

// onnx.checker's verdict on the files (tests/onnx/inspect_export.py check): "ok N\n" when all pass.
std::string check_onnx_files(const std::vector<std::string>& files);
// The int8 simulation `q` (saved as DIR/q.pt and exported as DIR/q.shrink), shrink-run and ONNX
// Runtime on DIR/q.onnx (exported here) agree on the top class, pair by pair: shrink-run and the
// simulation for at least 99.5% of x, ONNX Runtime and either of them for `min_ort_agreement`; and
// ONNX Runtime runs every int8 conv and linear as an integer kernel. When they do not, it says
// where first_departing_layer finds the simulation and ONNX Runtime part.
void check_three_way(const TempDir& dir, QuantNet& q, const torch::Tensor& x, double min_ort_agreement = 0.995);
// The per-layer parity report: DIR/q.pt exported with every layer's output exposed, run by ONNX
// Runtime on x, against the simulation's outputs of the same layers, in order: the first layer
// whose outputs differ by more than half an output step (or 1e-4 of the largest value, off grid),
// and by how many steps.
std::string first_departing_layer(const TempDir& dir, QuantNet& q, const torch::Tensor& x);

struct CliResult {
  int code;
  std::string out;  // stdout and stderr together
};
CliResult run_cli(const std::string& args);  // the shrink binary with these arguments
CliResult run_cmd(const std::string& command);

}  // namespace shrink::test
