// The distillation job: trains the student of [student] under the teacher of [teacher] with the
// losses of [distill] (soft targets, hints, attention transfer), on top of the trainer.
#pragma once
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "train/config.h"
#include "train/trainer.h"

namespace shrink {

class Objective;

struct DistillConfig {
  std::string teacher_path, teacher_kind = "auto";
  std::string teacher_engine = "libtorch";  // libtorch | runtime-fp32 | runtime-int8
  bool force_int8_teacher = false;
  // A runtime teacher's forward of the next batch beside the student's step: auto (when timing says
  // it is faster, with the thread split timing chose), true (a split timing chose, or teacher.threads
  // beside train.threads) or false.
  std::string teacher_ahead = "auto";
  int teacher_threads = 0;     // OpenMP threads of a runtime teacher's calls (0: chosen with teacher.ahead)
  double temperature = 4, alpha = 0.9;  // loss = alpha * soft targets + (1 - alpha) * cross-entropy
  double hint_weight = 0, attention_weight = 0;
  std::vector<std::pair<std::string, std::string>> hints, attention;  // (student layer, teacher layer)
  std::string cache = "auto";  // auto | off | augment-free
  std::string cache_dir = "runs/cache";
  DataConfig data;             // to know whether the student's inputs are augmented
  int64_t eval_batch_size = 512;
  int64_t batch_size = 128;    // the training batch, which the thread split is timed on
  int prefetch = 2;            // loader batches prepared ahead: 0 leaves no thread to run the teacher on
  bool channels_last = true;
};

// Train keys with the model in [student], plus [teacher] and [distill].
void add_distill_options(Keys& keys);
// Just [teacher] and [distill] (for jobs that fine-tune under a teacher, like pruning).
void add_teacher_options(Keys& keys);
// The distillation objective of a config whose teacher.path is set (null otherwise).
std::unique_ptr<Objective> make_distill_objective(const Config& config, const JobConfig& job);
DistillConfig read_distill_config(const Config& config, const JobConfig& job);
nlohmann::json run_distill_job(const JobConfig& job, const DistillConfig& distill, const RunOptions& options = {});

}  // namespace shrink
