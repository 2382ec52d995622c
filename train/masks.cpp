#include "train/masks.h"

#include "spec/match.h"

namespace shrink {

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

std::map<std::string, torch::Tensor> zero_masks(SpecNet& model) {
  std::map<std::string, torch::Tensor> masks;
  auto params = model->named_parameters();
  for (const auto& name : weight_layers(model->spec())) {
    auto w = params[name + ".weight"];
    masks[name] = (w != 0).to(torch::kFloat32);
  }
  return masks;
}

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

}  // namespace shrink
