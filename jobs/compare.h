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
// The data config saved in the first shrink checkpoint among the models (defaults if none),
// with `overrides` (--data.key=value) over it.
DataConfig data_config_of_models(const std::vector<std::string>& paths, const std::vector<std::string>& overrides);
// `shrink compare`: measures the models, writes compare.json to `json_out` (and the HTML report to
// `html_out` unless empty); returns the table and what it wrote, for the command to print.
std::string compare_and_write(const CompareOptions& options, const std::string& json_out, const std::string& html_out);

}  // namespace shrink
