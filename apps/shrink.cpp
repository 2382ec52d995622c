// The shrink command line: one subcommand per job. User errors print one line and exit 2.
#include <fmt/format.h>
#include <torch/torch.h>

#include <iostream>
#include <map>
#include <fstream>
#include <optional>
#include <sstream>

#include "apps/compare.h"
#include "apps/pipeline.h"
#include "common/error.h"
#include "distill/distill.h"
#include "export/export.h"
#include "prune/prune.h"
#include "quantize/quantize.h"
#include "train/objective.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/trainer.h"

namespace shrink {
namespace {

const char* kUsage = R"(shrink: make models small and fast, and ship them

usage: shrink COMMAND [options]

commands:
  train --config FILE [--key=value ...]   train a model (--resume, --overwrite, --out DIR)
  distill --config FILE [--key=value ...] train the [student] under the [teacher] (same options)
  eval --checkpoint C [--data PATH]       accuracy and loss of a checkpoint on a test split
  prune --config FILE [--key=value ...]   prune a checkpoint and fine-tune it (same options)
  prune report CHECKPOINT                 per-layer params, nonzeros, sparsity and MACs
  prune sensitivity --checkpoint C [--data PATH] [--sparsities LIST]
                                          accuracy with each layer pruned alone
  quantize --config FILE [--key=value ...]  int8: quantization-aware training (or mode=ptq: calibration)
  export --checkpoint C --out M.shrink [--precision fp32|int8|auto] [--storage dense|sparse|auto]
                                          write the model file the runtime (shrink-run) loads
  compare --teacher A --student B [--student C ...] [--data PATH] [--html report.html] [--out compare.json]
                                          teacher vs students (checkpoints, TorchScript or .shrink files)
  pipeline --config FILE [--force STAGE]  teacher, distill, prune, quantize, export, compare in runs/NAME/
  data info PATH                          shapes, dtypes and class counts of a dataset
  model info SPEC [--input C,H,W] [--classes N]
                                          layers, output shapes, params and MACs
  COMMAND --help                          the command's options

Exit codes: 0 success, 2 a user error (message says what and where), 1 a bug.
)";

// Splits the words after the command into the flags a command knows (--name or --name VALUE)
// and everything else (config keys, passed on to Config).
struct Args {
  std::map<std::string, std::string> flags;
  std::vector<std::string> keys, positional;
};

Args split_args(int argc, char** argv, int first, const std::map<std::string, bool>& known /* name -> takes value */) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string w = argv[i];
    if (w.rfind("--", 0) != 0) {
      a.positional.push_back(w);
      continue;
    }
    std::string name = w.substr(2), value;
    size_t eq = name.find('=');
    if (eq != std::string::npos) value = name.substr(eq + 1), name = name.substr(0, eq);
    auto it = known.find(name);
    if (it == known.end()) {
      a.keys.push_back(w);
      if (eq == std::string::npos && i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) a.keys.push_back(argv[++i]);
      continue;
    }
    if (it->second && eq == std::string::npos) {
      if (i + 1 >= argc) throw UserError(fmt::format("--{} needs a value", name));
      value = argv[++i];
    }
    a.flags[name] = value;
  }
  return a;
}

std::optional<std::string> flag(const Args& a, const std::string& name) {
  auto it = a.flags.find(name);
  if (it == a.flags.end()) return std::nullopt;
  return it->second;
}

