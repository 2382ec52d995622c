// Fake quantization: the arithmetic of docs/quantization.md simulated in float.
#pragma once
#include <torch/torch.h>

#include <string>

namespace shrink {

// s * round(clamp(x / s, qmin, qmax)), rounding half to even (as the runtime's conversions do).
// Gradients: straight-through for x inside the range, zero outside; for a scale that requires
// grad, the LSQ gradient (Esser et al. 2020) scaled by `grad_scale`.
torch::Tensor fake_quant(const torch::Tensor& x, const torch::Tensor& scale, double qmin, double qmax, double grad_scale = 1.0);
// Per-output-channel symmetric int8 scales of a weight [out, ...]: max|w| / 127 (tiny for all-zero rows).
torch::Tensor weight_scales(const torch::Tensor& w);
constexpr double kWeightMax = 127;  // weights use [-127, 127]
// Biases are int32 in the accumulator's units: its range as floats (the largest below 2^31), as
// runtime/model_meta.h's accumulator_bias holds them.
constexpr double kBiasMin = -2147483648.0, kBiasMax = 2147483520.0;

// Range statistics of one activation tensor across batches.
class Observer {
 public:
  enum class Kind { MinMax, MovingAverage, Percentile };
  static Kind parse(const std::string& name);  // minmax | ema | percentile
  Observer(Kind kind, double momentum, double percentile) : kind_(kind), momentum_(momentum), percentile_(percentile) {}
  void observe(const torch::Tensor& x);
  // The largest magnitude to represent (for unsigned tensors: the largest value).
  double range() const;
  bool seen() const { return seen_; }
  // Starts from a known range (a resumed or restored point) instead of the first batch.
  void seed(double range) {
    max_abs_ = range;
    seen_ = true;
  }

 private:
  Kind kind_;
  double momentum_, percentile_;
  bool seen_ = false;
  double max_abs_ = 0;
  torch::Tensor histogram_;  // of |x| over [0, hist_max_), 2048 bins
  double hist_max_ = 0;
};

}  // namespace shrink
