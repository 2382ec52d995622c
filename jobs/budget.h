// Compression to an accuracy budget (`[pipeline] budget = B`): instead of fixed targets, the
// pipeline prunes in rounds while the validation accuracy stays within B points of the teacher's,
// then quantizes to int8, keeping in float the layers whose int8 error costs most (only as many as
// the budget needs), and picks the smallest (objective = size) or fastest (objective = latency)
// candidate within the budget. Every decision reads validation accuracy, held out from the
// training data by every stage; the test set is only measured for the record.
//
// The rules (PruneSearch, choose_float_layers, choose_candidate) are plain functions of numbers,
// tested on synthetic cases; BudgetSearch runs them on the pipeline's stages.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "jobs/jobs.h"
#include "train/config.h"

namespace shrink {

// Accuracies are fractions (0.93), budgets points (0.5 = half a percentage point).
inline bool within_budget(double reference, double budget_points, double accuracy) {
  return (reference - accuracy) * 100 <= budget_points + 1e-9;
}

// The pruning rounds' rule. Each round removes a share `step` of what the last accepted round
// kept (weights for unstructured pruning, filters for structured); a round within the budget is
// accepted and the next goes on from it with the same step; one over the budget is rejected and
// the step halves, from the last accepted round again. The search ends after `max_rounds` rounds
// or when the step falls below `min_step`; the last accepted round is the answer.
class PruneSearch {
 public:
  struct Settings {
    double first_step = 0.5, min_step = 0.05;
    int max_rounds = 6;
  };
  PruneSearch(double reference, double budget_points, Settings settings);
  // The kept share (of the start model's, 1 = all) the next round prunes to; nullopt: stop.
  std::optional<double> next() const;
  // The step of that round: the share of the accepted model's weights (or filters) it removes.
  double step() const { return step_; }
  void record(double kept, double val_accuracy);
  double accepted_kept() const { return accepted_kept_; }
  int accepted_round() const { return accepted_round_; }  // 0: none (the start model)
  int rounds() const { return rounds_; }

 private:
  double reference_, budget_;
  Settings settings_;
  double step_, accepted_kept_ = 1;
  int accepted_round_ = 0, rounds_ = 0;
};

// How many layers to keep in float, of `layers` int8 layers ranked most costly first (by the
// accuracy each regains alone in float); `estimate(k)` is the validation accuracy with the first k
// in float. Returns the smallest k whose estimate is within the budget (0: all int8), nullopt when
// even all of them in float is not.
std::optional<size_t> choose_float_layers(size_t layers, const std::function<double(size_t)>& estimate, double reference, double budget_points);

// One model the search measured.
struct BudgetCandidate {
  std::string name, checkpoint, stage;  // stage: distill | prune | quantize
  std::string precision = "fp32";       // fp32 | int8 | mixed
  std::vector<std::string> float_layers;  // mixed: the layers left in float
  double kept = 1;                      // share of weights (filters when structured) kept
  double sparsity = 0;                  // share of zero weights
  double val_accuracy = 0;
  int64_t file_bytes = 0;
  double latency_ms = 0;  // batch 1, on the runtime
  bool within = false;
  nlohmann::json to_json() const;
  static BudgetCandidate from_json(const nlohmann::json& j);
};

// The index of the smallest (objective "size") or fastest ("latency") candidate within the
// budget, ties to the more accurate; with none within it, the most accurate (and `met` false).
size_t choose_candidate(const std::vector<BudgetCandidate>& candidates, const std::string& objective, bool* met);

// The pipeline's keys for it (pipeline.budget, pipeline.objective, ...).
void add_budget_options(Keys& keys);

struct BudgetSettings {
  double budget = -1;  // points; < 0: off
  std::string objective = "size";
  double val_split = 0.1;
  PruneSearch::Settings search;
  int threads = 0;
  static BudgetSettings read(const Config& pipeline);
  bool on() const { return budget >= 0; }
};

// The search over the pipeline's prune and quantize stages. Each stage's config is its job
// config as the pipeline built it (validation split wired); each round runs in a folder of its
// own under the stage's, so an interrupted search replays its finished rounds and goes on.
struct LoadedModel;

class BudgetSearch {
 public:
  BudgetSearch(BudgetSettings settings, std::string root, RunLog& log, bool quiet);
  ~BudgetSearch();
  // Measures the teacher and the model the search starts from (`name`: "distilled", or "start"
  // when it is the teacher itself) on the validation split of `job`'s data; says plainly when even
  // that model is over the budget (nothing is then pruned or quantized).
  void start(const JobConfig& job, const std::string& teacher, const std::string& student, const std::string& name);
  // Pruning rounds from the distilled student (the prune stage's config, in its folder `dir`).
  // `quantize_stage`: the quantize stage's config when it follows; int8's cost, measured with
  // its settings, is then kept out of pruning's share of the budget.
  JobResult prune(const Config& stage_config, const std::string& dir, const Config* quantize_stage);
  // int8 quantization-aware training of `start`, then mixed precision if the budget needs it.
  JobResult quantize(const Config& stage_config, const std::string& dir, const std::string& start);
  // Writes pipeline.json (the reference, every candidate, the chosen one, whether the budget was
  // met) and returns the chosen model's checkpoint.
  std::string finish();

 private:
  struct Opened;
  BudgetCandidate measure(const std::string& name, const std::string& stage, const std::string& checkpoint);
  double val_accuracy(LoadedModel& loaded);
  double int8_reserve(const Config& quantize_stage);  // points of the budget kept for int8
  std::string describe(const BudgetCandidate& c) const;
  BudgetSettings s_;
  std::string root_;
  RunLog& log_;
  bool quiet_;
  std::unique_ptr<Opened> opened_;  // the data, with its validation split
  double reference_ = 0;            // the teacher's validation accuracy
  // The start model and each accepted pruning round, in order: quantization starts from the last,
  // and tries int8 of the one before when the last is over the budget in int8.
  std::vector<BudgetCandidate> accepted_;
  std::vector<BudgetCandidate> candidates_;
};

}  // namespace shrink
