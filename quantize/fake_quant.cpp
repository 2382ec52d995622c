#include "quantize/fake_quant.h"

#include <fmt/format.h>

#include "common/error.h"
#include "parallel/world.h"

namespace shrink {

torch::Tensor fake_quant(const torch::Tensor& x, const torch::Tensor& scale, double qmin, double qmax, double grad_scale) {
  // Scaling the scale's gradient without changing its value: s' = s*g + (s - s*g).detach().
  torch::Tensor s = scale;
  if (scale.requires_grad() && grad_scale != 1.0) s = (scale - scale * grad_scale).detach() + scale * grad_scale;
  // Gradients pass where x / s rounds into the range, i.e. lies within half a step of it (PyTorch's
  // fake quantization rule, up to the half-step ends themselves). Clamping to the range itself
  // would leave to float rounding whether the largest weight of each channel, which defines its
  // scale (x / s = 127 up to an ulp), gets a gradient: runs that differ by an ulp (one process and
  // several, another thread count) took different steps. Outside, v is a constant: the scale's
  // LSQ gradient there is qmin or qmax.
  auto v = torch::clamp(x / s, qmin - 0.5, qmax + 0.5);
  auto rounded = (torch::clamp(torch::round(v), qmin, qmax) - v).detach() + v;  // straight-through rounding
  return rounded * s;
}

torch::Tensor weight_scales(const torch::Tensor& w) {
  return (w.detach().abs().flatten(1).amax(1) / kWeightMax).clamp_min(1e-12);
}

Observer::Kind Observer::parse(const std::string& name) {
  if (name == "minmax") return Kind::MinMax;
  if (name == "ema") return Kind::MovingAverage;
  if (name == "percentile") return Kind::Percentile;
  throw UserError(fmt::format("quantize.observer = {}: expected minmax, ema or percentile", name));
}

void Observer::observe(const torch::Tensor& x) {
  auto a = x.detach().abs().to(torch::kFloat32);
  // Data parallel: the range of the global batch, the same on every worker (one process's).
  double batch_max = World::get().max(a.max().item<double>());
  if (kind_ == Kind::MovingAverage && seen_) max_abs_ = (1 - momentum_) * max_abs_ + momentum_ * batch_max;
  else max_abs_ = std::max(max_abs_, batch_max);
  seen_ = true;
  if (kind_ != Kind::Percentile || batch_max <= 0) return;
  constexpr int64_t bins = 2048;
  if (!histogram_.defined()) {
    histogram_ = torch::zeros({bins}, torch::kFloat64);
    hist_max_ = batch_max;
  }
  while (batch_max > hist_max_) {  // double the range: merge bins pairwise
    histogram_ = torch::cat({histogram_.view({bins / 2, 2}).sum(1), torch::zeros({bins / 2}, torch::kFloat64)});
    hist_max_ *= 2;
  }
  auto counts = torch::histc(a.flatten().to(torch::kFloat64), bins, 0, hist_max_);
  World::get().all_reduce_sum({counts});
  histogram_ += counts;
}

double Observer::range() const {
  if (kind_ != Kind::Percentile || !histogram_.defined()) return max_abs_;
  auto cdf = histogram_.cumsum(0) / histogram_.sum();
  int64_t bin = (cdf < percentile_ / 100.0).sum().item<int64_t>();
  return std::min(max_abs_, (bin + 1) * hist_max_ / histogram_.size(0));
}

}  // namespace shrink
