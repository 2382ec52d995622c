// compare's report: the table printed at the end, the HTML page, and `shrink compare`'s files.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "jobs/compare.h"
#include "train/run_log.h"  // write_json_atomic

namespace shrink {
namespace fs = std::filesystem;

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

std::string compare_and_write(const CompareOptions& options, const std::string& json_out, const std::string& html_out) {
  auto result = compare_models(options);
  std::string printed = compare_table(result);
  write_json_atomic(json_out, result);
  printed += "wrote " + json_out;
  if (!html_out.empty()) {
    write_file_atomic(html_out, compare_html(result));
    printed += " and " + html_out;
  }
  return printed + "\n";
}

}  // namespace shrink
