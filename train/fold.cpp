#include "train/fold.h"

namespace shrink {
namespace {

// Index of the batchnorm that folds into layer i, or -1.
int foldable_batchnorm(const ModelSpec& spec, size_t i) {
  const Layer& L = spec.layers[i];
  if (!has_weights(L.type) || i + 1 >= spec.layers.size()) return -1;  // a batchnorm folds into weights
  const Layer& next = spec.layers[i + 1];
  if (next.type != LayerType::BatchNorm || next.inputs != std::vector<std::string>{L.name}) return -1;
  for (const Layer& other : spec.layers)  // nobody else may read the unnormalized output
    if (&other != &next && std::find(other.inputs.begin(), other.inputs.end(), L.name) != other.inputs.end()) return -1;
  return static_cast<int>(i + 1);
}

}  // namespace

double batchnorm_eps(SpecNetImpl& model, const std::string& name) {
  if (auto b2 = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(model.layer_module(name))) return b2->options.eps();
  if (auto b1 = std::dynamic_pointer_cast<torch::nn::BatchNorm1dImpl>(model.layer_module(name))) return b1->options.eps();
  return 1e-5;
}

std::pair<torch::Tensor, torch::Tensor> batchnorm_scale_shift(SpecNetImpl& model, const std::string& name) {
  torch::NoGradGuard no_grad;
  auto params = model.named_parameters();
  auto buffers = model.named_buffers();
  auto scale = params[name + ".weight"] / (buffers[name + ".running_var"] + batchnorm_eps(model, name)).sqrt();
  return {scale, params[name + ".bias"] - buffers[name + ".running_mean"] * scale};
}

std::map<std::string, std::string> folded_batchnorms(const ModelSpec& spec) {
  std::map<std::string, std::string> folded;
  for (size_t i = 0; i < spec.layers.size(); ++i)
    if (int bn = foldable_batchnorm(spec, i); bn >= 0) folded[spec.layers[bn].name] = spec.layers[i].name;
  return folded;
}

FoldedModel fold_batchnorm(SpecNet& model) {
  const ModelSpec& spec = model->spec();
  FoldedModel out;
  ModelSpec folded = spec;
  folded.layers.clear();
  std::map<size_t, int> folds;  // layer -> its batchnorm
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    int bn = foldable_batchnorm(spec, i);
    Layer L = spec.layers[i];
    for (auto& in : L.inputs)
      if (out.renamed.count(in)) in = out.renamed[in];
    if (bn >= 0) {
      folds[i] = bn;
      L.bias = true;
      out.renamed[spec.layers[bn].name] = L.name;
    }
    folded.layers.push_back(L);
    if (bn >= 0) ++i;  // the batchnorm is gone
  }
  out.model = SpecNet(folded);
  out.model->eval();
  torch::NoGradGuard no_grad;
  auto src = model->named_parameters(), src_buffers = model->named_buffers();
  auto dst = out.model->named_parameters(), dst_buffers = out.model->named_buffers();
  for (auto& p : dst) {
    if (src.contains(p.key()) && src[p.key()].sizes() == p.value().sizes()) p.value().copy_(src[p.key()]);
  }
  for (auto& b : dst_buffers) b.value().copy_(src_buffers[b.key()]);
  for (const auto& [i, bn] : folds) {
    const std::string& name = spec.layers[i].name;
    const std::string& bn_name = spec.layers[bn].name;
    auto gamma = src[bn_name + ".weight"], beta = src[bn_name + ".bias"];
    auto mean = src_buffers[bn_name + ".running_mean"], var = src_buffers[bn_name + ".running_var"];
    double eps = batchnorm_eps(*model, bn_name);
    auto scale = gamma / (var + eps).sqrt();
    auto w = src[name + ".weight"];
    std::vector<int64_t> shape(w.dim(), 1);
    shape[0] = -1;
    dst[name + ".weight"].copy_(w * scale.view(shape));
    auto b = src.contains(name + ".bias") ? src[name + ".bias"] : torch::zeros_like(mean);
    dst[name + ".bias"].copy_((b - mean) * scale + beta);
  }
  return out;
}

}  // namespace shrink
