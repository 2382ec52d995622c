// Unstructured magnitude pruning: which layers, which weights, and keeping them at zero.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "spec/match.h"
#include "train/model.h"
#include "train/objective.h"

namespace shrink {

struct PruneTargets {
  std::vector<std::string> layers;                 // layers to prune
  double sparsity = 0.9;                           // target share of zeros
  bool global = true;                              // one magnitude threshold across layers
  std::map<std::string, double> layer_sparsity;    // per-layer overrides (pruned layer-wise)
};

// Masks (1 keep, 0 pruned) of the smallest-magnitude weights. Already-zero weights go first, so
// masks only grow when the target rises. Exactly round(sparsity * n) weights are pruned.
std::map<std::string, torch::Tensor> magnitude_masks(SpecNet& model, const PruneTargets& targets);

// Masks kept as buffers of a module, so checkpoints carry them.
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

// Zeros and totals of conv and linear weights.
struct SparsityStats {
  int64_t zeros = 0, total = 0;
  double sparsity() const { return total ? static_cast<double>(zeros) / total : 0; }
};
SparsityStats weight_sparsity(SpecNet& model);
// Cubic sparsity schedule (Zhu & Gupta 2017): s_i before t0, s_f after t_end, between them
// s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0))^3.
double cubic_sparsity(double t, double t0, double t_end, double s_i, double s_f);

}  // namespace shrink
