// Helpers shared by the pipeline tests (test_pipeline.cpp) and the kill harness (test_faults.cpp):
// a tiny deterministic pipeline and what must not change between its runs.
#pragma once
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "tests/helpers.h"

namespace shrink::test {

inline const char* kPipelineData = "[data]\nsource = synthetic\nsynthetic_train = 1200\nsynthetic_test = 300\nshape = 1,16,16\nshift = 1\n";

// Stage configs and a pipeline config for a tiny, deterministic (one thread) pipeline; returns
// the pipeline config's path. `overrides`: a stage's `overrides` line (e.g. prune ->
// "--prune.schedule=iterative --prune.rounds=2"); `pipeline_keys`: more lines of [pipeline];
// `data`: every stage's [data] section.
inline std::string write_pipeline(const TempDir& dir, const std::string& name, const std::map<std::string, std::string>& overrides = {},
                                  const std::string& pipeline_keys = "", const std::string& data = kPipelineData) {
  write_text(dir / "teacher.ini", data + "[model]\nspec = conv(16) bn relu maxpool(2) conv(32) bn relu gap linear(classes)\n[train]\nepochs = 2\n");
  write_text(dir / "distill.ini", data + "[student]\nspec = conv(8) bn relu maxpool(2) conv(8) bn relu gap linear(classes)\n[train]\nepochs = 6\n");
  write_text(dir / "prune.ini", data + "[prune]\nschedule = oneshot\nsparsity = 0.5\n[train]\nepochs = 1\n[optim]\nlr = 0.01\n");
  write_text(dir / "qat.ini", data + "[quantize]\nobserver = ema\n[train]\nepochs = 1\n[optim]\nlr = 0.002\n");
  std::string p = "[pipeline]\nname = " + name + "\nout = " + dir.path.string() + "\nthreads = 1\n" + pipeline_keys;
  for (const char* s : {"teacher", "distill", "prune", "quantize"}) {
    p += fmt::format("[{}]\nconfig = {}\n", s, dir / (std::string(s) == "quantize" ? "qat.ini" : std::string(s) + ".ini"));
    if (overrides.count(s)) p += "overrides = " + overrides.at(s) + "\n";
  }
  p += "[compare]\nhtml = true\n";
  write_text(dir / (name + ".ini"), p);
  return dir / (name + ".ini");
}

// What must not change between runs: not timings, nor checkpoint file sizes (their metadata
// holds the run's seconds and paths, so their length varies); the exported model's size must not.
inline std::vector<double> measured(const nlohmann::json& r) {
  std::vector<double> v;
  for (const auto& m : r["models"]) {
    for (const char* k : {"test_accuracy", "agreement_with_teacher", "kl_teacher_student", "params", "nonzero_params"}) v.push_back(m[k].get<double>());
    if (m["kind"] == "shrink-model") v.push_back(m["file_bytes"].get<double>());
  }
  return v;
}

inline int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace shrink::test
