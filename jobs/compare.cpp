#include "jobs/compare.h"

#include <fmt/format.h>
#include <torch/script.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "distill/distill.h"
#include "prune/prune.h"
#include "quantize/quantize.h"
#include "datasets/loader.h"
#include "runtime/model_file.h"
#include "runtime/model_meta.h"
#include "shrink/runtime.hpp"
#include "train/checkpoint.h"

namespace shrink {
namespace fs = std::filesystem;

void add_all_job_options(Keys& keys) {
  add_train_options(keys);
  add_teacher_options(keys);
  add_prune_options(keys);
  add_quantize_options(keys);
  keys.add("student.spec", "", Rule::text(true), "distill: the student").add("student.init", "", Rule::text(true), "distill: the student's start");
}

namespace {

// One model under comparison: raw (un-normalized) N,C,H,W input -> logits.
struct Candidate {
  std::string path, kind;
  std::function<torch::Tensor(const torch::Tensor&)> logits;
  nlohmann::json info;  // params, nonzero_params, macs, file_bytes, run_dir
};

bool is_shrink_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return std::string(magic, 8) == "SHRINKMF";
}

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
  if (is_shrink_file(path)) {
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
      if (p.key().rfind("aq_", 0) == 0 || p.key().rfind("wscale_", 0) == 0) continue;
      params += p.value().numel();
      nonzero += (p.value() != 0).sum().item<int64_t>();
    }
    c.info["params"] = params;
    c.info["nonzero_params"] = nonzero;
    c.info["macs"] = total_cost(model->spec()).macs;
    c.info["run_dir"] = run_dir_of(path);
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
  c.logits = [shared](const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    return shared->forward({x}).toTensor();
  };
  int64_t params = 0, nonzero = 0;
  for (const auto& p : module.parameters()) params += p.numel(), nonzero += (p != 0).sum().item<int64_t>();
  c.info["params"] = params;
  c.info["nonzero_params"] = nonzero;
  c.info["run_dir"] = "";
  return c;
}

// The process's peak resident set since the last reset_peak_rss() (VmHWM), in KB.
int64_t peak_rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  return 0;
}

void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

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
  nlohmann::json result = {{"data", data.test->describe()}, {"examples", data.test->size()}, {"classes", data.classes}, {"models", nlohmann::json::array()}};
  torch::Tensor teacher_logits;
  for (size_t m = 0; m < paths.size(); ++m) {
    reset_peak_rss();
    Candidate c = open_candidate(paths[m]);
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
    r["memory_mb"] = peak_rss_kb() / 1024.0;  // peak of this process while loading and running this model
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

std::string compare_table(const nlohmann::json& result) {
  std::string out = fmt::format("{:<44} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>11} {:>7}\n", "model", "acc %", "agree %", "KL",
                                "params", "nonzero", "file KB", "p50 ms", "p99 ms", "batch/s", "MB");
  for (const auto& m : result["models"]) {
    std::string name = m["path"].get<std::string>();
    if (name.size() > 42) name = "..." + name.substr(name.size() - 39);
    out += fmt::format("{:<44} {:>8.2f} {:>8.2f} {:>8.4f} {:>9} {:>9} {:>10.1f} {:>9.4f} {:>9.4f} {:>11.0f} {:>7.1f}\n", name,
                       100 * m["test_accuracy"].get<double>(), 100 * m["agreement_with_teacher"].get<double>(), m["kl_teacher_student"].get<double>(),
                       m["params"].get<int64_t>(), m["nonzero_params"].get<int64_t>(), m["file_bytes"].get<double>() / 1024,
                       m["latency_p50_ms"].get<double>(), m["latency_p99_ms"].get<double>(), m["throughput"].get<double>(), m["memory_mb"].get<double>());
  }
  return out;
}

namespace {

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : c == '"' ? "&quot;" : std::string(1, c);
  return o;
}

// "teacher" for runs/usps/teacher/checkpoints/last.pt; the file name otherwise.
std::string short_name(const std::string& path) {
  fs::path p(path);
  if (p.parent_path().filename() == "checkpoints") return p.parent_path().parent_path().filename().string();
  return p.filename().string();
}

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

// A scatter plot of accuracy (y) against a per-model quantity (x, log scale).
std::string scatter(const nlohmann::json& models, const std::string& key, const std::string& title, const std::string& unit, double scale) {
  const double W = 520, H = 320, L = 60, B = 40;
  double xmin = 1e300, xmax = -1e300, ymin = 1, ymax = 0;
  for (const auto& m : models) {
    double v = std::log10(std::max(1e-9, m[key].get<double>() * scale));
    xmin = std::min(xmin, v), xmax = std::max(xmax, v);
    ymin = std::min(ymin, m["test_accuracy"].get<double>()), ymax = std::max(ymax, m["test_accuracy"].get<double>());
  }
  xmin -= 0.2, xmax += 0.2, ymin -= 0.01, ymax += 0.005;
  auto px = [&](double v) { return L + (v - xmin) / (xmax - xmin) * (W - L - 20); };
  auto py = [&](double a) { return H - B - (a - ymin) / (ymax - ymin) * (H - B - 20); };
  std::string s = fmt::format("<svg class=\"chart\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\"><text x=\"{}\" y=\"14\" font-weight=\"bold\">{}</text>", W, H, W, H, L, esc(title));
  s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{}\" y1=\"20\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>", L, H - B, W - 20, H - B, L, L, H - B);
  s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"12\">{} (log scale)</text><text x=\"4\" y=\"{}\" font-size=\"12\">{:.1f}%</text><text x=\"4\" y=\"30\" font-size=\"12\">{:.1f}%</text>",
                   W / 2 - 40, H - 8, esc(unit), H - B, 100 * ymin, 100 * ymax);
  int k = 0;
  for (const auto& m : models) {
    double v = std::log10(std::max(1e-9, m[key].get<double>() * scale)), a = m["test_accuracy"].get<double>();
    std::string label = short_name(m["path"].get<std::string>());
    s += fmt::format("<circle class=\"point\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"6\" fill=\"{}\"><title>{}</title></circle><text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\">{}</text>",
                     px(v), py(a), kColors[k % 8], esc(m["path"].get<std::string>()), px(v) + 8, py(a) - 6, esc(label));
    ++k;
  }
  return s + "</svg>";
}

