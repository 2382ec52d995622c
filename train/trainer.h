// The training job: builds data, model and optimizer from a JobConfig, trains with evaluation
// each epoch, and leaves a complete run directory (see docs/run-directory.md).
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <vector>

#include "train/config.h"
#include "train/run_dir.h"  // RunOptions

namespace shrink {

class Objective;
class StepHook;
class SpecNetImpl;
struct ModelSpec;
// Builds the module trained for a spec (default: the float SpecNet; quantization-aware training
// passes its simulation).
using ModelFactory = std::function<std::shared_ptr<SpecNetImpl>(const ModelSpec&)>;

// Runs (or resumes) the job; returns what it wrote to summary.json. Without an objective the
// loss is cross-entropy on the labels (with train.label_smoothing). The hooks act around each
// step, in order (pruning's masks; QAT's masks and its freezing schedule side by side); each
// hook's state is checkpointed under its state_name(), which must differ between them.
nlohmann::json run_train_job(const JobConfig& job, const RunOptions& options = {}, Objective* objective = nullptr,
                             std::vector<StepHook*> hooks = {}, const ModelFactory& factory = nullptr);

}  // namespace shrink
