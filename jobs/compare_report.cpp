// compare's report: the table printed at the end, the HTML page, and `shrink compare`'s files.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>

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

std::string shortened(const std::string& s, size_t most) { return s.size() <= most ? s : s.substr(0, most - 1) + "\u2026"; }

// A chart's frame: the plotting area inside W x H, the rest for the title, axis labels, ticks and legend.
struct Frame {
  double W, H, left, right, top, bottom;  // margins around the plotting area
  double x0() const { return left; }
  double x1() const { return W - right; }
  double y0() const { return H - bottom; }  // the x axis
  double y1() const { return top; }
};

std::string open_chart(const Frame& f, const std::string& title) {
  return fmt::format("<svg class=\"chart\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\"><text x=\"{}\" y=\"16\" font-weight=\"bold\">{}</text>", f.W, f.H, f.W,
                     f.H, f.left, esc(title));
}

// Both axes with their labels (the y label turned along its axis).
std::string axes(const Frame& f, const std::string& x_label, const std::string& y_label) {
  return fmt::format("<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"#333\"/><line x1=\"{0}\" y1=\"{3}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#333\"/>"
                     "<text class=\"axis-label\" x=\"{4}\" y=\"{5}\" font-size=\"12\" text-anchor=\"middle\">{6}</text>"
                     "<text class=\"axis-label\" transform=\"translate(14 {7}) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\">{8}</text>",
                     f.x0(), f.x1(), f.y0(), f.y1(), (f.x0() + f.x1()) / 2, f.H - 6, esc(x_label), (f.y0() + f.y1()) / 2, esc(y_label));
}

std::string x_tick(double x, double y, const std::string& text) {
  return fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#333\"/><text x=\"{0:.1f}\" y=\"{3}\" font-size=\"11\" text-anchor=\"middle\">{4}</text>",
                     x, y, y + 4, y + 16, esc(text));
}

std::string y_tick(double x, double y, const std::string& text) {
  return fmt::format("<line x1=\"{0}\" y1=\"{2:.1f}\" x2=\"{1}\" y2=\"{2:.1f}\" stroke=\"#333\"/><text x=\"{3}\" y=\"{4:.1f}\" font-size=\"11\" text-anchor=\"end\">{5}</text>",
                     x - 4, x, y, x - 6, y + 4, esc(text));
}

// One entry per model, stacked from (x, y): its colour and short name.
std::string legend(const nlohmann::json& models, double x, double y) {
  std::string s = "<g class=\"legend\">";
  int k = 0;
  for (const auto& m : models) {
    s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"12\">{}<title>{}</title></text>", x, y + 18 * k,
                     kColors[k % 8], x + 18, y + 18 * k + 11, esc(shortened(short_name(m["path"].get<std::string>()), 20)), esc(m["path"].get<std::string>()));
    ++k;
  }
  return s + "</g>";
}

// Ticks of a log-scale x axis spanning 10^xmin..10^xmax (0.2 of margin on each side): powers of
// ten, or else the smallest and largest values.
std::string log_x_ticks(const Frame& f, double xmin, double xmax, const std::function<double(double)>& px) {
  std::string s;
  if (std::floor(xmax) - std::ceil(xmin) >= 1) {
    for (double d = std::ceil(xmin); d <= xmax; ++d) s += x_tick(px(d), f.y0(), fmt::format("{:g}", std::pow(10.0, d)));
  } else {
    s += x_tick(px(xmin + 0.2), f.y0(), fmt::format("{:.3g}", std::pow(10.0, xmin + 0.2)));
    if (xmax - xmin > 0.6) s += x_tick(px(xmax - 0.2), f.y0(), fmt::format("{:.3g}", std::pow(10.0, xmax - 0.2)));
  }
  return s;
}