std::string per_class_bars(const nlohmann::json& models, int64_t classes) {
  const double W = 760, H = 260, L = 40, B = 30;
  double group = (W - L) / classes, bar = group * 0.8 / models.size();
  std::string s = fmt::format("<svg class=\"chart\" width=\"{}\" height=\"{}\"><text x=\"{}\" y=\"14\" font-weight=\"bold\">Per-class accuracy</text>", W, H, L);
  for (int64_t c = 0; c < classes; ++c) {
    s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"11\">{}</text>", L + c * group + group / 2 - 4, H - 8, c);
    int k = 0;
    for (const auto& m : models) {
      double a = m["per_class_accuracy"][c].get<double>(), h = a * (H - B - 30);
      s += fmt::format("<rect class=\"bar\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} class {}: {:.2f}%</title></rect>",
                       L + c * group + k * bar, H - B - h, bar, h, kColors[k % 8], esc(m["path"].get<std::string>()), c, 100 * a);
      ++k;
    }
  }
  return s + "</svg>";
}

std::string confusion_svg(const nlohmann::json& m, int64_t classes) {
  const double cell = 22, L = 20;
  double size = L + classes * cell + 10;
  std::string s = fmt::format("<svg class=\"chart\" width=\"{}\" height=\"{}\">", size, size + 10);
  for (int64_t a = 0; a < classes; ++a) {
    int64_t total = 0;
    for (int64_t b = 0; b < classes; ++b) total += m["confusion"][a][b].get<int64_t>();
    for (int64_t b = 0; b < classes; ++b) {
      double f = total ? m["confusion"][a][b].get<double>() / total : 0;
      s += fmt::format("<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" fill-opacity=\"{:.3f}\" stroke=\"#eee\"><title>true {} predicted {}: {}</title></rect>",
                       L + b * cell, L + a * cell, cell, cell, a == b ? "#1f77b4" : "#d62728", a == b ? std::max(0.08, f) : std::min(1.0, 5 * f), a, b,
                       m["confusion"][a][b].get<int64_t>());
    }
  }
  return s + "</svg>";
}

std::string curves(const nlohmann::json& models) {
  const double W = 760, H = 280, L = 60, B = 40;
  int64_t max_epoch = 1;
  double ymin = 1, ymax = 0;
  for (const auto& m : models)
    for (const auto& p : m.value("training_curve", nlohmann::json::array())) {
      max_epoch = std::max<int64_t>(max_epoch, p["epoch"].get<int64_t>());
      ymin = std::min(ymin, p["test_accuracy"].get<double>()), ymax = std::max(ymax, p["test_accuracy"].get<double>());
    }
  if (ymin > ymax) ymin = 0, ymax = 1;
  std::string s = fmt::format("<svg class=\"chart\" width=\"{}\" height=\"{}\"><text x=\"{}\" y=\"14\" font-weight=\"bold\">Test accuracy per epoch of the runs the models came from</text>", W, H, L);
  s += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">epoch (1..{})</text><text x=\"4\" y=\"{}\" font-size=\"12\">{:.1f}%</text><text x=\"4\" y=\"30\" font-size=\"12\">{:.1f}%</text>",
                   L, H - B, W - 20, H - B, W / 2, H - 8, max_epoch, H - B, 100 * ymin, 100 * ymax);
  int k = 0;
  for (const auto& m : models) {
    std::string pts;
    for (const auto& p : m.value("training_curve", nlohmann::json::array())) {
      double x = L + (p["epoch"].get<double>() - 1) / std::max<int64_t>(1, max_epoch - 1) * (W - L - 20);
      double y = H - B - (p["test_accuracy"].get<double>() - ymin) / std::max(1e-9, ymax - ymin) * (H - B - 30);
      pts += fmt::format("{:.1f},{:.1f} ", x, y);
    }
    if (!pts.empty()) s += fmt::format("<polyline class=\"curve\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>", kColors[k % 8], pts, esc(m["path"].get<std::string>()));
    ++k;
  }
  return s + "</svg>";
}

}  // namespace

