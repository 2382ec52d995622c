// The quantization job: post-training calibration (ptq) or quantization-aware training (qat) of
// a checkpoint, dense or pruned, in the int8 scheme of docs/quantization.md.
#pragma once
#include <nlohmann/json.hpp>

#include "quantize/qnet.h"
#include "train/config.h"
#include "train/trainer.h"

namespace shrink {

class Objective;

struct QuantizeConfig {
  std::string checkpoint;
  std::string mode = "qat";  // qat | ptq
  QuantSettings settings;
  std::string float_layers;  // patterns, resolved into settings.float_layers
  int64_t calibration_batches = 16;
  double freeze_bn_epoch = -1, freeze_observers_epoch = -1;  // -1: never
};

void add_quantize_options(Keys& keys);
QuantizeConfig read_quantize_config(const Config& config);
nlohmann::json run_quantize_job(const JobConfig& job, const QuantizeConfig& q, const RunOptions& options, Objective* fine_tune = nullptr);
// The accuracy on `on` of `checkpoint` (a float one) quantized after training with q's settings
// (q.float_layers: layer names kept in float), calibrated as the job calibrates: what the
// accuracy-budget search measures to rank layers by what their int8 error costs.
double ptq_accuracy(const std::string& checkpoint, const QuantizeConfig& q, const Data& data, const std::shared_ptr<const Source>& on,
                    int64_t batch_size, uint64_t seed);
// The same calibration saved as an int8 checkpoint at `out` (what a runtime-int8 teacher runs).
void save_ptq_checkpoint(const std::string& checkpoint, const QuantizeConfig& q, const Data& data, int64_t batch_size, uint64_t seed,
                         const std::string& out);

}  // namespace shrink
