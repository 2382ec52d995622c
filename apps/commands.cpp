#include "apps/commands.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "jobs/compare.h"
#include "jobs/pipeline.h"
#include "common/error.h"
#include "distill/distill.h"
#include "export/export.h"
#include "prune/prune.h"
#include "quantize/quantize.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/objective.h"
#include "train/trainer.h"

namespace shrink {
namespace {

const Rule kPath = Rule::text(false), kThreads = Rule::integer(0, 1024);

// `shrink train|distill|prune|quantize --config FILE [--key=value ...]`: a job in a run directory.
int run_job(const std::string& kind, const std::function<void(Keys&)>& add_keys, const Args& a) {
  std::vector<std::string> keys = a.keys;
  if (auto out = a.get("out")) keys.push_back("--job.out=" + *out);
  std::string file = a.get("config").value_or("");
  // `--resume --out DIR` alone continues the run with the config it saved.
  if (file.empty() && a.has("resume") && a.has("out")) file = *a.get("out") + "/config.ini";
  if (file.empty()) throw UserError(fmt::format("{}: --config FILE is required (see shrink {} --help)", kind, kind));
  Keys declared;
  add_keys(declared);
  Config config = Config::load(declared, file, keys);
  JobConfig job = read_job_config(config);
  RunOptions options;
  options.resume = a.has("resume");
  options.overwrite = a.has("overwrite");
  if (kind == "distill") {
    run_distill_job(job, read_distill_config(config, job), options);
  } else if (kind == "prune") {
    PruneConfig prune = read_prune_config(config);
    auto teacher = make_distill_objective(config, job);  // fine-tune under a teacher when one is given
    run_prune_job(job, prune, options, teacher.get());
  } else if (kind == "quantize") {
    QuantizeConfig quantize = read_quantize_config(config);
    auto teacher = make_distill_objective(config, job);
    run_quantize_job(job, quantize, options, teacher.get());
  } else {
    run_train_job(job, options);
  }
  return 0;
}

// The data a checkpoint was trained on (its saved config), with command-line overrides
// (--data PATH, --data.key=value).
Config checkpoint_config(const std::string& path, const nlohmann::json& meta, const Args& a) {
  Keys keys;
  add_all_job_options(keys);
  std::vector<std::string> overrides = a.keys;
  if (auto data = a.get("data")) overrides.push_back("--data.path=" + *data);
  return Config::layered(keys, meta.value("config", std::string()), path + " (saved config)", overrides);
}

Data checkpoint_data(const std::string& path, const nlohmann::json& meta, const Args& a) {
  Data data = open_data(read_job_config(checkpoint_config(path, meta, a)).data);
  auto input = meta.at("input").get<std::vector<int64_t>>();
  auto classes = meta.at("classes").get<int64_t>();
  if (data.shape != input || data.classes != classes)
    throw UserError(fmt::format("the data has examples of {} and {} classes; the model expects {} and {}", shape_string(data.shape), data.classes,
                                shape_string(input), classes));
  return data;
}

int run_eval(const Args& a) {
  const std::string path = *a.get("checkpoint");
  torch::set_num_threads(resolve_threads(a.integer("threads", 0)));
  LoadedModel loaded = load_checkpoint(path);  // a quantized checkpoint runs its int8 simulation
  const nlohmann::json& meta = loaded.meta;
  SpecNet model = loaded.model;
  Data data = checkpoint_data(path, meta, a);
  Augment norm = normalization_of(meta);
  EvalResult r = evaluate(model, data.test, norm, 512);
  if (auto out = a.get("logits")) {
    torch::NoGradGuard no_grad;
    model->eval();
    std::ofstream file(*out, std::ios::binary);
    for_each_batch(data.test, 512, norm, [&](const Batch& b) {
      auto logits = model->forward(b.x).contiguous();
      file.write(reinterpret_cast<const char*>(logits.data_ptr<float>()), logits.numel() * 4);
    });
    file.close();
    if (!file) throw UserError(fmt::format("--logits {}: cannot write", *out));
  }
  std::cout << fmt::format("{}: test accuracy {:.2f}% ({} examples), loss {:.4f}\n", path, 100 * r.accuracy, r.count, r.loss);
  for (size_t c = 0; c < r.count_per_class.size(); ++c)
    std::cout << fmt::format("  class {}: {:.2f}% of {}\n", c, r.count_per_class[c] ? 100.0 * r.correct_per_class[c] / r.count_per_class[c] : 0.0,
                             r.count_per_class[c]);
  return 0;
}

int run_sensitivity(const Args& a) {
  const std::string path = *a.get("checkpoint");
  torch::set_num_threads(resolve_threads(a.integer("threads", 0)));
  std::vector<double> sparsities;
  std::stringstream in(a.get("sparsities").value_or("0.25,0.5,0.75,0.9"));
  for (std::string part; std::getline(in, part, ',');) sparsities.push_back(std::stod(part));
  nlohmann::json meta = read_checkpoint_meta(path);
  std::cout << sensitivity_table(path, read_job_config(checkpoint_config(path, meta, a)).data, sparsities);
  return 0;
}

int run_export(const Args& a) {
  ExportOptions o;
  o.precision = a.get("precision").value_or("auto");
  o.storage = a.get("storage").value_or("auto");
  std::stringstream names(a.get("class-names").value_or(""));
  for (std::string n; std::getline(names, n, ',');) o.class_names.push_back(n);
  const std::string out = *a.get("out");
  auto info = export_model(*a.get("checkpoint"), out, o);
  std::cout << fmt::format("{}: {} bytes, {} weights, {} tensors\n", out, info["bytes"].get<uint64_t>(), info["precision"].get<std::string>(),
                           info["tensors"].get<size_t>());
  return 0;
}

int run_compare(const Args& a) {
  CompareOptions o;
  o.teacher = *a.get("teacher");
  o.students = a.all("student");
  o.batch = a.integer("batch", o.batch);
  o.threads = static_cast<int>(a.integer("threads", o.threads));
  o.bench_seconds = a.real("bench-seconds", o.bench_seconds);
  std::vector<std::string> overrides = a.keys;
  if (auto data = a.get("data")) overrides.push_back("--data.path=" + *data);
  std::vector<std::string> all{o.teacher};
  all.insert(all.end(), o.students.begin(), o.students.end());
  o.data = data_config_of_models(all, overrides);
  auto result = compare_models(o);
  std::cout << compare_table(result);
  const std::string json_out = a.get("out").value_or("compare.json");
  write_json_atomic(json_out, result);
  std::cout << "wrote " << json_out;
  if (auto html = a.get("html")) {
    write_file_atomic(*html, compare_html(result));
    std::cout << " and " << *html;
  }
  std::cout << "\n";
  return 0;
}

int run_pipeline_command(const Args& a) {
  PipelineRun run;
  run.config = *a.get("config");
  run.force = a.all("force");
  run.overrides = a.keys;
  run_pipeline(run);
  return 0;
}

int run_model_info(const Args& a) {
  std::vector<int64_t> input = parse_shape(a.get("input").value_or("1,16,16"));
  ModelSpec spec = parse_spec(a.positional[0], input, a.integer("classes", 10));
  auto info = analyze(spec);
  std::cout << fmt::format("{:<12} {:<8} {:<14} {:<14} {:>10} {:>12}\n", "layer", "type", "input", "output", "params", "MACs");
  int64_t params = 0, macs = 0;
  for (size_t i = 0; i < info.size(); ++i) {
    const Layer& L = spec.layers[i];
    std::cout << fmt::format("{:<12} {:<8} {:<14} {:<14} {:>10} {:>12}\n", L.name, L.depthwise ? "dwconv" : layer_type_name(L.type),
                             shape_string(info[i].in_shape), shape_string(info[i].out_shape), info[i].params, info[i].macs);
    params += info[i].params;
    macs += info[i].macs;
  }
  std::cout << fmt::format("{:<12} {:<8} {:<14} {:<14} {:>10} {:>12}\n", "total", "", shape_string(input), "", params, macs);
  std::cout << "spec: " << spec.to_string() << "\n";
  return 0;
}

void train_keys(Keys& k) { add_train_options(k); }
void prune_keys(Keys& k) { add_train_options(k), add_teacher_options(k), add_prune_options(k); }
void quantize_keys(Keys& k) { add_train_options(k), add_teacher_options(k), add_quantize_options(k); }

std::vector<Command> make_commands() {
  const std::vector<Flag> job_flags = {
      {"config", "FILE", kPath, "the job's INI file"},
      {"out", "DIR", kPath, "run directory (job.out)"},
      {"resume", "", Rule::flag(), "continue a stopped run from its last checkpoint"},
      {"overwrite", "", Rule::flag(), "start over in a run directory that holds a run"},
  };
  std::vector<Command> c;
  auto job = [&](const std::string& name, const std::string& summary, std::function<void(Keys&)> keys) {
    c.push_back({{"shrink", name, "", summary, job_flags, true}, keys, [name, keys](const Args& a) { return run_job(name, keys, a); }});
  };
  job("train", "train a model", train_keys);
  job("distill", "train the [student] under the [teacher]", add_distill_options);
  job("prune", "prune a checkpoint and fine-tune it", prune_keys);
  job("quantize", "int8: quantization-aware training (or quantize.mode = ptq: calibration only)", quantize_keys);
  const Flag checkpoint{"checkpoint", "C", kPath, "a shrink checkpoint", false, true}, data{"data", "PATH", kPath, "data.path of the test data"},
      threads{"threads", "N", kThreads, "LibTorch threads (0: all cores)"};
  c.push_back({{"shrink", "eval", "", "accuracy and loss of a checkpoint on the test split of its data (or of --data)",
                {checkpoint, data, threads, {"logits", "OUT", kPath, "write the logits as raw float32, one row per example"}}, true},
               add_all_job_options, run_eval});
  c.push_back({{"shrink", "prune report", "CHECKPOINT", "per-layer params, nonzeros, sparsity and MACs", {}, false}, nullptr,
               [](const Args& a) { return std::cout << prune_report(a.positional[0]), 0; }});
  c.push_back({{"shrink", "prune sensitivity", "", "accuracy with each layer pruned alone",
                {checkpoint, data, threads, {"sparsities", "LIST", Rule::numbers(0, 1, false), "sparsities to try, e.g. 0.25,0.5,0.75,0.9"}}, true},
               add_all_job_options, run_sensitivity});
  c.push_back({{"shrink", "export", "", "write the model file the runtime (shrink-run) loads",
                {checkpoint, {"out", "M.shrink", kPath, "the model file to write"},
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
  c.push_back({{"shrink", "pipeline", "", "teacher, distill, prune, quantize, export, compare in OUT/NAME/ (finished stages are skipped)",
                {{"config", "FILE", kPath, "the pipeline's INI file", false, true},
                 {"force", "STAGE", Rule::choice(kPipelineStages), "redo this stage and every stage after it", true}},
                true},
               add_pipeline_options, run_pipeline_command});
  c.push_back({{"shrink", "data info", "PATH", "shapes, dtypes and class counts of a dataset", {}, false}, nullptr,
               [](const Args& a) { return std::cout << describe_data(a.positional[0]), 0; }});
  c.push_back({{"shrink", "model info", "SPEC", "layers, output shapes, params and MACs of a spec or preset",
                {{"input", "C,H,W", Rule::shape(false), "input shape"}, {"classes", "N", Rule::integer(2, 1 << 20), "classes"}}, false},
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
  // The longest command name the words start with ("prune report" before "prune").
  const Command* found = nullptr;
  size_t used = 0;
  for (const auto& c : shrink_commands()) {
    std::istringstream in(c.line.name);
    size_t n = 0;
    bool match = true;
    for (std::string w; in >> w; ++n) match &= n < words.size() && words[n] == w;
    if (match && n > used) found = &c, used = n;
  }
  if (!found) {  // a group alone ("shrink data"): its subcommands
    std::string group;
    for (const auto& c : shrink_commands())
      if (c.line.name.rfind(words[0] + " ", 0) == 0) group += "  " + usage_line(c.line) + "\n";
    if (group.empty()) throw UserError(fmt::format("unknown command '{}' (see shrink --help)", words[0]));
    if (words.size() > 1 && (words[1] == "--help" || words[1] == "-h")) return std::cout << "subcommands:\n" << group, 0;
    throw UserError(fmt::format("shrink {}: expected a subcommand (see shrink {} --help)", words[0], words[0]));
  }
  Args a = parse_command_line(found->line, std::vector<std::string>(words.begin() + used, words.end()));
  if (a.help) {
    std::cout << help_text(found->line);
    if (found->keys) {
      Keys keys(found->line.name + " keys (section.key; in the INI file as [section] key = value)");
      found->keys(keys);
      std::cout << "\n" << keys.options() << "\n";
    }
    return 0;
  }
  return found->run(a);
}

}  // namespace shrink