// `shrink train` and `shrink distill`: a config file plus overrides, run in a run directory.
int cmd_job(const std::string& job_kind, int argc, char** argv) {
  Args a = split_args(argc, argv, 2, {{"config", true}, {"resume", false}, {"overwrite", false}, {"out", true}, {"help", false}});
  po::options_description keys(job_kind + " keys (section.key; in the INI file as [section] key = value)", 120);
  if (job_kind == "distill") {
    add_distill_options(keys);
  } else {
    add_train_options(keys);
    if (job_kind == "prune") add_teacher_options(keys), add_prune_options(keys);
    if (job_kind == "quantize") add_teacher_options(keys), add_quantize_options(keys);
  }
  if (flag(a, "help")) {
    std::cout << "usage: shrink " << job_kind << " --config FILE [--section.key=value ...] [--out DIR] [--resume] [--overwrite]\n\n" << keys << "\n";
    return 0;
  }
  if (!a.positional.empty()) throw UserError(fmt::format("{}: unexpected argument '{}'", job_kind, a.positional[0]));
  if (auto out = flag(a, "out")) a.keys.push_back("--job.out=" + *out);
  std::string file = flag(a, "config").value_or("");
  // `--resume --out DIR` alone continues the run with the config it saved.
  if (file.empty() && flag(a, "resume") && flag(a, "out")) file = *flag(a, "out") + "/config.ini";
  if (file.empty()) throw UserError(fmt::format("{}: --config FILE is required (see shrink {} --help)", job_kind, job_kind));
  Config config = Config::load(keys, file, a.keys);
  JobConfig job = read_job_config(config);
  RunOptions options;
  options.resume = flag(a, "resume").has_value();
  options.overwrite = flag(a, "overwrite").has_value();
  if (job_kind == "distill") {
    run_distill_job(job, read_distill_config(config, job), options);
  } else if (job_kind == "prune") {
    PruneConfig prune = read_prune_config(config);
    auto teacher = make_distill_objective(config, job);  // fine-tune under a teacher when one is given
    run_prune_job(job, prune, options, teacher.get());
  } else if (job_kind == "quantize") {
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
Data checkpoint_data(const std::string& path, const nlohmann::json& meta, Args& a) {
  po::options_description keys;
  add_all_job_options(keys);
  if (auto data = flag(a, "data")) a.keys.push_back("--data.path=" + *data);
  Config config = Config::layered(keys, meta.value("config", std::string()), path + " (saved config)", a.keys);
  Data data = open_data(read_job_config(config).data);
  auto input = meta.at("input").get<std::vector<int64_t>>();
  auto classes = meta.at("classes").get<int64_t>();
  if (data.shape != input || data.classes != classes)
    throw UserError(fmt::format("the data has examples of {} and {} classes; the model expects {} and {}", shape_string(data.shape), data.classes,
                                shape_string(input), classes));
  return data;
}

int cmd_eval(int argc, char** argv) {
  Args a = split_args(argc, argv, 2, {{"checkpoint", true}, {"data", true}, {"threads", true}, {"help", false}, {"logits", true}});
  if (flag(a, "help")) {
    std::cout << "usage: shrink eval --checkpoint C [--data PATH] [--data.key=value ...] [--threads N] [--logits OUT]\n"
                 "--logits OUT writes the test split's logits as raw float32, one row per example, in data order.\n"
                 "Evaluates on the test split of the data the checkpoint was trained on, or of PATH.\n";
    return 0;
  }
  auto path = flag(a, "checkpoint");
  if (!path) throw UserError("eval: --checkpoint C is required");
  torch::set_num_threads(resolve_threads(flag(a, "threads") ? std::stoll(*flag(a, "threads")) : 0));
  nlohmann::json meta;
  SpecNet model = load_any_model(*path, &meta);  // a quantized checkpoint runs its int8 simulation
  Data data = checkpoint_data(*path, meta, a);
  Augment norm = normalization_of(meta);
  EvalResult r = evaluate(model, data.test, norm, 512);
  if (auto out = flag(a, "logits")) {
    torch::NoGradGuard no_grad;
    model->eval();
    std::ofstream file(*out, std::ios::binary);
    for_each_batch(data.test, 512, norm, [&](const Batch& b) {
      auto logits = model->forward(b.x).contiguous();
      file.write(reinterpret_cast<const char*>(logits.data_ptr<float>()), logits.numel() * 4);
    });
    if (!file) throw UserError(fmt::format("--logits {}: cannot write", *out));
  }
  std::cout << fmt::format("{}: test accuracy {:.2f}% ({} examples), loss {:.4f}\n", *path, 100 * r.accuracy, r.count, r.loss);
  for (size_t c = 0; c < r.count_per_class.size(); ++c)
    std::cout << fmt::format("  class {}: {:.2f}% of {}\n", c, r.count_per_class[c] ? 100.0 * r.correct_per_class[c] / r.count_per_class[c] : 0.0,
                             r.count_per_class[c]);
  return 0;
}

// `shrink prune --config F`, `shrink prune report C`, `shrink prune sensitivity --checkpoint C`.
int cmd_prune(int argc, char** argv) {
  std::string sub = argc > 2 ? argv[2] : "";
  if (sub == "report") {
    if (argc < 4) throw UserError("usage: shrink prune report CHECKPOINT");
    std::cout << prune_report(argv[3]);
    return 0;
  }
  if (sub != "sensitivity") return cmd_job("prune", argc, argv);
  Args a = split_args(argc, argv, 3, {{"checkpoint", true}, {"data", true}, {"threads", true}, {"sparsities", true}});
  auto path = flag(a, "checkpoint");
  if (!path) throw UserError("usage: shrink prune sensitivity --checkpoint C [--data PATH] [--sparsities 0.25,0.5,0.75,0.9]");
  torch::set_num_threads(resolve_threads(flag(a, "threads") ? std::stoll(*flag(a, "threads")) : 0));
  std::vector<double> sparsities;
  std::stringstream in(flag(a, "sparsities").value_or("0.25,0.5,0.75,0.9"));
  std::string part;
  while (std::getline(in, part, ',')) {
    try {
      sparsities.push_back(std::stod(part));
    } catch (const std::exception&) {
      throw UserError(fmt::format("--sparsities: '{}' is not a number", part));
    }
    if (!(sparsities.back() >= 0 && sparsities.back() < 1)) throw UserError("--sparsities: values must be in [0, 1)");
  }
  nlohmann::json meta = read_checkpoint_meta(*path);
  po::options_description keys;
  add_all_job_options(keys);
  if (auto data = flag(a, "data")) a.keys.push_back("--data.path=" + *data);
  Config config = Config::layered(keys, meta.value("config", std::string()), *path + " (saved config)", a.keys);
  std::cout << sensitivity_table(*path, read_job_config(config).data, sparsities);
  return 0;
}

int cmd_export(int argc, char** argv) {
  Args a = split_args(argc, argv, 2, {{"checkpoint", true}, {"out", true}, {"precision", true}, {"storage", true}, {"class-names", true}});
  auto checkpoint = flag(a, "checkpoint"), out = flag(a, "out");
  if (!checkpoint || !out || !a.keys.empty())
    throw UserError("usage: shrink export --checkpoint C --out MODEL.shrink [--precision fp32|int8|auto] [--storage dense|sparse|auto] [--class-names a,b,...]");
  ExportOptions o;
  o.precision = flag(a, "precision").value_or("auto");
  o.storage = flag(a, "storage").value_or("auto");
  std::stringstream names(flag(a, "class-names").value_or(""));
  for (std::string n; std::getline(names, n, ',');) o.class_names.push_back(n);
  auto info = export_model(*checkpoint, *out, o);
  std::cout << fmt::format("{}: {} bytes, {} weights, {} tensors\n", *out, info["bytes"].get<uint64_t>(), info["precision"].get<std::string>(),
                           info["tensors"].get<size_t>());
  return 0;
}

// `shrink compare --teacher A --student B [--student C ...] [--data PATH] [--html F] [--out J]`
int cmd_compare(int argc, char** argv) {
  CompareOptions o;
  std::string html, json_out = "compare.json";
  std::vector<std::string> overrides;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UserError(fmt::format("compare: {} needs a value", a));
      return argv[++i];
    };
    if (a == "--teacher") o.teacher = value();
    else if (a == "--student") o.students.push_back(value());
    else if (a == "--data") overrides.push_back("--data.path=" + value());
    else if (a == "--html") html = value();
    else if (a == "--out") json_out = value();
    else if (a == "--batch") o.batch = std::stoll(value());
    else if (a == "--threads") o.threads = std::stoi(value());
    else if (a == "--bench-seconds") o.bench_seconds = std::stod(value());
    else if (a.rfind("--data.", 0) == 0) overrides.push_back(a);
    else throw UserError(fmt::format("compare: unknown option {} (see shrink --help)", a));
  }
  if (o.teacher.empty() || o.students.empty())
    throw UserError("usage: shrink compare --teacher A --student B [--student C ...] [--data PATH] [--html report.html] [--out compare.json]");
  std::vector<std::string> all{o.teacher};
  all.insert(all.end(), o.students.begin(), o.students.end());
  o.data = data_config_of_models(all, overrides);
  auto result = compare_models(o);
  std::cout << compare_table(result);
  write_json_atomic(json_out, result);
  std::cout << "wrote " << json_out;
  if (!html.empty()) {
    write_file_atomic(html, compare_html(result));
    std::cout << " and " << html;
  }
  std::cout << "\n";
  return 0;
}

