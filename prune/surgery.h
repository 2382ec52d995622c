// Structured pruning: remove whole conv filters and linear output features (rows) by L1 norm and
// rewrite the model into a smaller dense one. Channels are tracked as "channel spaces": a conv or
// a linear creates one (the model's output stays whole); batchnorm, ReLU,
// pooling, dropout and depthwise convs pass theirs through; a residual add ties its inputs' spaces
// into one, so channels removed there are removed from every conv that feeds the add.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "train/model.h"

namespace shrink {

struct FilterPruning {
  double ratio = 0.5;                        // share of filters removed per layer (or overall, when global)
  bool global = false;                       // rank conv filters across layers by mean |w| (linear features: per layer)
  bool lamp = false;                         // global: rank every layer's filters and features by LAMP score of their L2 norms
  std::map<std::string, double> layer_ratio; // per conv or linear layer overrides
  std::vector<std::string> excluded;         // conv or linear layers whose filters all stay
};

// The kept output channels of every pruned conv or linear layer (sorted), by layer name.
struct FilterPlan {
  std::map<std::string, std::vector<int64_t>> keep;
};

FilterPlan plan_filter_pruning(SpecNet& model, const FilterPruning& options);
// The smaller dense model: the same function as `mask_filters` applied to the original.
SpecNet remove_filters(SpecNet& model, const FilterPlan& plan);
// Zeros the removed filters in place (conv and linear rows and biases, batchnorm scale and shift), so
// the original model computes what the smaller one does; for tests and comparisons.
void mask_filters(SpecNet& model, const FilterPlan& plan);

}  // namespace shrink
