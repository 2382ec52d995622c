#include "apps/commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "common/error.h"
#include "common/shape.h"
#include "jobs/compare.h"
#include "jobs/import.h"
#include "jobs/jobs.h"
#include "jobs/pipeline.h"
#include "jobs/tools.h"
#include "parallel/launch.h"

namespace shrink {
namespace {

const Rule kPath = Rule::text(false), kThreads = Rule::integer(0, 1024);

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

// The command line's config keys, with --data PATH as --data.path=PATH.
std::vector<std::string> keys_with_data(const Args& a) {
  std::vector<std::string> keys = a.keys;
  if (auto data = a.get("data")) keys.push_back("--data.path=" + *data);
  return keys;
}

// `shrink train|distill|prune|quantize --config FILE [--key=value ...]`: a job of the job table.
std::string run_job(const JobKind& kind, const Args& a) {
  std::vector<std::string> keys = a.keys;
  if (auto out = a.get("out")) keys.push_back("--job.out=" + *out);
  std::string file = a.get("config").value_or("");
  // `--resume --out DIR` alone continues the run with the config it saved.
  if (file.empty() && a.has("resume") && a.has("out")) file = *a.get("out") + "/config.ini";
  if (file.empty()) throw UserError(fmt::format("{}: --config FILE is required (see shrink {} --help)", kind.name, kind.name));
  Keys declared;
  kind.add_options(declared);
  Config config = Config::load(declared, file, keys);
  RunOptions options;
  options.resume = a.has("resume");
  options.overwrite = a.has("overwrite");
  if (options.resume && options.overwrite) throw UserError(fmt::format("{}: --resume continues the run and --overwrite deletes it: give one", kind.name));
  options.overwrite_by_user = options.overwrite;
  kind.run(config, options);
  return "";  // the job printed its progress and result as it ran (and kept them in log.txt)
}

// `shrink launch [flags] -- JOB...`: run_shrink puts the words after -- in "job". Returns the exit
// code: a worker's user error or Ctrl-C is a UserError (2); a worker killed by a signal, 1.
int run_launch(const Args& a) {
  const std::vector<std::string> job = a.all("job");
  if (job.empty()) throw UserError("launch: give the job after --, e.g. shrink launch --nproc_per_node 2 -- train --config FILE");
  std::vector<std::string> parallel = {"pipeline"};  // and every job of the job table
  for (const JobKind& kind : job_kinds()) parallel.push_back(kind.name);
  const bool subcommand = job.size() > 1 && job[1].rfind("--", 0) != 0;  // prune report, prune sensitivity
  if (std::find(parallel.begin(), parallel.end(), job[0]) == parallel.end() || subcommand)
    throw UserError(fmt::format("launch: '{}' does not run data parallel; the job after -- is one of {}", fmt::join(job.begin(), job.begin() + (subcommand ? 2 : 1), " "),
                                fmt::join(parallel, ", ")));
  LaunchOptions o;
  o.nproc_per_node = static_cast<int>(a.integer("nproc_per_node", o.nproc_per_node));
  o.nnodes = static_cast<int>(a.integer("nnodes", o.nnodes));
  o.node_rank = static_cast<int>(a.integer("node_rank", o.node_rank));
  o.master_addr = a.get("master_addr").value_or(o.master_addr);
  o.master_port = static_cast<int>(a.integer("master_port", o.master_port));
  o.local_addr = a.get("local_addr").value_or("");
  o.timeout_s = static_cast<int>(a.integer("timeout", o.timeout_s));
  const LaunchResult r = launch_workers(o, std::filesystem::read_symlink("/proc/self/exe").string(), job);
  if (r.code == 0) return 0;
  if (r.code == 2 || r.code == 130) throw UserError(r.message);
  std::cerr << "error: " << r.message << std::endl;
  return 1;
}

CheckpointRun checkpoint_run(const Args& a) {
  CheckpointRun run;
  run.checkpoint = *a.get("checkpoint");
  run.overrides = keys_with_data(a);
  run.threads = a.integer("threads", 0);
  return run;
}

std::string run_sensitivity(const Args& a) {
  std::vector<double> sparsities;
  for (const auto& s : split_list(a.get("sparsities").value_or("0.25,0.5,0.75,0.9"))) sparsities.push_back(std::stod(s));
  return sensitivity_report(checkpoint_run(a), sparsities);
}

std::string run_export(const Args& a) {
  ExportOptions o;
  o.precision = a.get("precision").value_or("auto");
  o.storage = a.get("storage").value_or("auto");
  o.class_names = split_list(a.get("class-names").value_or(""));
  o.format = a.get("format").value_or("auto");
  o.opset = a.integer("opset", 0);
  o.normalization = !a.has("no-normalization");
  o.expose_layers = a.has("expose-layers");
  return export_report(*a.get("checkpoint"), *a.get("out"), o);
}

std::string run_compare(const Args& a) {
  CompareOptions o;
  o.teacher = *a.get("teacher");
  o.students = a.all("student");
  o.batch = a.integer("batch", o.batch);
  o.threads = static_cast<int>(a.integer("threads", o.threads));
  o.bench_seconds = a.real("bench-seconds", o.bench_seconds);
  std::vector<std::string> models{o.teacher};
  models.insert(models.end(), o.students.begin(), o.students.end());
  o.data = data_config_of_models(models, keys_with_data(a));
  return compare_and_write(o, a.get("out").value_or("compare.json"), a.get("html").value_or(""));
}

std::string run_pipeline_command(const Args& a) {
  PipelineRun run;
  run.config = *a.get("config");
  run.force = a.all("force");
  run.overrides = a.keys;
  run_pipeline(run);
  return "";  // the pipeline printed each stage and the final table as it ran (and kept them in log.txt)
}

std::string run_model_info(const Args& a) {
  auto input = a.get("input");
  return model_info(a.positional[0], input ? parse_shape(*input) : std::vector<int64_t>{}, a.integer("classes", 10));
}

std::vector<double> numbers_of(const Args& a, const std::string& flag) {
  std::vector<double> out;
  for (const auto& s : split_list(a.get(flag).value_or(""))) out.push_back(std::stod(s));
  return out;
}

std::string run_import(const Args& a) {
  ImportRequest r;
  r.file = a.positional[0];
  r.out = *a.get("out");
  if (auto input = a.get("input")) r.input = parse_shape(*input);
  r.classes = a.integer("classes", 0);
  r.mean = numbers_of(a, "mean");
  r.std = numbers_of(a, "std");
  r.class_names = a.get("class-names").value_or("");
  r.seed = a.integer("seed", 0);
  r.image_input = a.has("image-input");
  r.input_scale = a.real("input-scale", 1.0);
  return import_model(r);
}

std::vector<Command> make_commands() {
  const std::vector<Flag> job_flags = {
      {"config", "FILE", kPath, "the job's INI file"},
      {"out", "DIR", kPath, "run directory (job.out)"},
      {"resume", "", Rule::flag(), "continue a stopped run from its last checkpoint"},
      {"overwrite", "", Rule::flag(), "start over in a run directory that holds a run (deletes it first)"},
  };
  std::vector<Command> c;
  for (const JobKind& kind : job_kinds())
    c.push_back({{"shrink", kind.name, "", kind.summary, job_flags, true}, kind.add_options, [&kind](const Args& a) { return run_job(kind, a); }});
  const Flag checkpoint{"checkpoint", "C", kPath, "a shrink checkpoint", false, true}, data{"data", "PATH", kPath, "data.path of the test data"},
      threads{"threads", "N", kThreads, "LibTorch threads (0: all cores)"};
  c.push_back({{"shrink", "eval", "", "accuracy and loss of a checkpoint on the test split of its data (or of --data)",
                {checkpoint, data, threads, {"logits", "OUT", kPath, "write the logits as raw float32, one row per example"}}, true},
               add_all_job_options, [](const Args& a) { return eval_report(checkpoint_run(a), a.get("logits").value_or("")); }});
  c.push_back({{"shrink", "prune report", "CHECKPOINT", "per-layer params, nonzeros, sparsity and MACs", {}, false}, nullptr,
               [](const Args& a) { return pruning_report(a.positional[0]); }});
  c.push_back({{"shrink", "prune sensitivity", "", "accuracy with each layer pruned alone",
                {checkpoint, data, threads, {"sparsities", "LIST", Rule::numbers(0, 1, false), "sparsities to try, e.g. 0.25,0.5,0.75,0.9"}}, true},
               add_all_job_options, run_sensitivity});
  c.push_back({{"shrink", "export", "", "write the model file the runtime (shrink-run) loads, or an ONNX file",
                {checkpoint, {"out", "M.shrink", kPath, "the model file to write (M.onnx: ONNX)", false, true},
                 {"format", "F", Rule::choice({"shrink", "onnx", "auto"}), "file format (auto: from --out's extension)"},
                 {"opset", "N", Rule::integer(11, 17), "ONNX opset (default 13; int8 needs 13 or later)"},
                 {"no-normalization", "", Rule::flag(), "ONNX: leave the input normalization out of the graph (it stays in the metadata)"},
                 {"expose-layers", "", Rule::flag(), "ONNX: every layer's output also a graph output, LAYER.exposed (blocks fusions; for debugging)"},
                 {"precision", "P", Rule::choice({"fp32", "int8", "auto"}), "weights and activations (auto: int8 for a quantized checkpoint)"},
                 {"storage", "S", Rule::choice({"dense", "sparse", "auto"}), "sparse stores a bitmask and the nonzeros (auto: when smaller)"},
                 {"class-names", "a,b,...", Rule::text(true), "class names stored in the model"}},
                false},
               nullptr, run_export});
  c.push_back({{"shrink", "compare", "", "teacher vs students (checkpoints, TorchScript or .shrink files), measured in one run",
                {{"teacher", "A", kPath, "the teacher", false, true}, {"student", "B", kPath, "a student", true, true}, data,
                 {"html", "FILE", kPath, "also write the HTML report"}, {"out", "FILE", kPath, "compare.json to write"},
                 {"batch", "N", Rule::integer(1, 1 << 16), "throughput batch size"}, threads,
                 {"bench-seconds", "S", Rule::real(0, 3600, true), "seconds of timing per model"}},
                true},
               add_all_job_options, run_compare});
  c.push_back({{"shrink", "launch", "", "run a job data parallel: N workers on this host (torchrun's flags), e.g. launch --nproc_per_node 2 -- train --config F",
                {{"nproc_per_node", "N", Rule::integer(1, 1024), "workers on this host (default 1)"},
                 {"nnodes", "M", Rule::integer(1, 65536), "hosts (default 1)"},
                 {"node_rank", "R", Rule::integer(0, 65535), "this host's place among them (default 0; node 0 serves the workers' store)"},
                 {"master_addr", "A", Rule::text(false), "node 0's address (default 127.0.0.1)"},
                 {"master_port", "P", Rule::integer(0, 65535), "node 0's port (default 29500; 0: a free one, one host only)"},
                 {"local_addr", "A", Rule::text(false), "the address the other hosts reach this one's workers at (default: its name's)"},
                 {"timeout", "S", Rule::integer(1, 86400), "seconds a worker waits for the others before the job stops (default 300)"}},
                false, "the job follows --: shrink launch [options] -- train|distill|prune|quantize|pipeline --config FILE [...]; rank 0 writes the run folder, the others OUT/rank-K.log\n"},
               nullptr, [](const Args& a) { return run_launch(a) == 0 ? "" : "launch: the job failed\n"; }});
  c.push_back({{"shrink", "pipeline", "", "teacher, distill, prune, quantize, export, compare in OUT/NAME/ (finished stages are skipped)",
                {{"config", "FILE", kPath, "the pipeline's INI file", false, true},
                 {"force", "STAGE", Rule::choice(kPipelineStages), "redo this stage and every stage after it", true}},
                true, kPipelineKeysHelp},
               add_pipeline_options, run_pipeline_command});
  c.push_back({{"shrink", "data info", "PATH", "shapes, dtypes and class counts of a dataset", {}, false}, nullptr,
               [](const Args& a) { return data_info(a.positional[0]); }});
  c.push_back({{"shrink", "import", "MODEL.onnx|M.shrink", "an ONNX model (fp32, opsets 11-23), or an fp32 .shrink file, as a shrink checkpoint",
                {{"out", "C.pt", kPath, "the checkpoint to write", false, true},
                 {"input", "C,H,W", Rule::shape(false), "per-sample input shape, when the file leaves it open"},
                 {"classes", "N", Rule::integer(2, 1 << 20), "a fresh N-class classifier in place of the model's (transfer learning)"},
                 {"mean", "m,...", Rule::numbers(-1e6, 1e6, false), "per-channel input mean the model was trained with"},
                 {"std", "s,...", Rule::numbers(1e-9, 1e9, false), "per-channel input standard deviation"},
                 {"class-names", "FILE", kPath, "class names, one per line"},
                 {"image-input", "", Rule::flag(), "the model reads 8-bit images scaled to [0,1] (1 or 3 channels): shrink-run then takes PNG/JPEG"},
                 {"input-scale", "S", Rule::real(0, 1e6, true), "the file reads shrink's inputs times S (255: pixel values 0..255, where shrink's images are 0..1)"},
                 {"seed", "N", Rule::integer(0, 1 << 30), "initialization of a fresh classifier"}},
                false},
               nullptr, run_import});
  c.push_back({{"shrink", "model info", "SPEC", "layers, output shapes, params and MACs of a spec, preset, checkpoint or ONNX file",
                {{"input", "C,H,W", Rule::shape(false), "input shape (a spec's default: 1,16,16)"}, {"classes", "N", Rule::integer(2, 1 << 20), "classes"}}, false},
               nullptr, run_model_info});
  return c;
}

std::string overview() {
  std::string s = "shrink: make models small and fast, and ship them\n\nusage: shrink COMMAND [options]\n\ncommands:\n";
  for (const auto& c : shrink_commands()) {
    std::string left = "  " + c.line.name + (c.line.positional.empty() ? "" : " " + c.line.positional);
    if (left.size() < 28) left += std::string(28 - left.size(), ' ');
    s += left + " " + c.line.summary + "\n";
  }
  return s + "\n`shrink COMMAND --help` lists the command's options (and, for jobs, every config key with its default and accepted values).\n"
             "Exit codes: 0 success, 2 a user error (message says what and where), 1 a bug.\n";
}

// The command the words start with, the longest name first ("prune report" before "prune");
// `used` is how many words its name took. Null when none matches.
const Command* find_command(const std::vector<std::string>& words, size_t& used) {
  const Command* found = nullptr;
  used = 0;
  for (const auto& c : shrink_commands()) {
    std::istringstream in(c.line.name);
    size_t n = 0;
    bool match = true;
    for (std::string w; in >> w; ++n) match &= n < words.size() && words[n] == w;
    if (match && n > used) found = &c, used = n;
  }
  return found;
}

// `shrink GROUP` (e.g. "shrink data") without its subcommand: with --help the group's
// subcommands, otherwise an error.
std::string group_help(const std::vector<std::string>& words) {
  std::string group;
  for (const auto& c : shrink_commands())
    if (c.line.name.rfind(words[0] + " ", 0) == 0) group += "  " + usage_line(c.line) + "\n";
  if (group.empty()) throw UserError(fmt::format("unknown command '{}' (see shrink --help)", words[0]));
  if (words.size() > 1 && (words[1] == "--help" || words[1] == "-h")) return "subcommands:\n" + group;
  throw UserError(fmt::format("shrink {}: expected a subcommand (see shrink {} --help)", words[0], words[0]));
}

std::string command_help(const Command& c) {
  std::string s = help_text(c.line);
  if (c.keys) {
    Keys keys(c.line.name + " keys (section.key; in the INI file as [section] key = value)");
    c.keys(keys);
    std::ostringstream listed;
    listed << keys.options();
    s += "\n" + listed.str() + "\n";
  }
  return s;
}

}  // namespace

const std::vector<Command>& shrink_commands() {
  static const std::vector<Command> commands = make_commands();
  return commands;
}

int run_shrink(const std::vector<std::string>& words) {
  if (words.empty() || words[0] == "--help" || words[0] == "-h" || words[0] == "help") {
    std::cout << overview();
    return words.empty() ? 2 : 0;
  }
  size_t used = 0;
  const Command* found = find_command(words, used);
  if (!found) return std::cout << group_help(words), 0;
  // `shrink launch [flags] -- JOB...`: the words after -- are the workers' command.
  auto end = found->line.name == "launch" ? std::find(words.begin() + used, words.end(), "--") : words.end();
  Args a = parse_command_line(found->line, std::vector<std::string>(words.begin() + used, end));
  if (end != words.end()) a.values["job"] = std::vector<std::string>(end + 1, words.end());
  if (found->line.name == "launch" && !a.help) return run_launch(a);
  std::cout << (a.help ? command_help(*found) : found->run(a));
  return 0;
}

}  // namespace shrink