// Accuracy (y) against a per-model quantity (x, log scale, ticks at powers of ten).
std::string scatter(const nlohmann::json& models, const std::string& key, const std::string& title, const std::string& unit, double scale) {
  const Frame f{560, 330, 64, 180, 30, 46};
  auto value = [&](const nlohmann::json& m) { return std::log10(std::max(1e-9, m[key].get<double>() * scale)); };
  double xmin = 1e300, xmax = -1e300, ymin = 1, ymax = 0;
  for (const auto& m : models) {
    xmin = std::min(xmin, value(m)), xmax = std::max(xmax, value(m));
    ymin = std::min(ymin, m["test_accuracy"].get<double>()), ymax = std::max(ymax, m["test_accuracy"].get<double>());
  }
  xmin -= 0.2, xmax += 0.2, ymin -= 0.01, ymax += 0.005;
  auto px = [&](double v) { return f.x0() + (v - xmin) / (xmax - xmin) * (f.x1() - f.x0()); };
  auto py = [&](double a) { return f.y0() - (a - ymin) / (ymax - ymin) * (f.y0() - f.y1()); };
  std::string s = open_chart(f, title) + axes(f, unit + " (log scale)", "test accuracy %") + log_x_ticks(f, xmin, xmax, px);
  for (double a : {ymin, (ymin + ymax) / 2, ymax}) s += y_tick(f.x0(), py(a), fmt::format("{:.1f}", 100 * a));
  int k = 0;
  for (const auto& m : models)
    s += fmt::format("<circle class=\"point\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"6\" fill=\"{}\" fill-opacity=\"0.85\"><title>{}: {:.2f}%</title></circle>", px(value(m)),
                     py(m["test_accuracy"].get<double>()), kColors[k++ % 8], esc(m["path"].get<std::string>()), 100 * m["test_accuracy"].get<double>());
  return s + legend(models, f.x1() + 16, f.y1()) + "</svg>";
}

std::vector<std::string> class_labels(const nlohmann::json& r, int64_t classes) {
  auto names = r.value("class_names", std::vector<std::string>{});
  if (static_cast<int64_t>(names.size()) != classes) {
    names.clear();
    for (int64_t c = 0; c < classes; ++c) names.push_back(std::to_string(c));
  }
  return names;
}

std::string per_class_bars(const nlohmann::json& models, const std::vector<std::string>& labels) {
  const int64_t classes = static_cast<int64_t>(labels.size());
  const Frame f{1180, 290, 64, 180, 30, 46};
  const double group = (f.x1() - f.x0()) / classes, bar = group * 0.8 / models.size();
  const int64_t every = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(80 / group)));  // labels 80 px apart at least
  std::string s = open_chart(f, "Per-class test accuracy") + axes(f, "class", "accuracy %");
  for (double a : {0.0, 0.5, 1.0}) s += y_tick(f.x0(), f.y0() - a * (f.y0() - f.y1()), fmt::format("{:.0f}", 100 * a));
  for (int64_t c = 0; c < classes; ++c) {
    if (c % every == 0) s += x_tick(f.x0() + (c + 0.5) * group, f.y0(), shortened(labels[c], 12));
    int k = 0;
    for (const auto& m : models) {
      double a = m["per_class_accuracy"][c].get<double>(), h = a * (f.y0() - f.y1());
      s += fmt::format("<rect class=\"bar\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} {}: {:.2f}%</title></rect>",
                       f.x0() + c * group + group * 0.1 + k * bar, f.y0() - h, bar, h, kColors[k % 8], esc(m["path"].get<std::string>()), esc(labels[c]), 100 * a);
      ++k;
    }
  }
  return s + legend(models, f.x1() + 16, f.y1()) + "</svg>";
}

// Rows: true class, columns: predicted; blue shades the diagonal by its share of the row, red the
// confusions (five times as strong, so that rare ones show).
std::string confusion_svg(const nlohmann::json& m, const std::vector<std::string>& labels) {
  const int64_t classes = static_cast<int64_t>(labels.size());
  const double cell = std::min(22.0, 330.0 / classes), side = classes * cell;
  const Frame f{std::max(300.0, 34 + side + 10), 30 + side + 70, 34, 10, 30, 70};
  std::string s = open_chart(f, shortened(short_name(m["path"].get<std::string>()), 36)) + axes(f, "predicted class", "true class");
  for (int64_t a = 0; a < classes; ++a) {
    int64_t total = 0;
    for (int64_t b = 0; b < classes; ++b) total += m["confusion"][a][b].get<int64_t>();
    for (int64_t b = 0; b < classes; ++b) {
      double share = total ? m["confusion"][a][b].get<double>() / total : 0;
      s += fmt::format("<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" fill-opacity=\"{:.3f}\" stroke=\"#eee\"><title>true {} predicted {}: {}</title></rect>",
                       f.x0() + b * cell, f.y1() + a * cell, cell, cell, a == b ? "#1f77b4" : "#d62728", a == b ? std::max(0.08, share) : std::min(1.0, 5 * share),
                       esc(labels[a]), esc(labels[b]), m["confusion"][a][b].get<int64_t>());
    }
  }
  s += fmt::format("<g class=\"legend\"><rect x=\"{0}\" y=\"{1}\" width=\"12\" height=\"12\" fill=\"#1f77b4\"/><text x=\"{2}\" y=\"{3}\" font-size=\"11\">right (share of the row)</text>"
                   "<rect x=\"{0}\" y=\"{4}\" width=\"12\" height=\"12\" fill=\"#d62728\"/><text x=\"{2}\" y=\"{5}\" font-size=\"11\">wrong (5x the share)</text></g>",
                   f.x0(), f.y0() + 8, f.x0() + 18, f.y0() + 19, f.y0() + 26, f.y0() + 37);
  return s + "</svg>";
}

