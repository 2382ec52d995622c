#include "jobs/compare.h"

#include <fmt/format.h>
#include <torch/script.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/file_io.h"
#include "common/peak_memory.h"
#include "common/shape.h"
#include "distill/distill.h"
#include "jobs/import.h"
#include "jobs/jobs.h"
#include "prune/prune.h"
#include "quantize/qnet.h"
#include "quantize/quantize.h"
#include "datasets/loader.h"
#include "runtime/model_file.h"
#include "runtime/model_meta.h"
#include "shrink/runtime.hpp"
#include "train/checkpoint.h"

namespace shrink {
namespace fs = std::filesystem;

namespace {

// One model under comparison: raw (un-normalized) N,C,H,W input -> logits.
struct Candidate {
  std::string path, kind;
  std::function<torch::Tensor(const torch::Tensor&)> logits;
  nlohmann::json info;  // params, nonzero_params, macs, file_bytes, run_dir
  std::vector<std::string> class_names;  // what the model calls its outputs, when it says
  std::vector<int64_t> input;             // the examples it takes (C,H,W), when it says
};

std::string run_dir_of(const std::string& checkpoint) {
  fs::path p = fs::path(checkpoint).parent_path();
  if (p.filename() == "checkpoints") p = p.parent_path();
  return fs::exists(p / "metrics.jsonl") ? p.string() : "";
}

Candidate open_candidate(const std::string& path) {
  if (!fs::is_regular_file(path)) throw UserError(fmt::format("compare: {}: no such file", path));
  Candidate c;
  c.path = path;
  c.info["file_bytes"] = fs::file_size(path);
  if (format::is_model_file(path)) {
    c.kind = "shrink-model";
    auto model = std::make_shared<rt::Model>(rt::Model::load(path, 0));
    c.logits = [model](const torch::Tensor& x) {
      auto in = x.contiguous();
      auto out = model->predict(in.data_ptr<float>(), x.size(0));
      return torch::from_blob(out.data(), {x.size(0), model->classes()}, torch::kFloat32).clone();
    };
    DescribedModel described;  // the model loaded, so its metadata is valid
    ModelMeta meta = ModelMeta::from_json(nlohmann::json::parse(model->metadata_json()), &described);
    const ModelSpec& spec = described.spec;
    c.info["macs"] = total_cost(spec).macs;
    c.info["precision"] = meta.precision;
    c.class_names = meta.class_names;
    c.input = model->input_shape();
    const std::string& source = meta.provenance.checkpoint;
    c.info["run_dir"] = source.empty() ? "" : run_dir_of(source);
    int64_t params = 0, nonzero = 0;
    auto file = rt::read_model_file(path);
    for (const auto& [name, t] : file.tensors) {
      if (is_weight_scale_key(name)) continue;
      params += t.numel();
      for (int64_t k = 0; k < t.numel(); ++k) {
        bool zero = true;
        for (uint64_t b = 0; b < format::dtype_size(t.dtype); ++b) zero &= t.bytes[k * format::dtype_size(t.dtype) + b] == 0;
        nonzero += !zero;
      }
    }
    c.info["params"] = params;
    c.info["nonzero_params"] = nonzero;
    return c;
  }
  bool is_checkpoint = true;
  try {
    read_checkpoint_meta(path);
  } catch (const UserError&) {
    is_checkpoint = false;
  }
  if (is_checkpoint) {
    LoadedModel loaded = load_checkpoint(path);
    const nlohmann::json& meta = loaded.meta;
    SpecNet model = loaded.model;
    model->eval();
    c.kind = loaded.quantized() ? "checkpoint (int8 simulation)" : "checkpoint";
    Augment norm = normalization_of(meta);
    c.logits = [model, norm](const torch::Tensor& x) mutable {
      torch::NoGradGuard no_grad;
      return model->forward(normalize(x, norm.mean, norm.std));
    };
    int64_t params = 0, nonzero = 0;
    for (auto& p : model->named_parameters()) {
      if (is_quantizer_parameter(p.key())) continue;  // the simulation's scales, not the model's
      params += p.value().numel();
      nonzero += (p.value() != 0).sum().item<int64_t>();
    }
    c.info["params"] = params;
    c.info["nonzero_params"] = nonzero;
    c.info["macs"] = total_cost(model->spec()).macs;
    c.info["run_dir"] = run_dir_of(path);
    c.class_names = class_names_of(meta);
    c.input = meta.at("input").get<std::vector<int64_t>>();
    return c;
  }
  c.kind = "torchscript";
  torch::jit::Module module;
  try {
    module = torch::jit::load(path);
  } catch (const c10::Error&) {
    throw UserError(fmt::format("compare: {}: neither a .shrink model, a shrink checkpoint nor a TorchScript file", path));
  }
  module.eval();
  auto shared = std::make_shared<torch::jit::Module>(module);
  c.logits = [shared, path](const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    try {
      return shared->forward({x}).toTensor();
    } catch (const c10::Error& e) {  // a TorchScript file does not say what it takes
      throw UserError(fmt::format("compare: {} fails on examples of {}: {}", path, shape_string(x.sizes().vec()), e.what_without_backtrace()));
    }
  };
  int64_t params = 0, nonzero = 0;
  for (const auto& p : module.parameters()) params += p.numel(), nonzero += (p != 0).sum().item<int64_t>();
  c.info["params"] = params;
  c.info["nonzero_params"] = nonzero;
  c.info["run_dir"] = "";
  return c;
}

// A .shrink model's memory as deployed: the peak resident set (KB) of a shrink-run process, which
// links the runtime and no LibTorch, benchmarking it at batch 1 and `batch` on x (`shrink-run
// --bench` reports its own VmHWM: a child's rusage would count this process's memory, inherited
// through exec); 0 when shrink-run is not beside this program or fails.
int64_t runtime_peak_rss_kb(const std::string& model, const torch::Tensor& x, int64_t batch, int threads, double seconds) {
  const fs::path run = fs::read_symlink("/proc/self/exe").parent_path() / "shrink-run";
  if (!fs::exists(run)) return 0;
  const std::string files = (fs::temp_directory_path() / fmt::format("shrink-compare-{}", getpid())).string();
  auto examples = x.narrow(0, 0, std::min<int64_t>(batch, x.size(0))).contiguous();
  write_file_atomic(files + ".f32", examples.data_ptr(), examples.numel() * sizeof(float));
  const std::vector<std::string> words = {run.string(), model, "--input", files + ".f32", "--bench", "--batch", std::to_string(batch),
                                          "--threads", std::to_string(threads), "--seconds", fmt::format("{}", std::max(0.01, seconds))};
  std::vector<char*> argv;
  for (const auto& w : words) argv.push_back(const_cast<char*>(w.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t output;
  posix_spawn_file_actions_init(&output);
  posix_spawn_file_actions_addopen(&output, 1, (files + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&output, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  int status = 0;
  const bool ok = posix_spawn(&pid, argv[0], &output, nullptr, argv.data(), environ) == 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
                  WEXITSTATUS(status) == 0;
  posix_spawn_file_actions_destroy(&output);
  std::ifstream printed(files + ".out");
  std::string line, last;
  while (std::getline(printed, line)) last = line;
  fs::remove(files + ".f32"), fs::remove(files + ".out");
  auto j = nlohmann::json::parse(last, nullptr, false);
  return ok && j.is_object() ? j.value("peak_rss_kb", int64_t(0)) : 0;
}

nlohmann::json time_model(const Candidate& c, const torch::Tensor& x, int64_t batch, double seconds) {
  using clock = std::chrono::steady_clock;
  std::vector<double> ms;
  c.logits(x.narrow(0, 0, 1));
  auto until = clock::now() + std::chrono::duration<double>(seconds);
  for (int64_t i = 0; i < 100000 && (i < 20 || clock::now() < until); ++i) {
    auto t0 = clock::now();
    c.logits(x.narrow(0, i % x.size(0), 1));
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  auto big = x.repeat({(batch + x.size(0) - 1) / x.size(0), 1, 1, 1}).narrow(0, 0, batch).contiguous();
  c.logits(big);
  int64_t runs = 0;
  auto t0 = clock::now();
  while (runs < 3 || clock::now() - t0 < std::chrono::duration<double>(seconds)) c.logits(big), ++runs;
  double s = std::chrono::duration<double>(clock::now() - t0).count();
  return {{"latency_p50_ms", ms[ms.size() / 2]}, {"latency_p99_ms", ms[std::min(ms.size() - 1, ms.size() * 99 / 100)]},
          {"throughput", runs * batch / s}, {"throughput_batch", batch}};
}

}  // namespace

DataConfig data_config_of_models(const std::vector<std::string>& paths, const std::vector<std::string>& overrides) {
  Keys keys;
  add_all_job_options(keys);
  std::string text, origin = "defaults";
  for (const auto& p : paths) {
    try {
      auto meta = read_checkpoint_meta(p);
      text = meta.value("config", std::string());
      origin = p + " (saved config)";
      break;
    } catch (const UserError&) {
    }
  }
  return read_job_config(Config::layered(keys, text, origin, overrides)).data;
}

nlohmann::json compare_models(const CompareOptions& o) {
  torch::set_num_threads(resolve_threads(o.threads));
  Data data = open_data(o.data);
  torch::Tensor x, y;
  data.test->read_range(0, data.test->size(), x, y);
  std::vector<std::string> paths{o.teacher};
  paths.insert(paths.end(), o.students.begin(), o.students.end());
  nlohmann::json result = {{"data", data.test->describe()}, {"examples", data.test->size()}, {"classes", data.classes},
                           {"class_names", data.class_names},   {"models", nlohmann::json::array()}};
  torch::Tensor teacher_logits;
  for (size_t m = 0; m < paths.size(); ++m) {
    reset_peak_rss();
    Candidate c = open_candidate(paths[m]);
    check_class_names(data.class_names, c.class_names, c.path);
    if (!c.input.empty() && c.input != data.shape)
      throw UserError(fmt::format("compare: {} takes examples of {}; the data's are {}", c.path, shape_string(c.input), shape_string(data.shape)));
    std::vector<torch::Tensor> parts;
    for (int64_t s = 0; s < x.size(0); s += 256) parts.push_back(c.logits(x.narrow(0, s, std::min<int64_t>(256, x.size(0) - s))));
    auto logits = torch::cat(parts);
    if (logits.dim() != 2 || logits.size(1) != data.classes)
      throw UserError(fmt::format("compare: {} gives {} outputs per example; the data has {} classes", c.path, logits.size(-1), data.classes));
    auto pred = logits.argmax(1);
    nlohmann::json r = c.info;
    r["path"] = c.path;
    r["role"] = m == 0 ? "teacher" : "student";
    r["kind"] = c.kind;
    r["test_accuracy"] = (pred == y).to(torch::kFloat64).mean().item<double>();
    if (m == 0) teacher_logits = logits;
    auto lt = torch::log_softmax(teacher_logits, 1), ls = torch::log_softmax(logits, 1);
    r["agreement_with_teacher"] = (pred == teacher_logits.argmax(1)).to(torch::kFloat64).mean().item<double>();
    r["kl_teacher_student"] = (lt.exp() * (lt - ls)).sum(1).mean().item<double>();
    auto confusion = torch::zeros({data.classes, data.classes}, torch::kInt64);
    confusion.index_put_({y, pred}, torch::ones_like(y), true);
    std::vector<std::vector<int64_t>> cm(data.classes);
    std::vector<double> per_class;
    for (int64_t a = 0; a < data.classes; ++a) {
      for (int64_t b = 0; b < data.classes; ++b) cm[a].push_back(confusion[a][b].item<int64_t>());
      int64_t total = confusion[a].sum().item<int64_t>();
      per_class.push_back(total ? static_cast<double>(cm[a][a]) / total : 0.0);
    }
    r["confusion"] = cm;
    r["per_class_accuracy"] = per_class;
    r.update(time_model(c, x, o.batch, o.bench_seconds));
    // A model file's memory is shrink-run's own; a checkpoint's, this LibTorch process's while it ran.
    const int64_t deployed_kb = c.kind == "shrink-model" ? runtime_peak_rss_kb(c.path, x, o.batch, o.threads, o.bench_seconds) : 0;
    r["memory_mb"] = (deployed_kb > 0 ? deployed_kb : peak_rss_kb()) / 1024.0;
    r["memory_of"] = deployed_kb > 0 ? "shrink-run" : "this process (LibTorch)";
    std::string run_dir = r.value("run_dir", "");
    if (!run_dir.empty()) {
      std::ifstream metrics(run_dir + "/metrics.jsonl");
      nlohmann::json curve = nlohmann::json::array();
      for (std::string line; std::getline(metrics, line);) {
        auto rec = nlohmann::json::parse(line, nullptr, false);
        if (!rec.is_discarded()) curve.push_back({{"epoch", rec["epoch"]}, {"test_accuracy", rec["test_accuracy"]}, {"train_loss", rec["train_loss"]}});
      }
      r["training_curve"] = curve;
    }
    result["models"].push_back(r);
  }
  return result;
}

}  // namespace shrink
