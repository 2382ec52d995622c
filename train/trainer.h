// The training job: builds data, model and optimizer from a JobConfig, trains with evaluation
// each epoch, and leaves a complete run directory (see docs/run-directory.md).
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>

#include "train/config.h"

namespace shrink {

class Objective;
class StepHook;
class SpecNetImpl;
struct ModelSpec;
// Builds the module trained for a spec (default: the float SpecNet; quantization-aware training
// passes its simulation).
using ModelFactory = std::function<std::shared_ptr<SpecNetImpl>(const ModelSpec&)>;

struct RunOptions {
  bool resume = false;            // continue from <out>/checkpoints/last.pt
  bool overwrite = false;         // start afresh even if <out> holds a run
  bool quiet = false;             // no console output (log.txt is still written)
  int64_t stop_after_epochs = -1; // tests: stop after this many epochs of this call, as if killed
};

// Runs (or resumes) the job; returns what it wrote to summary.json. Without an objective the
// loss is cross-entropy on the labels (with train.label_smoothing); a hook acts around each step.
nlohmann::json run_train_job(const JobConfig& job, const RunOptions& options = {}, Objective* objective = nullptr, StepHook* hook = nullptr,
                             const ModelFactory& factory = nullptr);

}  // namespace shrink
