// Structured pruning: remove whole conv filters by L1 norm and rewrite the model into a smaller
// dense one. Channels are tracked as "channel spaces": a conv creates one; batchnorm, ReLU,
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
  bool global = false;                       // rank filters across layers by mean |w|
  std::map<std::string, double> layer_ratio; // per conv layer overrides
  std::vector<std::string> excluded;         // conv layers whose filters all stay
};

// The kept output channels of every pruned conv layer (sorted), by layer name.
struct FilterPlan {
  std::map<std::string, std::vector<int64_t>> keep;
};

FilterPlan plan_filter_pruning(SpecNet& model, const FilterPruning& options);
// The smaller dense model: the same function as `mask_filters` applied to the original.
SpecNet remove_filters(SpecNet& model, const FilterPlan& plan);
// Zeros the removed filters in place (conv weights and biases, batchnorm scale and shift), so
// the original model computes what the smaller one does; for tests and comparisons.
void mask_filters(SpecNet& model, const FilterPlan& plan);

}  // namespace shrink
