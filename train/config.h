// The training job's keys and typed settings (the Config machinery is in common/config.h).
#pragma once
#include <string>
#include <vector>

#include "common/config.h"
#include "datasets/data.h"
#include "spec/spec.h"

namespace shrink {

// Keys of the training job (job.*, data.*, model.*, train.*, optim.*). The model's keys (spec,
// init) go in `model_section`: "model" for train, "student" for distill.
void add_train_options(Keys& keys, const std::string& model_section = "model");

struct OptimConfig {
  std::string name = "sgd";          // sgd | adamw
  double lr = 0.05, momentum = 0.9, weight_decay = 5e-4, beta1 = 0.9, beta2 = 0.999;
  bool nesterov = true;
  std::string schedule = "cosine";   // constant | step | cosine
  double warmup_epochs = 0, step_epochs = 30, gamma = 0.1, min_lr = 0;
};

struct TrainConfig {
  int64_t epochs = 20, batch_size = 128, eval_batch_size = 512, seed = 0, threads = 0;
  double label_smoothing = 0, grad_clip = 0;
  bool drop_last = false, channels_last = true;
  // Data parallel: batchnorm statistics over every worker's examples (true), each worker's own
  // (false), or auto: true for quantization-aware training, false otherwise.
  std::string sync_batchnorm = "auto";
  int prefetch = 2;
  std::string precision = "fp32";  // fp32 | bf16 | auto (train/precision.h)
  double log_seconds = 10;  // plain progress line interval when not on a terminal
  std::vector<int64_t> keep_epochs;  // also keep checkpoints/epoch-K.pt after these epochs (0: the initial weights)
};

struct JobConfig {
  std::string out;
  std::string model;  // spec text or preset name
  std::string init;   // checkpoint whose weights the model starts from (empty: fresh init)
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  std::string resolved_ini;
};

// Reads the typed job settings; checks what no single key's rule can (keys against each other).
JobConfig read_job_config(const Config& config);
// Threads to use: `requested` if > 0, else all cores (shared by this host's data-parallel workers).
int resolve_threads(int64_t requested);

}  // namespace shrink
