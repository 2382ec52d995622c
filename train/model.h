// Builds a torch module from a ModelSpec. Parameter names are "<layer>.weight" etc., so
// pruning, quantization and export find tensors by the spec's layer names.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

#include "spec/spec.h"

namespace shrink {

class SpecNetImpl : public torch::nn::Module {
 public:
  explicit SpecNetImpl(ModelSpec spec);
  torch::Tensor forward(torch::Tensor x);
  // Also returns the outputs of the named layers (for feature losses and tests).
  torch::Tensor forward_with(torch::Tensor x, const std::vector<std::string>& taps, std::map<std::string, torch::Tensor>& tapped);
  const ModelSpec& spec() const { return spec_; }
  // Module of a conv, linear or batchnorm layer (nullptr for functional layers).
  std::shared_ptr<torch::nn::Module> layer_module(const std::string& name) const;
  // What checkpoints must record to rebuild this kind of model (the quantized simulation adds
  // its settings); empty for the plain float model.
  virtual nlohmann::json describe() const { return nlohmann::json::object(); }
  // Batchnorm in training mode computed by `fn(x, weight, bias, running_mean, running_var, eps,
  // momentum)` instead of torch::batch_norm (data parallel: SyncBatchNorm); null: LibTorch's.
  using BatchNormFn = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, torch::Tensor&,
                                                  torch::Tensor&, double, double)>;
  void set_training_batchnorm(BatchNormFn fn) { training_batchnorm_ = std::move(fn); }
  const BatchNormFn& training_batchnorm() const { return training_batchnorm_; }

 protected:
  // Output of layer i from its input `in` (and, for a merging layer, the inputs after it: `rest`).
  // `inplace`: `in` may be overwritten. The quantized simulation overrides this.
  virtual torch::Tensor layer_forward(size_t i, torch::Tensor& in, const std::vector<torch::Tensor>& rest, bool inplace);

 private:
  torch::Tensor run(torch::Tensor x, const std::vector<int>* taps, std::vector<torch::Tensor>* kept);
  torch::Tensor batchnorm_forward(size_t i, const torch::Tensor& x);
  ModelSpec spec_;
  std::vector<torch::nn::AnyModule> modules_;   // per layer; empty for functional layers
  std::vector<std::vector<int>> input_index_;   // per layer: indices of its inputs, -1 = model input
  // Per layer: the layers whose output its input is, or is a view of (through flatten, dropout,
  // slice, shuffle); empty when one of them has another reader or it is the model input. An
  // activation may overwrite its input only then, and when none of them is tapped.
  std::vector<std::vector<int>> inplace_sources_;
  BatchNormFn training_batchnorm_;
};
TORCH_MODULE(SpecNet);

// A conv layer's convolution with weight `w` and bias `b` (undefined: none): its stride,
// dilation, groups and padding, asymmetric padding included.
torch::Tensor conv2d_of(const Layer& L, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

}  // namespace shrink
