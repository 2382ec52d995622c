// The pruning job: starts from a checkpoint, prunes (unstructured magnitude pruning on a
// one-shot, iterative or gradual schedule, or structured filter removal), fine-tunes each
// round with the trainer (optionally under a teacher), and reports sparsity and accuracy.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "train/config.h"
#include "train/trainer.h"

namespace shrink {

class Objective;

struct PruneConfig {
  std::string checkpoint;               // the model to prune
  std::string method = "unstructured";  // unstructured | structured
  std::string schedule = "iterative";   // oneshot | iterative | gradual
  std::string scope = "global";         // global | layer
  std::string score = "magnitude";      // magnitude | lamp (how scope = global ranks weights or filters across layers; the key's auto is resolved)
  double sparsity = 0.9;
  std::string layers, exclude, overrides;  // layer patterns; overrides: pattern:value,...
  int64_t rounds = 3;
  std::string rewind = "none";          // none | init | epoch:K
  std::string rewind_checkpoint;        // default: <checkpoint's folder>/epoch-K.pt (init: epoch-0.pt)
  double initial_sparsity = 0, start_epoch = 0, end_epoch = -1, update_every = 0.25;  // gradual
  double filter_ratio = 0.5;            // structured
};

void add_prune_options(Keys& keys);
PruneConfig read_prune_config(const Config& config);
// `fine_tune` (may be null) is the objective of each fine-tuning round (e.g. distillation).
nlohmann::json run_prune_job(const JobConfig& job, const PruneConfig& prune, const RunOptions& options, Objective* fine_tune = nullptr);

// Per-layer table of shape, params, nonzeros, sparsity, dense MACs and MACs left; totals.
std::string prune_report(const std::string& checkpoint);
// Accuracy with each weight layer pruned alone (layer-wise magnitude, no fine-tuning) at each sparsity.
std::string sensitivity_table(const std::string& checkpoint, const DataConfig& data, const std::vector<double>& sparsities);

}  // namespace shrink
