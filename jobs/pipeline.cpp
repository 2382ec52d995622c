#include "jobs/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>

#include "common/error.h"
#include "distill/teacher.h"
#include "export/export.h"
#include "jobs/budget.h"
#include "jobs/compare.h"
#include "jobs/import.h"
#include "jobs/jobs.h"
#include "parallel/world.h"
#include "train/data_parallel.h"
#include "train/run_dir.h"

namespace shrink {
namespace fs = std::filesystem;

namespace {

// The stages in order. A job stage runs a kind of the job table with its own config; export and
// compare are the pipeline's own steps.
struct StageKind {
  const char* name;
  const char* job;        // the job kind it runs (nullptr: export, compare)
  const char* done_file;  // written last: the stage finished
  bool teaches;           // its model is the teacher of the later stages
  bool is_student;        // compare measures its model against the teacher
};

const StageKind kStageKinds[] = {
    {"teacher", "train", "summary.json", true, false},  {"distill", "distill", "summary.json", false, true},
    {"prune", "prune", "summary.json", false, false},   {"quantize", "quantize", "summary.json", false, false},
    {"export", nullptr, "summary.json", false, true},   {"compare", nullptr, "compare.json", false, false},
};

std::vector<std::string> stage_names(bool jobs_only) {
  std::vector<std::string> names;
  for (const StageKind& k : kStageKinds)
    if (k.job || !jobs_only) names.push_back(k.name);
  return names;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

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

// What the stages hand on, as typed values: set on the next stage's config, never as words.
struct Handoff {
  std::string teacher;                // the teacher checkpoint (given, or the teacher stage's)
  std::string model;                  // the model of the latest stage: prune, quantize and export start from it
  std::vector<std::string> students;  // what compare puts against the teacher
};

// A --STAGE:section.key=value word of the command line.
struct StageKey {
  std::string stage, key, value, word;
};

// The command line's keys: the pipeline's own (--section.key=value) and the stages' (--STAGE:...).
struct CommandLineKeys {
  std::vector<std::string> pipeline;
  std::vector<StageKey> stages;
};

CommandLineKeys split_command_line_keys(const std::vector<std::string>& words) {
  CommandLineKeys out;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& word = words[i];
    // The pipeline's own key (or the value word after one), as Config reads it.
    if (word.rfind("--", 0) != 0 || word.find(':') == std::string::npos || word.find(':') > word.find('.')) {
      out.pipeline.push_back(word);
      continue;
    }
    std::string name = word.substr(2), value;
    size_t colon = name.find(':');
    size_t eq = name.find('=');
    if (eq != std::string::npos) value = name.substr(eq + 1), name = name.substr(0, eq);
    else if (i + 1 < words.size() && words[i + 1].rfind("--", 0) != 0) value = words[++i];  // --STAGE:key VALUE
    else throw UserError(fmt::format("command line: --{} needs a value (--STAGE:section.key=value)", name));
    for (const StageKey& earlier : out.stages)
      if (earlier.word == "--" + name) throw UserError(fmt::format("command line: --{} is given twice", name));
    out.stages.push_back({name.substr(0, colon), name.substr(colon + 1), value, "--" + name});
  }
  return out;
}

// One stage of this run.
struct Stage {
  const StageKind* kind;
  std::string dir;
  std::optional<Config> config;  // a job stage's: its file, its `overrides` line, then the command line's
  bool done() const { return fs::exists(dir + "/" + kind->done_file); }
  bool has_checkpoint() const { return RunDir::holds_checkpoint(dir) || RunDir::holds_checkpoint(dir + "/round-1"); }
};

// Sets a key the pipeline wires itself; the stage's overrides may not set it too.
void wire(Config& c, const std::string& key, const std::string& value, const std::string& what) {
  if (c.where(key).rfind("command line", 0) == 0) c.fail(key, fmt::format("the pipeline sets it ({}): leave it out of the stage's overrides", what));
  c.set(key, value, "pipeline: " + what);
}

// A job stage's config: its file with its `overrides` line, the command line's --STAGE:key=value
// words, and the keys the pipeline sets for every stage. Loaded before any stage runs, so that a
// bad key stops the pipeline before it starts.
Config stage_config(const Config& c, const Stage& s, const std::vector<StageKey>& command_line) {
  const std::string name = s.kind->name;
  std::string file = c.get<std::string>(name + ".config");
  if (file.empty()) c.fail(name + ".config", "the stage is on but has no config");
  const JobKind& job = job_kind(s.kind->job);
  Keys keys;
  job.add_options(keys);
  Config config = Config::load(keys, file, split(c.get<std::string>(name + ".overrides"), ' '));
  for (const StageKey& k : command_line)
    if (k.stage == name) config.set(k.key, k.value, "command line (" + k.word + ")");
  wire(config, "job.out", s.dir, "the stage's folder");
  if (!c.get<std::string>("pipeline.data").empty()) wire(config, "data.path", c.get<std::string>("pipeline.data"), "pipeline.data");
  if (c.get<int64_t>("pipeline.threads") > 0) wire(config, "train.threads", std::to_string(c.get<int64_t>("pipeline.threads")), "pipeline.threads");
  // An accuracy budget is measured on examples no stage trains on: every stage holds out the same ones.
  if (c.get<double>("pipeline.budget") >= 0) wire(config, "data.val_split", fmt::format("{:.17g}", c.get<double>("pipeline.val_split")), "pipeline.val_split");
  for (const std::string& handed : {std::string("teacher.path"), job.start_key})
    if (!handed.empty() && config.has(handed) && config.where(handed).rfind("command line", 0) == 0)
      config.fail(handed, "the pipeline sets it (from the stage before): leave it out of the stage's overrides");
  return config;
}

// The stages an accuracy budget searches instead of running their configs' targets, and the jobs
// made of stages (rounds, calibration and QAT; train/data_parallel.h: as_stage_worker).
bool prunes_or_quantizes(const Stage& s) { return std::string(s.kind->name) == "prune" || std::string(s.kind->name) == "quantize"; }

// With a budget the stages must hold out the same validation examples (one data.seed), and the
// search needs a stage to search.
void check_budget_stages(const Config& c, const std::vector<Stage>& stages) {
  const Stage* first = nullptr;
  bool searches = false;
  for (const Stage& s : stages) {
    if (!s.config) continue;
    searches |= prunes_or_quantizes(s);
    if (!first) first = &s;
    else if (s.config->get<int64_t>("data.seed") != first->config->get<int64_t>("data.seed"))
      c.fail("pipeline.budget", fmt::format("the {} and {} stages split the validation examples differently (data.seed {} and {}): give them one data.seed",
                                            first->kind->name, s.kind->name, first->config->get<int64_t>("data.seed"), s.config->get<int64_t>("data.seed")));
  }
  if (!searches) c.fail("pipeline.budget", "the budget chooses how far to prune and what to quantize: switch on the prune or quantize stage");
}

// The stages that run, in order, with their configs; every check that needs no work comes here.
std::vector<Stage> plan_stages(const Config& c, const std::string& root, const std::vector<StageKey>& command_line) {
  std::vector<std::string> enabled = split(c.get<std::string>("pipeline.stages"), ',');
  size_t previous = 0;
  for (const auto& s : enabled) {
    const size_t at = std::find(kPipelineStages.begin(), kPipelineStages.end(), s) - kPipelineStages.begin();
    if (at == kPipelineStages.size()) c.fail("pipeline.stages", fmt::format("unknown stage '{}' (stages: {})", s, joined(kPipelineStages)));
    if (at < previous) c.fail("pipeline.stages", fmt::format("'{}' after a later stage: the stages run in the order {}", s, joined(kPipelineStages)));
    previous = at;
  }
  const bool given_teacher = !c.get<std::string>("pipeline.teacher").empty();
  if (!given_teacher && std::find(enabled.begin(), enabled.end(), "teacher") == enabled.end())
    c.fail("pipeline.teacher", "with the teacher stage switched off, give a teacher (a checkpoint, or an ONNX or .shrink file)");
  std::vector<Stage> stages;
  for (const StageKind& kind : kStageKinds) {
    if (std::find(enabled.begin(), enabled.end(), kind.name) == enabled.end() || (kind.teaches && given_teacher)) continue;
    stages.push_back({&kind, root + "/" + kind.name, std::nullopt});
    if (kind.job) stages.back().config = stage_config(c, stages.back(), command_line);
  }
  for (const StageKey& k : command_line) {
    auto runs = std::find_if(stages.begin(), stages.end(), [&](const Stage& s) { return s.kind->job && k.stage == s.kind->name; });
    if (runs != stages.end()) continue;
    const auto jobs = stage_names(true);
    if (std::find(jobs.begin(), jobs.end(), k.stage) == jobs.end())
      throw UserError(fmt::format("command line: {}: unknown stage '{}' (stages with a job config: {})", k.word, k.stage, joined(jobs)));
    throw UserError(fmt::format("command line: {}: the {} stage does not run (pipeline.stages, pipeline.teacher)", k.word, k.stage));
  }
  if (c.get<double>("pipeline.budget") >= 0) check_budget_stages(c, stages);
  return stages;
}

JobResult run_job_stage(Stage& s, const Handoff& handed, bool resume, bool quiet, bool worker_folder) {
  Config& config = *s.config;
  const JobKind& job = job_kind(s.kind->job);
  if (config.has("teacher.path")) config.set("teacher.path", handed.teacher, "pipeline: the teacher");
  if (!job.start_key.empty()) config.set(job.start_key, handed.model, "pipeline: the model of the stage before");
  RunOptions options;
  options.quiet = quiet;
  options.resume = resume;  // interrupted: continue where it stopped
  options.overwrite = !options.resume;
  options.worker_folder = worker_folder;
  return job.run(config, options);
}

// What export or compare was made from: the models the stages before handed it, by content. A
// rerun whose stages hand it others (a budget search choosing another model) redoes it.
std::string made_from(const Handoff& handed) {
  std::string out = hash_file(handed.teacher) + "," + hash_file(handed.model);
  for (const auto& m : handed.students) out += "," + hash_file(m);
  return out;
}

// What a finished export or compare recorded it was made from ("" for a job stage, whose start
// is its config's and checked by the job).
std::string recorded_made_from(const Stage& s) {
  if (s.kind->job) return "";
  const auto done = nlohmann::json::parse(read_text_file(s.dir + "/" + s.kind->done_file), nullptr, false);
  return done.is_object() ? done.value("made_from", std::string()) : std::string();
}

JobResult run_export_stage(const Stage& s, const Config& c, const Handoff& handed, const std::string& from) {
  ExportOptions o;
  o.storage = c.get<std::string>("export.storage");
  fs::create_directories(s.dir);
  JobResult r{s.dir, s.dir + "/student.shrink", export_model(handed.model, s.dir + "/student.shrink", o)};
  r.summary["made_from"] = from;
  write_json_atomic(s.dir + "/summary.json", r.summary);
  return r;
}

JobResult run_compare_stage(const Stage& s, const Config& c, const Handoff& handed, const std::string& from) {
  CompareOptions o;
  o.teacher = handed.teacher;
  o.students = handed.students;
  std::vector<std::string> overrides;
  if (!c.get<std::string>("pipeline.data").empty()) overrides.push_back("--data.path=" + c.get<std::string>("pipeline.data"));
  o.data = data_config_of_models({handed.teacher}, overrides);
  o.threads = static_cast<int>(c.get<int64_t>("pipeline.threads"));
  fs::create_directories(s.dir);
  JobResult r{s.dir, "", compare_models(o)};
  const std::string budget = fs::path(s.dir).parent_path() / "pipeline.json";
  if (BudgetSettings::read(c).on() && fs::exists(budget)) r.summary["budget_search"] = nlohmann::json::parse(read_text_file(budget));  // the report draws its frontier
  if (c.get<bool>("compare.html")) write_file_atomic(s.dir + "/report.html", compare_html(r.summary));
  r.summary["made_from"] = from;
  write_json_atomic(s.dir + "/compare.json", r.summary);
  return r;
}

// The result of a stage finished by an earlier run.
JobResult finished_stage(const Stage& s) {
  if (s.kind->job) return {s.dir, RunDir::checkpoint_of(s.dir), nlohmann::json::object()};
  if (std::string(s.kind->name) == "export") return {s.dir, s.dir + "/student.shrink", nlohmann::json::object()};
  return {s.dir, "", nlohmann::json::object()};  // compare: its compare.json
}

// What a stage does in this run. Under `shrink launch` rank 0 decides from its folders and every
// worker follows: the others run in folders of their own (NAME.rank-K) and need not see rank 0's.
enum class Action : int64_t { skip, resume, run };
Action action_of(const Stage& s) {
  const Action mine = s.done() ? Action::skip : s.has_checkpoint() ? Action::resume : Action::run;
  World& world = World::get();
  if (!world.distributed() || !s.kind->job) return mine;  // export and compare run on rank 0 alone
  auto action = torch::tensor({static_cast<int64_t>(mine)}, torch::kInt64);
  world.broadcast({action});
  return static_cast<Action>(action.item<int64_t>());
}

void hand_on(const Stage& s, const JobResult& r, Handoff& handed) {
  if (r.model.empty()) return;
  handed.model = r.model;
  if (s.kind->teaches) handed.teacher = r.model;
  if (s.kind->is_student) handed.students.push_back(r.model);
}

void log_final_student(RunLog& log, const nlohmann::json& result, const std::string& root) {
  log.line(compare_table(result));
  const auto& models = result["models"];
  double teacher_weights = 4.0 * models[0]["params"].get<double>();
  const auto& last = models.back();
  log.line(fmt::format("final student {}: {:.2f}% (teacher {:.2f}%), {:.1f} KB, {:.0f}x smaller than the teacher's fp32 weights "
                       "(a lower bound of its TorchScript file); report: {}",
                       last["path"].get<std::string>(), 100 * last["test_accuracy"].get<double>(), 100 * models[0]["test_accuracy"].get<double>(),
                       last["file_bytes"].get<double>() / 1024, teacher_weights / last["file_bytes"].get<double>(), root + "/compare/report.html"));
}

// pipeline.teacher: a checkpoint, or a model file (ONNX, or an fp32 .shrink file) imported once
// into the pipeline's folder as `shrink import` would, so every stage gets a checkpoint. The
// import is named by the file's hash: another file is imported anew.
std::string teacher_checkpoint(const std::string& given, const std::string& root, RunLog& log) {
  const std::string ext = fs::path(given).extension().string();
  if (ext != ".onnx" && ext != ".shrink") return given;
  if (!fs::is_regular_file(given)) throw UserError(fmt::format("pipeline.teacher {}: no such file", given));
  const std::string checkpoint = fmt::format("{}/teacher-imported-{}.pt", root, hash_file(given));
  if (import_once(given, checkpoint, "pipeline.teacher")) log.line(fmt::format("pipeline.teacher: {} imported into {}", given, checkpoint));
  return checkpoint;
}

}  // namespace

const std::vector<std::string> kPipelineStages = stage_names(false);

const char* const kPipelineKeysHelp =
    "keys on the command line:\n"
    "  --section.key=value           a key of the pipeline's config (below), e.g. --pipeline.data=D, --distill.config=F\n"
    "  --STAGE:section.key=value     a key of one stage's job config, e.g. --distill:optim.lr=0.1, --prune:prune.sparsity=0.9;\n"
    "                                STAGE is teacher, distill, prune or quantize; it wins over the stage's config file and its\n"
    "                                `overrides` line. The pipeline itself sets job.out, teacher.path, prune.checkpoint and\n"
    "                                quantize.checkpoint (and data.path, train.threads from pipeline.data, pipeline.threads).\n";

void add_pipeline_options(Keys& keys) {
  const Rule any = Rule::text(true);
  // clang-format off
  keys.add("pipeline.name", "default", Rule::text(false), "the pipeline's name: stages write to OUT/NAME/STAGE")
      .add("pipeline.out", "runs", Rule::text(false), "OUT")
      .add("pipeline.stages", "teacher,distill,prune,quantize,export,compare", Rule::text(false), "the stages to run (in this order)")
      .add("pipeline.data", "", any, "data.path for every stage (empty: each stage config's own)")
      .add("pipeline.teacher", "", any, "a given teacher: a checkpoint, or an ONNX or fp32 .shrink file imported into OUT/NAME (the teacher stage is then skipped)")
      .add("pipeline.threads", int64_t(0), Rule::integer(0, 1024), "train.threads for every stage (0: the stage configs' own)");
  for (const std::string& s : stage_names(true))
    keys.add(s + ".config", "", any, "the stage's job config")
        .add(s + ".overrides", "", any, "--key=value overrides, separated by spaces");
  keys.add("export.storage", "auto", Rule::choice({"dense", "sparse", "auto"}), "how the exported model stores its weights")
      .add("compare.html", true, "write report.html");
  // clang-format on
  add_budget_options(keys);
}

nlohmann::json run_pipeline(const PipelineRun& run) {
  Keys keys("pipeline keys");
  add_pipeline_options(keys);
  CommandLineKeys command_line = split_command_line_keys(run.overrides);
  Config c = Config::load(keys, run.config, command_line.pipeline);
  World& world = World::get();
  join_workers();
  // A worker other than rank 0 keeps its stages' folders beside rank 0's (and rank 0's models,
  // copied to it, so nothing depends on a shared filesystem); export and compare are rank 0's.
  const bool worker = !world.leader();
  std::string root = c.get<std::string>("pipeline.out") + "/" + c.get<std::string>("pipeline.name");
  if (worker) root += fmt::format(".rank-{}", world.rank());
  std::vector<Stage> stages = plan_stages(c, root, command_line.stages);
  const BudgetSettings budget = BudgetSettings::read(c);
  if (budget.on() && world.distributed())
    c.fail("pipeline.budget", "the budget's search runs as one process: run this pipeline without shrink launch, or without a budget");
  fs::create_directories(root);
  RunLog log(root, run.quiet || worker);
  // A teacher given as a model file is imported before anything is removed (it may be refused).
  const std::string teacher = c.get<std::string>("pipeline.teacher").empty() ? RunDir::checkpoint_of(root + "/teacher")
                                                                            : teacher_checkpoint(c.get<std::string>("pipeline.teacher"), root, log);
  // --force X redoes X and everything after it (later stages were built on it): a stage that runs,
  // and the results of later ones that do not are removed too, with a line saying so.
  size_t first_forced = kPipelineStages.size();
  for (const auto& f : run.force) {
    if (std::none_of(stages.begin(), stages.end(), [&](const Stage& s) { return s.kind->name == f; }))
      throw UserError(fmt::format("--force {}: the {} stage does not run (pipeline.stages, pipeline.teacher)", f, f));
    first_forced = std::min<size_t>(first_forced, std::find(kPipelineStages.begin(), kPipelineStages.end(), f) - kPipelineStages.begin());
  }
  std::vector<std::string> removed;
  for (size_t k = first_forced; k < kPipelineStages.size(); ++k) {
    const std::string& name = kPipelineStages[k];
    const bool runs = std::any_of(stages.begin(), stages.end(), [&](const Stage& s) { return s.kind->name == name; });
    if (!runs && fs::exists(root + "/" + name)) removed.push_back(name);
    fs::remove_all(root + "/" + name);
  }
  if (!removed.empty())
    log.line(fmt::format("--force {}: the results of {} are removed too (they were made from what is redone)", kPipelineStages[first_forced], joined(removed)));

  Handoff handed;
  handed.teacher = handed.model = teacher;
  nlohmann::json result = nlohmann::json::object();
  std::optional<BudgetSearch> search;
  const Stage* last_searched = nullptr;
  for (const Stage& s : stages)
    if (budget.on() && prunes_or_quantizes(s)) last_searched = &s;
  for (Stage& s : stages) {
    const std::string name = s.kind->name;
    JobResult r;
    if (budget.on() && prunes_or_quantizes(s)) {
      // The search replays the rounds an earlier run finished and goes on; it is never skipped whole.
      if (!search) {
        search.emplace(budget, root, log, run.quiet);
        search->start(read_job_config(*s.config), handed.teacher, handed.model, handed.model == handed.teacher ? "start" : "distilled");
      }
      log.line(fmt::format("stage {}: searching within the budget in {}", name, s.dir));
      if (s.config->has("teacher.path")) s.config->set("teacher.path", handed.teacher, "pipeline: the teacher");
      auto quantize = std::find_if(stages.begin(), stages.end(), [](const Stage& t) { return std::string(t.kind->name) == "quantize"; });
      r = name == "prune" ? search->prune(*s.config, s.dir, quantize == stages.end() ? nullptr : &*quantize->config)
                          : search->quantize(*s.config, s.dir, handed.model);
      if (&s == last_searched) r.model = search->finish();
    } else if (worker && !s.kind->job) {
      continue;  // export, compare: rank 0's
    } else {
      const std::string from = s.kind->job ? "" : made_from(handed);  // hashed once: checked, then recorded
      const Action action = action_of(s);
      if (action == Action::skip && recorded_made_from(s) == from) {
        log.line(fmt::format("stage {}: finished before, skipped (--force {} redoes it)", name, name));
        r = finished_stage(s);
      } else {
        if (action == Action::skip) log.line(fmt::format("stage {}: finished before from other models than the stages before give it now: redone", name));
        log.line(fmt::format("stage {}: {} in {}", name, action == Action::resume ? "resuming" : "running", s.dir));
        // A worker runs prune's and quantization's stages in its stage folder (resuming from a copy
        // of rank 0's); its training runs write only rank-K.log there (and rank 0's model, below).
        r = s.kind->job ? run_job_stage(s, handed, action == Action::resume, run.quiet || worker, worker && prunes_or_quantizes(s))
                        : name == "export" ? run_export_stage(s, c, handed, from) : run_compare_stage(s, c, handed, from);
      }
    }
    if (s.kind->job && world.distributed()) r.model = file_from_leader(r.model, RunDir::checkpoint_of(s.dir));  // rank 0's model goes on
    hand_on(s, r, handed);
    if (name == "compare") result = nlohmann::json::parse(read_text_file(s.dir + "/compare.json"));
  }
  if (!result.empty()) log_final_student(log, result, root);
  return result;
}

}  // namespace shrink
