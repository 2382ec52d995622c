// What a training run minimizes, when it is more than cross-entropy on the labels (distillation,
// for one). The trainer owns the loop, checkpoints and metrics; an Objective supplies the loss
// and any trainable parts of its own (adapters), which the trainer optimizes and checkpoints.
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "datasets/data.h"
#include "datasets/loader.h"
#include "train/model.h"
#include "train/run_log.h"

namespace shrink {

class Objective {
 public:
  virtual ~Objective() = default;
  // The stage name written to checkpoints ("distill", ...).
  virtual std::string stage() const = 0;
  // Called once the data and the student exist, before training starts or resumes.
  virtual void prepare(const Data& data, const Augment& normalization, SpecNet& student, RunLog& log) {}
  // Student layers whose outputs the loss needs.
  virtual std::vector<std::string> student_taps() const { return {}; }
  // Trainable parameters besides the student's (optimized and checkpointed with it); may be null.
  virtual std::shared_ptr<torch::nn::Module> trainable() { return nullptr; }
  // Work on each training batch done ahead by the loader (LoaderOptions::ahead): a frozen teacher's
  // forward while the model trains on the batch before. Null: none.
  virtual std::function<void(Batch&)> batch_ahead() { return nullptr; }
  virtual torch::Tensor loss(const Batch& batch, const torch::Tensor& logits, const std::map<std::string, torch::Tensor>& taps) = 0;
  // Extra fields of this epoch's metrics.jsonl record (e.g. the loss terms' means). Called on
  // every worker at the end of each epoch: values summed over the workers must be summed here.
  virtual nlohmann::json epoch_metrics() { return nlohmann::json::object(); }
  // On --resume, after prepare: the metrics record of the last epoch the checkpoint holds (empty
  // for checkpoints written before it was saved), so that finish() reports what it would have
  // reported without the interruption.
  virtual void resume(const nlohmann::json& last_epoch_metrics) {}
  // Extra fields of summary.json, measured on the final student.
  virtual nlohmann::json finish(SpecNet& student, const Data& data, const Augment& normalization) { return nlohmann::json::object(); }
};

// Acts on the model around each optimizer step: pruning keeps its masks this way. Its state
// (masks) is checkpointed under state_name() and restored on --resume.
class StepHook {
 public:
  virtual ~StepHook() = default;
  // Called once the model exists (with its initial or resumed weights), before training.
  virtual void prepare(SpecNet& model, RunLog& log) {}
  // Before each step; `epoch_position` = epoch + step / steps_per_epoch.
  virtual void begin_step(SpecNet& model, double epoch_position) {}
  virtual void after_backward(SpecNet& model) {}
  virtual void after_step(SpecNet& model) {}
  virtual torch::nn::Module* state() { return nullptr; }
  virtual std::string state_name() const { return "hook"; }
  virtual nlohmann::json epoch_metrics(SpecNet& model) { return nlohmann::json::object(); }
  virtual nlohmann::json finish(SpecNet& model) { return nlohmann::json::object(); }
};

}  // namespace shrink
