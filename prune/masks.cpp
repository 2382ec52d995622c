#include "prune/masks.h"

#include <fmt/format.h>


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
    for (const auto& name : pooled) parts.push_back(weight_of(model, name).detach().abs().flatten());
    auto all = torch::cat(parts);
    auto mask = prune_smallest(all, std::llround(t.sparsity * all.numel()));
    int64_t offset = 0;
    for (const auto& name : pooled) {
      auto w = weight_of(model, name);
      masks[name] = mask.narrow(0, offset, w.numel()).view_as(w).clone();
      offset += w.numel();
    }
  }
  return masks;
}

void MaskSet::set(const std::string& layer, const torch::Tensor& mask) {
  if (named_buffers(false).contains(layer)) named_buffers(false)[layer].copy_(mask);
  else register_buffer(layer, mask.detach().clone().contiguous());
}

void MaskSet::set_all(const std::map<std::string, torch::Tensor>& masks) {
  for (const auto& [name, m] : masks) set(name, m);
}

std::map<std::string, torch::Tensor> MaskSet::masks() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& b : named_buffers(false)) out[b.key()] = b.value();
  return out;
}

void MaskSet::apply_to_weights(SpecNet& model) const {
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters();
  for (const auto& b : named_buffers(false)) params[b.key() + ".weight"].mul_(b.value());
}

void MaskSet::apply_to_gradients(SpecNet& model) const {
  auto params = model->named_parameters();
  for (const auto& b : named_buffers(false)) {
    auto& g = params[b.key() + ".weight"].mutable_grad();
    if (g.defined()) g.mul_(b.value());
  }
}

void MaskSet::prepare_for(const ModelSpec& spec) {
  SpecNet probe(spec);
  auto params = probe->named_parameters();
  for (const auto& name : weight_layers(spec))
    if (!named_buffers(false).contains(name)) register_buffer(name, torch::ones_like(params[name + ".weight"]));
}

void MaskingHook::prepare(SpecNet& model, RunLog&) {
  masks_.prepare_for(model->spec());
  masks_.set_all(initial_);
  masks_.apply_to_weights(model);
}

nlohmann::json MaskingHook::epoch_metrics(SpecNet& model) { return {{"sparsity", weight_sparsity(model).sparsity()}}; }

SparsityStats weight_sparsity(SpecNet& model) {
  SparsityStats s;
  auto params = model->named_parameters();
  for (const auto& name : weight_layers(model->spec())) {
    auto w = params[name + ".weight"];
    s.zeros += (w == 0).sum().item<int64_t>();
    s.total += w.numel();
  }
  return s;
}

double cubic_sparsity(double t, double t0, double t_end, double s_i, double s_f) {
  if (t <= t0) return s_i;
  if (t >= t_end) return s_f;
  double r = 1 - (t - t0) / (t_end - t0);
  return s_f + (s_i - s_f) * r * r * r;
}

}  // namespace shrink
