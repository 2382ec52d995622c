#include "jobs/pipeline.h"

#include <fmt/format.h>

#include <filesystem>
#include <iostream>
#include <sstream>

#include "jobs/compare.h"
#include "common/error.h"
#include "distill/distill.h"
#include "export/export.h"
#include "prune/prune.h"
#include "quantize/quantize.h"
#include "train/objective.h"
#include "train/run_log.h"

namespace shrink {
namespace fs = std::filesystem;

const std::vector<std::string> kPipelineStages = {"teacher", "distill", "prune", "quantize", "export", "compare"};

namespace {
const std::vector<std::string>& kStages = kPipelineStages;


std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, sep);) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

struct Stage {
  std::string name, config, dir;
  std::vector<std::string> overrides;
  bool done() const { return fs::exists(dir + (name == "compare" ? "/compare.json" : "/summary.json")); }
  bool has_checkpoint() const { return fs::exists(dir + "/checkpoints/last.pt") || fs::exists(dir + "/round-1/checkpoints/last.pt"); }
};

// Runs one training-type stage (teacher, distill, prune, quantize) through its job.
void run_job_stage(const Stage& s, bool quiet) {
  Keys keys;
  if (s.name == "distill") add_distill_options(keys);
  else add_train_options(keys);
  if (s.name == "prune") add_teacher_options(keys), add_prune_options(keys);
  if (s.name == "quantize") add_teacher_options(keys), add_quantize_options(keys);
  Config config = Config::load(keys, s.config, s.overrides);
  JobConfig job = read_job_config(config);
  RunOptions options;
  options.quiet = quiet;
  options.resume = s.has_checkpoint();  // interrupted: continue where it stopped
  options.overwrite = !options.resume;
  if (s.name == "teacher") {
    run_train_job(job, options);
  } else if (s.name == "distill") {
    run_distill_job(job, read_distill_config(config, job), options);
  } else if (s.name == "prune") {
    auto teacher = make_distill_objective(config, job);
    run_prune_job(job, read_prune_config(config), options, teacher.get());
  } else {
    auto teacher = make_distill_objective(config, job);
    run_quantize_job(job, read_quantize_config(config), options, teacher.get());
  }
}

}  // namespace

void add_pipeline_options(Keys& keys) {
  const Rule any = Rule::text(true);
  // clang-format off
  keys.add("pipeline.name", "default", Rule::text(false), "the pipeline's name: stages write to OUT/NAME/STAGE")
      .add("pipeline.out", "runs", Rule::text(false), "OUT")
      .add("pipeline.stages", "teacher,distill,prune,quantize,export,compare", Rule::text(false), "stages to run, in this order")
      .add("pipeline.data", "", any, "data.path for every stage (empty: each stage config's own)")
      .add("pipeline.teacher", "", any, "a given teacher checkpoint (the teacher stage is then skipped)")
      .add("pipeline.threads", int64_t(0), Rule::integer(0, 1024), "train.threads for every stage (0: the stage configs' own)");
  for (const std::string s : {"teacher", "distill", "prune", "quantize"})
    keys.add(s + ".config", "", any, "the stage's job config")
        .add(s + ".overrides", "", any, "--key=value overrides, separated by spaces");
  keys.add("export.storage", "auto", Rule::choice({"dense", "sparse", "auto"}), "how the exported model stores its weights")
      .add("compare.html", true, "write report.html");
  // clang-format on
}