int cmd_pipeline(int argc, char** argv) {
  PipelineRun run;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--config" || a == "--force") && i + 1 < argc) (a == "--config" ? run.config = argv[++i] : (run.force.push_back(argv[++i]), run.config));
    else throw UserError(fmt::format("pipeline: unexpected argument {} (usage: shrink pipeline --config FILE [--force STAGE ...])", a));
  }
  if (run.config.empty()) throw UserError("usage: shrink pipeline --config FILE [--force STAGE ...]");
  run_pipeline(run);
  return 0;
}

int cmd_data(int argc, char** argv) {
  if (argc < 4 || std::string(argv[2]) != "info") throw UserError("usage: shrink data info PATH");
  std::cout << describe_data(argv[3]);
  return 0;
}

int cmd_model(int argc, char** argv) {
  if (argc < 4 || std::string(argv[2]) != "info") throw UserError("usage: shrink model info SPEC [--input C,H,W] [--classes N]");
  Args a = split_args(argc, argv, 4, {{"input", true}, {"classes", true}});
  if (!a.keys.empty()) throw UserError(fmt::format("model info: unknown option '{}'", a.keys[0]));
  std::vector<int64_t> input = parse_shape(flag(a, "input").value_or("1,16,16"));
  int64_t classes = 10;
  if (auto c = flag(a, "classes")) {
    try {
      classes = std::stoll(*c);
    } catch (const std::exception&) {
      throw UserError(fmt::format("--classes {}: not a number", *c));
    }
  }
  ModelSpec spec = parse_spec(argv[3], input, classes);
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

int dispatch(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" || std::string(argv[1]) == "help") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "train" || cmd == "distill") return cmd_job(cmd, argc, argv);
  if (cmd == "prune") return cmd_prune(argc, argv);
  if (cmd == "quantize") return cmd_job(cmd, argc, argv);
  if (cmd == "export") return cmd_export(argc, argv);
  if (cmd == "compare") return cmd_compare(argc, argv);
  if (cmd == "pipeline") return cmd_pipeline(argc, argv);
  if (cmd == "eval") return cmd_eval(argc, argv);
  if (cmd == "data") return cmd_data(argc, argv);
  if (cmd == "model") return cmd_model(argc, argv);
  throw UserError(fmt::format("unknown command '{}' (see shrink --help)", cmd));
}

}  // namespace
}  // namespace shrink

int main(int argc, char** argv) {
  try {
    return shrink::dispatch(argc, argv);
  } catch (const shrink::UserError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "internal error (a bug; please report): " << e.what() << std::endl;
    return 1;
  }
}