std::string curves(const nlohmann::json& models) {
  const Frame f{1180, 300, 64, 180, 30, 46};
  int64_t max_epoch = 1;
  double ymin = 1, ymax = 0;
  for (const auto& m : models)
    for (const auto& p : m.value("training_curve", nlohmann::json::array())) {
      max_epoch = std::max<int64_t>(max_epoch, p["epoch"].get<int64_t>());
      ymin = std::min(ymin, p["test_accuracy"].get<double>()), ymax = std::max(ymax, p["test_accuracy"].get<double>());
    }
  if (ymin >= ymax) ymin = std::min(ymin, ymax) - 0.01, ymax = ymin + 0.02;
  auto px = [&](double epoch) { return f.x0() + (epoch - 1) / std::max<int64_t>(1, max_epoch - 1) * (f.x1() - f.x0()); };
  auto py = [&](double a) { return f.y0() - (a - ymin) / (ymax - ymin) * (f.y0() - f.y1()); };
  std::string s = open_chart(f, "Test accuracy per epoch of the runs the models came from") + axes(f, "epoch", "test accuracy %");
  const int64_t every = std::max<int64_t>(1, (max_epoch + 9) / 10);
  for (int64_t e = 1; e <= max_epoch; e += every) s += x_tick(px(e), f.y0(), std::to_string(e));
  for (double a : {ymin, (ymin + ymax) / 2, ymax}) s += y_tick(f.x0(), py(a), fmt::format("{:.1f}", 100 * a));
  int k = 0;
  for (const auto& m : models) {
    std::string pts;
    for (const auto& p : m.value("training_curve", nlohmann::json::array()))
      pts += fmt::format("{:.1f},{:.1f} ", px(p["epoch"].get<double>()), py(p["test_accuracy"].get<double>()));
    if (!pts.empty())
      s += fmt::format("<polyline class=\"curve\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>", kColors[k % 8], pts,
                       esc(m["path"].get<std::string>()));
    ++k;
  }
  return s + legend(models, f.x1() + 16, f.y1()) + "</svg>";
}