std::string compare_html(const nlohmann::json& r) {
  const auto& models = r["models"];
  int64_t classes = r["classes"].get<int64_t>();
  std::string h = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>shrink compare</title><style>"
                  "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
                  "td:first-child,th:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:24px}.swatch{display:inline-block;width:12px;height:12px}"
                  "</style></head><body>";
  h += fmt::format("<h1>Teacher vs students</h1><p>Test data: {} ({} examples). Every number was measured in the same run.</p>", esc(r["data"].get<std::string>()),
                   r["examples"].get<int64_t>());
  h += "<table id=\"results\"><tr><th>model</th><th>kind</th><th>accuracy %</th><th>agreement %</th><th>KL(teacher||model)</th><th>params</th><th>nonzero</th>"
       "<th>file KB</th><th>MACs</th><th>p50 ms</th><th>p99 ms</th><th>batch/s</th><th>memory MB</th></tr>";
  int k = 0;
  for (const auto& m : models) {
    h += fmt::format("<tr><td><span class=\"swatch\" style=\"background:{}\"></span> {} ({})</td><td>{}</td><td>{:.2f}</td><td>{:.2f}</td><td>{:.4f}</td><td>{}</td><td>{}</td><td>{:.1f}</td><td>{}</td><td>{:.4f}</td><td>{:.4f}</td><td>{:.0f}</td><td>{:.1f}</td></tr>",
                     kColors[k++ % 8], esc(m["path"].get<std::string>()), m["role"].get<std::string>(), esc(m["kind"].get<std::string>()), 100 * m["test_accuracy"].get<double>(),
                     100 * m["agreement_with_teacher"].get<double>(), m["kl_teacher_student"].get<double>(), m["params"].get<int64_t>(),
                     m["nonzero_params"].get<int64_t>(), m["file_bytes"].get<double>() / 1024, m.contains("macs") ? std::to_string(m["macs"].get<int64_t>()) : "-",
                     m["latency_p50_ms"].get<double>(), m["latency_p99_ms"].get<double>(), m["throughput"].get<double>(), m["memory_mb"].get<double>());
  }
  h += "</table>";
  // The headline: the last student against the teacher.
  const auto& teacher = models[0];
  const auto& last = models[models.size() - 1];
  h += fmt::format("<p id=\"headline\">{}: {:.2f}% test accuracy ({:+.2f} points against the teacher's {:.2f}%), {:.1f} KB, "
                   "{:.0f}x smaller than the teacher's {:.0f} KB of fp32 weights (a lower bound of any TorchScript file of it), "
                   "{:.1f}x lower batch-1 latency.</p>",
                   esc(short_name(last["path"].get<std::string>())), 100 * last["test_accuracy"].get<double>(),
                   100 * (last["test_accuracy"].get<double>() - teacher["test_accuracy"].get<double>()), 100 * teacher["test_accuracy"].get<double>(),
                   last["file_bytes"].get<double>() / 1024, 4.0 * teacher["params"].get<double>() / last["file_bytes"].get<double>(),
                   4.0 * teacher["params"].get<double>() / 1024, teacher["latency_p50_ms"].get<double>() / last["latency_p50_ms"].get<double>());
  h += "<div class=\"charts\">";
  h += scatter(models, "file_bytes", "Accuracy vs size", "model file KB", 1.0 / 1024);
  h += scatter(models, "latency_p50_ms", "Accuracy vs batch-1 latency", "p50 latency ms", 1.0);
  h += "</div>" + per_class_bars(models, classes) + "<h2>Confusion matrices (rows: true class, columns: predicted)</h2><div class=\"charts\">";
  for (const auto& m : models) h += fmt::format("<div><p>{}</p>{}</div>", esc(short_name(m["path"].get<std::string>())), confusion_svg(m, classes));
  h += "</div>" + curves(models) + "</body></html>\n";
  return h;
}

}  // namespace shrink
