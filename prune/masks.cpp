#include "prune/masks.h"

#include <fmt/format.h>

#include <limits>

#include "common/error.h"

namespace shrink {

namespace {

torch::Tensor weight_of(SpecNet& model, const std::string& layer) {
  auto params = model->named_parameters();
  if (!params.contains(layer + ".weight")) throw UserError(fmt::format("layer '{}' has no weights to prune", layer));
  return params[layer + ".weight"];
}

// Mask pruning the `count` smallest of `magnitudes` (flat), ties broken by position.
torch::Tensor prune_smallest(const torch::Tensor& magnitudes, int64_t count) {
  auto mask = torch::ones_like(magnitudes);
  if (count <= 0) return mask;
  auto order = std::get<1>(magnitudes.sort(/*stable=*/true, 0, false));
  mask.index_fill_(0, order.narrow(0, 0, std::min(count, magnitudes.numel())), 0);
  return mask;
}

}  // namespace

torch::Tensor lamp_scores(const torch::Tensor& magnitudes) {
  auto [sorted, order] = magnitudes.to(torch::kFloat64).square().sort(/*stable=*/true, 0, false);
  auto at_or_above = sorted.flip(0).cumsum(0).flip(0).clamp_min(std::numeric_limits<double>::min());  // an all-zero layer scores 0
  return torch::empty_like(sorted).index_put_({order}, sorted / at_or_above);
}

std::map<std::string, torch::Tensor> magnitude_masks(SpecNet& model, const PruneTargets& t) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> masks;
  std::vector<std::string> pooled;
  for (const auto& name : t.layers) {
    auto w = weight_of(model, name).detach().abs().flatten();
    auto it = t.layer_sparsity.find(name);
    if (!t.global || it != t.layer_sparsity.end()) {
      double s = it != t.layer_sparsity.end() ? it->second : t.sparsity;
      masks[name] = prune_smallest(w, std::llround(s * w.numel())).view_as(weight_of(model, name));
    } else {
      pooled.push_back(name);
    }
  }
  if (!pooled.empty()) {
    std::vector<torch::Tensor> parts;
    for (const auto& name : pooled) {
      auto w = weight_of(model, name).detach().abs().flatten();
      parts.push_back(t.lamp ? lamp_scores(w) : w.to(torch::kFloat64));
    }
    auto all = torch::cat(parts);
    auto mask = prune_smallest(all, std::llround(t.sparsity * all.numel()));
    int64_t offset = 0;
    for (const auto& name : pooled) {
      auto w = weight_of(model, name);
      masks[name] = mask.narrow(0, offset, w.numel()).view_as(w).to(w.scalar_type());  // the pool ranks in float64
      offset += w.numel();
    }
  }
  return masks;
}

double cubic_sparsity(double t, double t0, double t_end, double s_i, double s_f) {
  if (t <= t0) return s_i;
  if (t >= t_end) return s_f;
  double r = 1 - (t - t0) / (t_end - t0);
  return s_f + (s_i - s_f) * r * r * r;
}

}  // namespace shrink