nlohmann::json run_pipeline(const PipelineRun& run) {
  Keys keys("pipeline keys");
  add_pipeline_options(keys);
  Config c = Config::load(keys, run.config, run.overrides);
  const std::string name = c.get<std::string>("pipeline.name"), root = c.get<std::string>("pipeline.out") + "/" + name;
  std::vector<std::string> enabled = split(c.get<std::string>("pipeline.stages"), ',');
  for (const auto& s : enabled)
    if (std::find(kStages.begin(), kStages.end(), s) == kStages.end())
      c.fail("pipeline.stages", fmt::format("unknown stage '{}' (stages: teacher, distill, prune, quantize, export, compare)", s));
  std::string given_teacher = c.get<std::string>("pipeline.teacher");
  if (given_teacher.empty() && std::find(enabled.begin(), enabled.end(), "teacher") == enabled.end())
    c.fail("pipeline.teacher", "with the teacher stage switched off, give a teacher checkpoint");
  fs::create_directories(root);
  RunLog log(root, run.quiet);
  // --force X redoes X and everything after it (later stages were built on it).
  size_t first_forced = kStages.size();
  for (const auto& f : run.force) first_forced = std::min<size_t>(first_forced, std::find(kStages.begin(), kStages.end(), f) - kStages.begin());
  for (size_t k = first_forced; k < kStages.size(); ++k) fs::remove_all(root + "/" + kStages[k]);

  std::string teacher = given_teacher.empty() ? root + "/teacher/checkpoints/last.pt" : given_teacher, current = teacher;
  std::vector<std::string> students;
  nlohmann::json result = nlohmann::json::object();
  for (const auto& stage_name : kStages) {
    if (std::find(enabled.begin(), enabled.end(), stage_name) == enabled.end() || (stage_name == "teacher" && !given_teacher.empty())) continue;
    Stage s{stage_name, "", root + "/" + stage_name, {}};
    if (stage_name != "export" && stage_name != "compare") {
      s.config = c.get<std::string>(stage_name + ".config");
      if (s.config.empty()) c.fail(stage_name + ".config", "the stage is on but has no config");
      s.overrides = split(c.get<std::string>(stage_name + ".overrides"), ' ');
      s.overrides.push_back("--job.out=" + s.dir);
      if (!c.get<std::string>("pipeline.data").empty()) s.overrides.push_back("--data.path=" + c.get<std::string>("pipeline.data"));
      if (c.get<int64_t>("pipeline.threads") > 0) s.overrides.push_back(fmt::format("--train.threads={}", c.get<int64_t>("pipeline.threads")));
      if (stage_name != "teacher") s.overrides.push_back("--teacher.path=" + teacher);
      if (stage_name == "prune") s.overrides.push_back("--prune.checkpoint=" + current);
      if (stage_name == "quantize") s.overrides.push_back("--quantize.checkpoint=" + current);
    }
    if (s.done()) {
      log.line(fmt::format("stage {}: finished before, skipped (--force {} redoes it)", stage_name, stage_name));
    } else {
      log.line(fmt::format("stage {}: {} in {}", stage_name, s.has_checkpoint() ? "resuming" : "running", s.dir));
      if (stage_name == "export") {
        ExportOptions o;
        o.storage = c.get<std::string>("export.storage");
        fs::create_directories(s.dir);
        auto info = export_model(current, s.dir + "/student.shrink", o);
        write_json_atomic(s.dir + "/summary.json", info);
      } else if (stage_name == "compare") {
        CompareOptions o;
        o.teacher = teacher;
        o.students = students;
        std::vector<std::string> overrides;
        if (!c.get<std::string>("pipeline.data").empty()) overrides.push_back("--data.path=" + c.get<std::string>("pipeline.data"));
        o.data = data_config_of_models({teacher}, overrides);
        o.threads = static_cast<int>(c.get<int64_t>("pipeline.threads"));
        fs::create_directories(s.dir);
        auto r = compare_models(o);
        if (c.get<bool>("compare.html")) write_file_atomic(s.dir + "/report.html", compare_html(r));
        write_json_atomic(s.dir + "/compare.json", r);
      } else {
        run_job_stage(s, run.quiet);
      }
    }
    if (stage_name == "teacher") teacher = current = s.dir + "/checkpoints/last.pt";
    else if (stage_name == "export") students.push_back(s.dir + "/student.shrink");
    else if (stage_name != "compare") {
      current = s.dir + "/checkpoints/last.pt";
      if (stage_name == "distill") students.push_back(current);
    }
    if (stage_name == "compare") result = nlohmann::json::parse(read_text_file(s.dir + "/compare.json"));
  }
  if (!result.empty()) {
    log.line(compare_table(result));
    const auto& models = result["models"];
    double teacher_weights = 4.0 * models[0]["params"].get<double>();
    const auto& last = models.back();
    log.line(fmt::format("final student {}: {:.2f}% (teacher {:.2f}%), {:.1f} KB, {:.0f}x smaller than the teacher's fp32 weights "
                         "(a lower bound of its TorchScript file); report: {}",
                         last["path"].get<std::string>(), 100 * last["test_accuracy"].get<double>(), 100 * models[0]["test_accuracy"].get<double>(),
                         last["file_bytes"].get<double>() / 1024, teacher_weights / last["file_bytes"].get<double>(), root + "/compare/report.html"));
  }
  return result;
}

}  // namespace shrink
