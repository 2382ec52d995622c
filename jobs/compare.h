// `shrink compare`: teacher against students, each a shrink checkpoint, a TorchScript file or an
// exported .shrink model (run on the runtime), every number measured in the same run.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "datasets/data.h"
#include "train/config.h"

namespace shrink {

struct CompareOptions {
  std::string teacher;
  std::vector<std::string> students;
  DataConfig data;          // the test split is used
  int64_t batch = 256;      // throughput batch
  int threads = 0;
  double bench_seconds = 1.0;
};

// Measures every model; returns what compare.json holds ("models": one record each, teacher first).
nlohmann::json compare_models(const CompareOptions& options);
std::string compare_table(const nlohmann::json& result);
// One self-contained HTML page: table, accuracy-vs-size and accuracy-vs-latency charts, per-class
// accuracy, confusion matrices and the training curves of the runs the models came from.
std::string compare_html(const nlohmann::json& result);
// Every key any job writes into a saved config (train, distill, prune, quantize), so a
// checkpoint's config can be read back whichever job made it.
void add_all_job_options(Keys& keys);
// The data config saved in the first shrink checkpoint among the models (empty source if none).
DataConfig data_config_of_models(const std::vector<std::string>& paths, const std::vector<std::string>& overrides);

}  // namespace shrink
