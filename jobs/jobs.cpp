#include "jobs/jobs.h"

#include <fmt/format.h>

#include <filesystem>

#include "common/error.h"
#include "distill/distill.h"
#include "jobs/runtime_teacher.h"
#include "prune/prune.h"
#include "quantize/quantize.h"
#include "train/objective.h"
#include "train/trainer.h"

namespace shrink {
namespace {

// The runtime engines of teacher.engine, and .shrink files as teachers, for every job that distils (distill/teacher.h).
[[maybe_unused]] const bool runtime_teacher_registered = (register_teacher_engine(runtime_teacher), register_model_file_teacher(model_file_teacher), true);

JobResult result_of(const JobConfig& job, nlohmann::json summary) { return {job.out, RunDir::checkpoint_of(job.out), std::move(summary)}; }

void train_keys(Keys& k) { add_train_options(k); }
void prune_keys(Keys& k) { add_train_options(k), add_teacher_options(k), add_prune_options(k); }
void quantize_keys(Keys& k) { add_train_options(k), add_teacher_options(k), add_quantize_options(k); }

JobResult run_train(const Config& config, const RunOptions& options) {
  JobConfig job = read_job_config(config);
  return result_of(job, run_train_job(job, options));
}

JobResult run_distill(const Config& config, const RunOptions& options) {
  JobConfig job = read_job_config(config);
  return result_of(job, run_distill_job(job, read_distill_config(config, job), options));
}

JobResult run_prune(const Config& config, const RunOptions& options) {
  JobConfig job = read_job_config(config);
  PruneConfig prune = read_prune_config(config);
  auto teacher = make_distill_objective(config, job);  // fine-tune under a teacher when one is given
  return result_of(job, run_prune_job(job, prune, options, teacher.get()));
}

JobResult run_quantize(const Config& config, const RunOptions& options) {
  JobConfig job = read_job_config(config);
  QuantizeConfig quantize = read_quantize_config(config);
  auto teacher = make_distill_objective(config, job);
  return result_of(job, run_quantize_job(job, quantize, options, teacher.get()));
}

}  // namespace

const std::vector<JobKind>& job_kinds() {
  static const std::vector<JobKind> kinds = {
      {"train", "train a model", train_keys, run_train, ""},
      {"distill", "train the [student] under the [teacher]", add_distill_options, run_distill, ""},
      {"prune", "prune a checkpoint and fine-tune it", prune_keys, run_prune, "prune.checkpoint"},
      {"quantize", "int8: quantization-aware training (or quantize.mode = ptq: calibration only)", quantize_keys, run_quantize, "quantize.checkpoint"},
  };
  return kinds;
}

const JobKind& job_kind(const std::string& name) {
  std::string names;
  for (const JobKind& kind : job_kinds()) {
    if (kind.name == name) return kind;
    names += (names.empty() ? "" : ", ") + kind.name;
  }
  throw UserError(fmt::format("unknown job '{}' (jobs: {})", name, names));
}

void add_all_job_options(Keys& keys) {
  for (const JobKind& kind : job_kinds()) {
    Keys own;
    kind.add_options(own);
    keys.add_missing(own);
  }
}

}  // namespace shrink
