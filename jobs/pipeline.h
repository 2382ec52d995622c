// `shrink pipeline`: teacher training (or a given teacher), distillation, pruning, quantization,
// export and comparison in order, each stage in runs/NAME/STAGE/. A finished stage is skipped
// on a rerun unless forced; an interrupted one resumes from its checkpoint. Each job stage runs
// a kind of the job table (jobs/jobs.h); what a stage hands the next (the teacher, its model)
// is set on the next stage's config as a typed value.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/config.h"

namespace shrink {

struct PipelineRun {
  std::string config;
  std::vector<std::string> force;  // stages to redo (and every stage after them)
  // The command line's keys: --section.key=value sets a key of the pipeline's own config
  // (--pipeline.data=D, --distill.config=F); --STAGE:section.key=value sets a key of one job
  // stage's config (--distill:optim.lr=0.1), over its config file and its `overrides` line.
  std::vector<std::string> overrides;
  bool quiet = false;
};

extern const std::vector<std::string> kPipelineStages;
void add_pipeline_options(Keys& keys);
// How the pipeline's command line sets keys, for its --help.
extern const char* const kPipelineKeysHelp;
// Returns compare.json of the final stage (or an empty object when compare is switched off).
nlohmann::json run_pipeline(const PipelineRun& run);

}  // namespace shrink
