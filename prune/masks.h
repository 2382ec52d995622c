// Unstructured magnitude pruning: which layers and which weights (train/masks.h keeps them at zero).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "spec/match.h"
#include "train/masks.h"
#include "train/model.h"

namespace shrink {

struct PruneTargets {
  std::vector<std::string> layers;                 // layers to prune
  double sparsity = 0.9;                           // target share of zeros
  bool global = true;                              // one threshold across layers
  bool lamp = false;                               // rank by LAMP score instead of magnitude (global)
  std::map<std::string, double> layer_sparsity;    // per-layer overrides (pruned layer-wise)
};

// Masks (1 keep, 0 pruned) of the smallest-magnitude weights. Already-zero weights go first, so
// masks only grow when the target rises. Exactly round(sparsity * n) weights are pruned.
// With `lamp`, the global pool ranks weights by LAMP score (Lee et al., ICLR 2021): a weight's
// squared magnitude over the sum of squares of its layer's weights at least as large. It orders a
// layer's weights as magnitude does but is blind to the layer's scale, which a batchnorm after a
// conv makes arbitrary: one threshold no longer empties a layer whose weights merely are small.
std::map<std::string, torch::Tensor> magnitude_masks(SpecNet& model, const PruneTargets& targets);
// LAMP scores of `magnitudes` (flat; of weights, or of filters' norms): m_i^2 / the sum of m_j^2
// over the j ranked at or above i.
torch::Tensor lamp_scores(const torch::Tensor& magnitudes);

// Cubic sparsity schedule (Zhu & Gupta 2017): s_i before t0, s_f after t_end, between them
// s_f + (s_i - s_f) * (1 - (t - t0) / (t_end - t0))^3.
double cubic_sparsity(double t, double t0, double t_end, double s_i, double s_f);

}  // namespace shrink