// The budget search's candidates: validation accuracy (y) against file size or latency (x, log
// scale); those within the budget filled, the others hollow, the frontier (no candidate both
// cheaper and more accurate) joined, the chosen one ringed, the budget's floor dashed.
std::string frontier(const nlohmann::json& search, const std::string& key, const std::string& title, const std::string& unit, double scale) {
  const Frame f{560, 330, 64, 180, 30, 46};
  const auto& cands = search["candidates"];
  const double floor = search["teacher_val_accuracy"].get<double>() - search["budget"].get<double>() / 100;
  auto value = [&](const nlohmann::json& c) { return std::log10(std::max(1e-9, c[key].get<double>() * scale)); };
  double xmin = 1e300, xmax = -1e300, ymin = floor, ymax = search["teacher_val_accuracy"].get<double>();
  for (const auto& c : cands) {
    xmin = std::min(xmin, value(c)), xmax = std::max(xmax, value(c));
    ymin = std::min(ymin, c["val_accuracy"].get<double>()), ymax = std::max(ymax, c["val_accuracy"].get<double>());
  }
  xmin -= 0.2, xmax += 0.2, ymin -= 0.005, ymax += 0.005;
  auto px = [&](double v) { return f.x0() + (v - xmin) / (xmax - xmin) * (f.x1() - f.x0()); };
  auto py = [&](double a) { return f.y0() - (a - ymin) / (ymax - ymin) * (f.y0() - f.y1()); };
  std::string s = open_chart(f, title) + axes(f, unit + " (log scale)", "validation accuracy %") + log_x_ticks(f, xmin, xmax, px);
  for (double a : {ymin, (ymin + ymax) / 2, ymax}) s += y_tick(f.x0(), py(a), fmt::format("{:.1f}", 100 * a));
  s += fmt::format("<line class=\"budget-floor\" x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#d62728\" stroke-dasharray=\"5,4\"/>", f.x0(),
                   py(floor), f.x1(), py(floor));
  std::vector<const nlohmann::json*> order;
  for (const auto& c : cands) order.push_back(&c);
  std::sort(order.begin(), order.end(), [&](auto* a, auto* b) { return value(*a) < value(*b); });
  std::string line;
  double best = -1;
  for (auto* c : order)
    if ((*c)["val_accuracy"].get<double>() > best) best = (*c)["val_accuracy"].get<double>(), line += fmt::format("{:.1f},{:.1f} ", px(value(*c)), py(best));
  s += fmt::format("<polyline class=\"frontier\" fill=\"none\" stroke=\"#888\" points=\"{}\"/>", line);
  for (const auto& c : cands) {
    const bool within = c["within_budget"].get<bool>(), chosen = c["name"] == search["chosen"];
    s += fmt::format("<circle class=\"point\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"{}\" stroke=\"#2ca02c\" stroke-width=\"2\"><title>{}: {:.2f}%, {:.3g} {}</title></circle>",
                     px(value(c)), py(c["val_accuracy"].get<double>()), within ? "#2ca02c" : "none", esc(c["name"].get<std::string>()),
                     100 * c["val_accuracy"].get<double>(), c[key].get<double>() * scale, esc(unit));
    if (chosen)
      s += fmt::format("<circle class=\"chosen\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"10\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>", px(value(c)),
                       py(c["val_accuracy"].get<double>()));
  }
  const double lx = f.x1() + 16, ly = f.y1();
  s += fmt::format("<g class=\"legend\"><circle cx=\"{0}\" cy=\"{1}\" r=\"5\" fill=\"#2ca02c\"/><text x=\"{2}\" y=\"{3}\" font-size=\"12\">within the budget</text>"
                   "<circle cx=\"{0}\" cy=\"{4}\" r=\"5\" fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"2\"/><text x=\"{2}\" y=\"{5}\" font-size=\"12\">over it</text>"
                   "<circle cx=\"{0}\" cy=\"{6}\" r=\"9\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/><text x=\"{2}\" y=\"{7}\" font-size=\"12\">chosen</text>"
                   "<line x1=\"{8}\" y1=\"{9}\" x2=\"{10}\" y2=\"{9}\" stroke=\"#d62728\" stroke-dasharray=\"5,4\"/><text x=\"{2}\" y=\"{11}\" font-size=\"12\">teacher - budget</text></g>",
                   lx + 6, ly + 6, lx + 18, ly + 10, ly + 26, ly + 30, ly + 48, ly + 52, lx, ly + 68, lx + 12, ly + 72);
  return s + "</svg>";
}

// The budget search's section: what it was asked, each candidate, the frontier charts.
std::string budget_section(const nlohmann::json& search) {
  std::string h = fmt::format("<h2>Accuracy budget search</h2><p id=\"budget\">Budget: {:g} points below the teacher's {:.2f}% on {} validation examples held out of the "
                              "training data (the test set plays no part in the choice); objective: {}. {}</p>",
                              search["budget"].get<double>(), 100 * search["teacher_val_accuracy"].get<double>(), search["validation_examples"].get<int64_t>(),
                              esc(search["objective"].get<std::string>()),
                              search["budget_met"].get<bool>() ? "Chosen: " + esc(search["chosen"].get<std::string>()) + "."
                                                               : "The budget cannot be met; the most accurate candidate, " + esc(search["chosen"].get<std::string>()) + ", is kept.");
  h += "<table id=\"candidates\"><tr><th>candidate</th><th>precision</th><th>sparsity %</th><th>validation %</th><th>vs teacher</th><th>file KB</th><th>p50 ms</th>"
       "<th>within</th></tr>";
  for (const auto& c : search["candidates"]) {
    std::string precision = c["precision"].get<std::string>();
    if (precision == "mixed") precision += " (float: " + c["float_layers"].dump() + ")";
    h += fmt::format("<tr><td>{}{}</td><td>{}</td><td>{:.1f}</td><td>{:.2f}</td><td>{:+.2f}</td><td>{:.1f}</td><td>{:.4f}</td><td>{}</td></tr>",
                     esc(c["name"].get<std::string>()), c["name"] == search["chosen"] ? " (chosen)" : "", esc(precision), 100 * c["sparsity"].get<double>(),
                     100 * c["val_accuracy"].get<double>(), 100 * (c["val_accuracy"].get<double>() - search["teacher_val_accuracy"].get<double>()),
                     c["file_bytes"].get<double>() / 1024, c["latency_ms"].get<double>(), c["within_budget"].get<bool>() ? "yes" : "no");
  }
  h += "</table><div class=\"charts\">";
  h += frontier(search, "file_bytes", "Candidates: accuracy vs size", "model file KB", 1.0 / 1024);
  h += frontier(search, "latency_ms", "Candidates: accuracy vs batch-1 latency", "p50 latency ms", 1.0);
  return h + "</div>";
}

}  // namespace

