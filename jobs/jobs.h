// The job table: each kind of job with its name, its config keys (each with the Rule its values
// must pass, so a bad value is refused before any work starts) and its run function. The CLI
// builds its job commands and their --help from it, the pipeline runs its stages through it,
// and a checkpoint's saved config is read back with the union of its keys. No torch.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/config.h"
#include "train/run_dir.h"

namespace shrink {

// What a finished job hands on: where it ran, the model it ends with (the next stage starts
// from it) and what it wrote to summary.json.
struct JobResult {
  std::string dir;
  std::string model;
  nlohmann::json summary;
};

struct JobKind {
  std::string name;     // shrink NAME --config FILE
  std::string summary;  // its line in --help
  void (*add_options)(Keys& keys);
  JobResult (*run)(const Config& config, const RunOptions& options);
  // The key naming the checkpoint the job starts from (empty: none). The pipeline sets it to the
  // model of the stage before.
  std::string start_key;
};

const std::vector<JobKind>& job_kinds();
// The kind called `name`; a UserError listing the kinds when there is none.
const JobKind& job_kind(const std::string& name);
// Every key any job writes into its saved config (the union of the kinds' keys), so a
// checkpoint's config can be read back whichever job made it.
void add_all_job_options(Keys& keys);

}  // namespace shrink
