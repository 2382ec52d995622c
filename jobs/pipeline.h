// `shrink pipeline`: teacher training (or a given teacher), distillation, pruning, quantization,
// export and comparison in order, each stage in runs/NAME/STAGE/. A finished stage is skipped
// on a rerun unless forced; an interrupted one resumes from its checkpoint.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/config.h"

namespace shrink {

struct PipelineRun {
  std::string config;
  std::vector<std::string> force;      // stages to redo (and every stage after them)
  std::vector<std::string> overrides;  // --section.key=value of the pipeline's own keys
  bool quiet = false;
};

extern const std::vector<std::string> kPipelineStages;
void add_pipeline_options(Keys& keys);
// Returns compare.json of the final stage (or an empty object when compare is switched off).
nlohmann::json run_pipeline(const PipelineRun& run);

}  // namespace shrink