std::string compare_html(const nlohmann::json& r) {
  const auto& models = r["models"];
  const auto labels = class_labels(r, r["classes"].get<int64_t>());
  std::string h = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>shrink compare</title><style>"
                  "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:13px}"
                  "td,th{border:1px solid #ccc;padding:4px 6px;text-align:right;white-space:nowrap}th{white-space:normal}"
                  "td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){text-align:left;white-space:normal}td:first-child{max-width:260px}"
                  ".path{font-size:11px;color:#666;overflow-wrap:anywhere}.charts{display:flex;flex-wrap:wrap;gap:24px}"
                  ".swatch{display:inline-block;width:12px;height:12px}p{max-width:1180px}"
                  "</style></head><body>";
  h += fmt::format("<h1>Teacher vs students</h1><p>Test data: {} ({} examples). Every number was measured in the same run.</p>", esc(r["data"].get<std::string>()),
                   r["examples"].get<int64_t>());
  h += "<table id=\"results\"><tr><th>model</th><th>kind</th><th>accuracy %</th><th>agreement %</th><th>KL (teacher || model)</th><th>params</th><th>nonzero</th>"
       "<th>file KB</th><th>MACs</th><th>p50 ms</th><th>p99 ms</th><th>batch/s</th><th>peak memory MB</th></tr>";
  int k = 0;
  for (const auto& m : models) {
    const std::string path = m["path"].get<std::string>();
    h += fmt::format("<tr><td><span class=\"swatch\" style=\"background:{}\"></span> {} ({})<div class=\"path\">{}</div></td><td>{}</td><td>{:.2f}</td><td>{:.2f}</td><td>{:.4f}</td>"
                     "<td>{}</td><td>{}</td><td>{:.1f}</td><td>{}</td><td>{:.4f}</td><td>{:.4f}</td><td>{:.0f}</td><td>{:.1f}{}</td></tr>",
                     kColors[k++ % 8], esc(short_name(path)), m["role"].get<std::string>(), esc(path), esc(m["kind"].get<std::string>()),
                     100 * m["test_accuracy"].get<double>(), 100 * m["agreement_with_teacher"].get<double>(), m["kl_teacher_student"].get<double>(),
                     m["params"].get<int64_t>(), m["nonzero_params"].get<int64_t>(), m["file_bytes"].get<double>() / 1024,
                     m.contains("macs") ? std::to_string(m["macs"].get<int64_t>()) : "-", m["latency_p50_ms"].get<double>(), m["latency_p99_ms"].get<double>(),
                     m["throughput"].get<double>(), m["memory_mb"].get<double>(), m.value("memory_of", "") == "shrink-run" ? " *" : "");
  }
  h += "</table><p>Peak memory: * the runtime alone, in a shrink-run process predicting one batch (what deployment needs); otherwise the "
       "comparing process, LibTorch included, while it loaded and ran the model.</p>";
  // The headline: the last student against the teacher.
  const auto& teacher = models[0];
  const auto& last = models[models.size() - 1];
  h += fmt::format("<p id=\"headline\">{}: {:.2f}% test accuracy ({:+.2f} points against the teacher's {:.2f}%), {:.1f} KB, "
                   "{:.1f}x smaller than the teacher's {:.1f} KB of fp32 weights (a lower bound of any TorchScript file of it), "
                   "{:.1f}x lower batch-1 latency.</p>",
                   esc(short_name(last["path"].get<std::string>())), 100 * last["test_accuracy"].get<double>(),
                   100 * (last["test_accuracy"].get<double>() - teacher["test_accuracy"].get<double>()), 100 * teacher["test_accuracy"].get<double>(),
                   last["file_bytes"].get<double>() / 1024, 4.0 * teacher["params"].get<double>() / last["file_bytes"].get<double>(),
                   4.0 * teacher["params"].get<double>() / 1024, teacher["latency_p50_ms"].get<double>() / last["latency_p50_ms"].get<double>());
  h += "<div class=\"charts\">";
  h += scatter(models, "file_bytes", "Accuracy vs size", "model file KB", 1.0 / 1024);
  h += scatter(models, "latency_p50_ms", "Accuracy vs batch-1 latency", "p50 latency ms", 1.0);
  h += per_class_bars(models, labels) + "</div><h2>Confusion matrices</h2><div class=\"charts\">";
  for (const auto& m : models) h += confusion_svg(m, labels);
  h += "</div><div class=\"charts\">" + curves(models) + "</div>";
  if (r.contains("budget_search")) h += budget_section(r["budget_search"]);
  h += "</body></html>\n";
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
