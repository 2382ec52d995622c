// Masks that survive training: zeros a job wants kept (a pruned model's, or the weights pruning
// removes as it goes) stay zero through every optimizer step, and the masks are checkpointed.
// A trainer concern, so pruning and quantization-aware training use it alike.
#pragma once
#include <map>
#include <string>

#include "train/model.h"
#include "train/objective.h"

namespace shrink {

// Masks (1 keep, 0 zero) of layer weights, kept as buffers of a module so checkpoints carry them.
class MaskSet : public torch::nn::Module {
 public:
  void set(const std::string& layer, const torch::Tensor& mask);
  void set_all(const std::map<std::string, torch::Tensor>& masks);
  std::map<std::string, torch::Tensor> masks() const;
  void apply_to_weights(SpecNet& model) const;
  void apply_to_gradients(SpecNet& model) const;
  // Re-registers buffers named in a checkpoint so load() finds them (the saved set decides).
  void prepare_for(const ModelSpec& spec);
};

// Keeps masked weights at zero through training: masks the gradients before each optimizer step
// and the weights after it; the masks are checkpointed ("masks") and restored on --resume.
class MaskingHook : public StepHook {
 public:
  explicit MaskingHook(std::map<std::string, torch::Tensor> initial) : initial_(std::move(initial)) {}
  void prepare(SpecNet& model, RunLog& log) override;
  void after_backward(SpecNet& model) override { masks_.apply_to_gradients(model); }
  void after_step(SpecNet& model) override { masks_.apply_to_weights(model); }
  torch::nn::Module* state() override { return &masks_; }
  std::string state_name() const override { return "masks"; }
  nlohmann::json epoch_metrics(SpecNet& model) override;

 protected:
  MaskSet masks_;

 private:
  std::map<std::string, torch::Tensor> initial_;
};

// Masks of the conv and linear weights that are exactly zero (a pruned model's).
std::map<std::string, torch::Tensor> zero_masks(SpecNet& model);

// Zeros and totals of conv and linear weights.
struct SparsityStats {
  int64_t zeros = 0, total = 0;
  double sparsity() const { return total ? static_cast<double>(zeros) / total : 0; }
};
SparsityStats weight_sparsity(SpecNet& model);

}  // namespace shrink
