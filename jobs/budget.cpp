#include "jobs/budget.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "common/error.h"
#include "export/export.h"
#include "quantize/quantize.h"
#include "shrink/runtime.hpp"
#include "spec/match.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/masks.h"
#include "train/run_log.h"

namespace shrink {
namespace fs = std::filesystem;

PruneSearch::PruneSearch(double reference, double budget_points, Settings settings)
    : reference_(reference), budget_(budget_points), settings_(settings), step_(settings.first_step) {}

std::optional<double> PruneSearch::next() const {
  if (rounds_ >= settings_.max_rounds || step_ < settings_.min_step) return std::nullopt;
  return accepted_kept_ * (1 - step_);
}

void PruneSearch::record(double kept, double val_accuracy) {
  ++rounds_;
  if (within_budget(reference_, budget_, val_accuracy)) {
    accepted_kept_ = kept;
    accepted_round_ = rounds_;
  } else {
    step_ /= 2;
  }
}

std::optional<size_t> choose_float_layers(size_t layers, const std::function<double(size_t)>& estimate, double reference, double budget_points) {
  for (size_t k = 0; k <= layers; ++k)
    if (within_budget(reference, budget_points, estimate(k))) return k;
  return std::nullopt;
}

nlohmann::json BudgetCandidate::to_json() const {
  return {{"name", name},         {"checkpoint", checkpoint}, {"stage", stage},           {"precision", precision},
          {"float_layers", float_layers}, {"kept", kept},      {"sparsity", sparsity},     {"val_accuracy", val_accuracy},
          {"file_bytes", file_bytes}, {"latency_ms", latency_ms}, {"within_budget", within}};
}

BudgetCandidate BudgetCandidate::from_json(const nlohmann::json& j) {
  BudgetCandidate c;
  c.name = j.at("name"), c.checkpoint = j.at("checkpoint"), c.stage = j.at("stage"), c.precision = j.at("precision");
  c.float_layers = j.at("float_layers").get<std::vector<std::string>>();
  c.kept = j.at("kept"), c.sparsity = j.at("sparsity"), c.val_accuracy = j.at("val_accuracy");
  c.file_bytes = j.at("file_bytes"), c.latency_ms = j.at("latency_ms"), c.within = j.at("within_budget");
  return c;
}

size_t choose_candidate(const std::vector<BudgetCandidate>& candidates, const std::string& objective, bool* met) {
  if (candidates.empty()) throw std::logic_error("choose_candidate: no candidates");
  auto cost = [&](const BudgetCandidate& c) { return objective == "latency" ? c.latency_ms : static_cast<double>(c.file_bytes); };
  std::optional<size_t> best;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const auto& c = candidates[i];
    if (!c.within) continue;
    if (!best || cost(c) < cost(candidates[*best]) || (cost(c) == cost(candidates[*best]) && c.val_accuracy > candidates[*best].val_accuracy)) best = i;
  }
  if (met) *met = best.has_value();
  if (best) return *best;
  size_t most = 0;
  for (size_t i = 1; i < candidates.size(); ++i)
    if (candidates[i].val_accuracy > candidates[most].val_accuracy) most = i;
  return most;
}

void add_budget_options(Keys& keys) {
  BudgetSettings b;
  // clang-format off
  keys.add("pipeline.budget", b.budget, Rule::real(-1, 100), "points of accuracy the final student may lose against the teacher, measured on a validation "
                                                             "split held out of the training data; the pipeline then searches how far to prune and what to "
                                                             "quantize (docs/pipeline.md); -1: off, the stages' own targets")
      .add("pipeline.objective", b.objective, Rule::choice({"size", "latency"}), "budget: the smallest file (unstructured pruning) or the lowest "
                                                                                  "batch-1 latency on the runtime (structured pruning)")
      .add("pipeline.val_split", b.val_split, Rule::real(0, 1, true, true), "budget: share of the training data every stage holds out for validation")
      .add("pipeline.max_rounds", int64_t(b.search.max_rounds), Rule::integer(1, 50), "budget: most pruning rounds (each train.epochs of the prune config)")
      .add("pipeline.first_step", b.search.first_step, Rule::real(0, 1, true, true), "budget: share of the weights the first pruning round removes")
      .add("pipeline.min_step", b.search.min_step, Rule::real(0, 1, true, true), "budget: the search stops when its step (halved at each round over "
                                                                               "the budget) falls below this");
  // clang-format on
}

BudgetSettings BudgetSettings::read(const Config& c) {
  BudgetSettings b;
  b.budget = c.get<double>("pipeline.budget");
  if (b.budget < 0 && b.budget != -1) c.fail("pipeline.budget", "give the points the student may lose (>= 0), or -1 for off");
  b.objective = c.get<std::string>("pipeline.objective");
  b.val_split = c.get<double>("pipeline.val_split");
  b.search.max_rounds = static_cast<int>(c.get<int64_t>("pipeline.max_rounds"));
  b.search.first_step = c.get<double>("pipeline.first_step");
  b.search.min_step = c.get<double>("pipeline.min_step");
  b.threads = static_cast<int>(c.get<int64_t>("pipeline.threads"));
  return b;
}

namespace {

// Median batch-1 latency of a model file on the runtime, on a constant input.
double runtime_latency_ms(const std::string& path, int threads) {
  using clock = std::chrono::steady_clock;
  rt::Model model = rt::Model::load(path, threads);
  int64_t n = 1;
  for (int64_t d : model.input_shape()) n *= d;
  std::vector<float> x(n, 0.5f);
  model.predict(x.data(), 1);
  std::vector<double> ms;
  const auto until = clock::now() + std::chrono::milliseconds(300);
  while (ms.size() < 30 || (clock::now() < until && ms.size() < 5000)) {
    auto t0 = clock::now();
    model.predict(x.data(), 1);
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

std::string comma_list(const std::vector<std::string>& names) { return fmt::format("{}", fmt::join(names, ",")); }

// Runs a job in `dir` unless an earlier run finished it there (then reads its summary): a
// search's rounds are folders of their own, so an interrupted search replays what it decided. A
// folder left by a search that asked for something else there (another budget, say), or whose
// question is not known, is redone: `DIR.asked.json`, beside the folder (a job starting afresh
// empties its folder), keeps what the search asked of it (`asked`: the values it set).
nlohmann::json run_or_read(const JobKind& kind, Config config, const std::string& dir, const nlohmann::json& asked, bool quiet) {
  const std::string record = dir + ".asked.json";
  if (!fs::exists(record) || nlohmann::json::parse(read_text_file(record), nullptr, false) != asked) {
    fs::remove_all(dir);
    fs::create_directories(fs::path(dir).parent_path());
    write_json_atomic(record, asked);
  }
  if (RunDir::finished(dir)) return nlohmann::json::parse(read_text_file(dir + "/summary.json"));
  config.set("job.out", dir, "budget search: the round's folder");
  RunOptions options;
  options.quiet = quiet;
  options.resume = RunDir::holds_checkpoint(dir);
  options.overwrite = !options.resume;
  return kind.run(config, options).summary;
}

}  // namespace

struct BudgetSearch::Opened {
  Data data;
};

BudgetSearch::BudgetSearch(BudgetSettings settings, std::string root, RunLog& log, bool quiet)
    : s_(std::move(settings)), root_(std::move(root)), log_(log), quiet_(quiet) {}

BudgetSearch::~BudgetSearch() = default;

double BudgetSearch::val_accuracy(LoadedModel& loaded) {
  loaded.model->eval();
  return evaluate(loaded.model, opened_->data.val, normalization_of(loaded.meta), 512).accuracy;
}

BudgetCandidate BudgetSearch::measure(const std::string& name, const std::string& stage, const std::string& checkpoint) {
  BudgetCandidate c;
  c.name = name, c.stage = stage, c.checkpoint = checkpoint;
  LoadedModel loaded = load_checkpoint(checkpoint);
  c.val_accuracy = val_accuracy(loaded);
  c.sparsity = weight_sparsity(loaded.model).sparsity();
  const std::string file = fmt::format("{}/candidates/{}.shrink", root_, name);
  fs::create_directories(fs::path(file).parent_path());
  ExportOptions without_test_accuracy;
  without_test_accuracy.provenance_accuracy = false;
  export_model(checkpoint, file, without_test_accuracy);
  c.file_bytes = static_cast<int64_t>(fs::file_size(file));
  c.within = within_budget(reference_, s_.budget, c.val_accuracy);
  return c;
}

std::string BudgetSearch::describe(const BudgetCandidate& c) const {
  return fmt::format("{}: validation {:.2f}% ({:+.2f} points against the teacher, budget {:g}), sparsity {:.1f}%, {}, {:.1f} KB{}", c.name,
                     100 * c.val_accuracy, 100 * (c.val_accuracy - reference_), s_.budget, 100 * c.sparsity,
                     c.precision == "mixed" ? "int8 with " + comma_list(c.float_layers) + " in float" : c.precision, c.file_bytes / 1024.0,
                     c.latency_ms > 0 ? fmt::format(", {:.3f} ms", c.latency_ms) : "");
}

void BudgetSearch::start(const JobConfig& job, const std::string& teacher, const std::string& student, const std::string& name) {
  opened_ = std::make_unique<Opened>(Opened{open_data(job.data)});
  if (!opened_->data.val || opened_->data.val->size() == 0) throw UserError("pipeline.val_split: the validation split is empty; give a larger share");
  LoadedModel loaded_teacher = load_checkpoint(teacher);
  reference_ = val_accuracy(loaded_teacher);
  candidates_ = {measure(name, name == "distilled" ? "distill" : "teacher", student)};
  accepted_ = {candidates_[0]};
  log_.line(fmt::format("budget: {:g} points below the teacher, on {} validation examples held out of the training data; teacher {:.2f}%; {}",
                        s_.budget, opened_->data.val->size(), 100 * reference_, describe(candidates_[0])));
  if (!candidates_[0].within)
    log_.line(fmt::format("budget: cannot be met: the {} model is already {:.2f} points below the teacher on validation (budget {:g}); "
                          "it is kept as it is, neither pruned nor quantized",
                          name, 100 * (reference_ - candidates_[0].val_accuracy), s_.budget));
}

namespace {

// A pruning round's job config: from the last accepted model, one round, either filters removed
// (`step` of them) or weights zeroed gradually from `initial_sparsity` to `target_sparsity`.
Config round_config(const Config& stage_config, const std::string& accepted, bool structured, double step, double initial_sparsity,
                    double target_sparsity) {
  Config c = stage_config;
  c.set("prune.checkpoint", accepted, "budget search: the last accepted round");
  c.set("prune.rounds", "1", "budget search");
  if (structured) {
    c.set("prune.method", "structured", "budget search: objective = latency");
    c.set("prune.schedule", "oneshot", "budget search");
    c.set("prune.filter_ratio", fmt::format("{:.17g}", step), "budget search: the round's step");
  } else {
    c.set("prune.method", "unstructured", "budget search: objective = size");
    c.set("prune.schedule", "gradual", "budget search: from the accepted round's sparsity to the round's");
    c.set("prune.initial_sparsity", fmt::format("{:.17g}", initial_sparsity), "budget search");
    c.set("prune.sparsity", fmt::format("{:.17g}", target_sparsity), "budget search: the round's target");
  }
  return c;
}

}  // namespace

// What int8 will cost, measured before pruning (post-training, all layers, the quantize stage's
// settings) and kept out of pruning's share of the budget, up to half of it:
// quantization-aware training usually wins it back.
double BudgetSearch::int8_reserve(const Config& quantize_stage) {
  const BudgetCandidate& start = candidates_[0];
  Config qc = quantize_stage;
  qc.set("quantize.checkpoint", start.checkpoint, "budget search: int8's cost on the start model");
  qc.set("quantize.float_layers", "", "budget search: all layers int8");
  const double ptq = ptq_accuracy(start.checkpoint, read_quantize_config(qc), opened_->data, opened_->data.val, 128, 0);
  const double reserve = std::clamp(100 * (start.val_accuracy - ptq), 0.0, s_.budget / 2);
  log_.line(fmt::format("budget: int8 after training costs the {} model {:.2f} points on validation; pruning may use {:.2f} of the {:g}", start.name,
                        100 * (start.val_accuracy - ptq), s_.budget - reserve, s_.budget));
  return reserve;
}

JobResult BudgetSearch::prune(const Config& stage_config, const std::string& dir, const Config* quantize_stage) {
  const std::string start = candidates_[0].checkpoint;
  nlohmann::json rounds = nlohmann::json::array();
  std::string accepted = start;
  if (candidates_[0].within) {
    const double reserve = quantize_stage ? int8_reserve(*quantize_stage) : 0;
    const bool structured = s_.objective == "latency";
    const double start_sparsity = candidates_[0].sparsity;
    PruneSearch search(reference_, s_.budget - reserve, s_.search);
    double accepted_sparsity = start_sparsity;
    while (auto kept = search.next()) {
      const int r = search.rounds() + 1;
      const Config c = round_config(stage_config, accepted, structured, search.step(), accepted_sparsity, 1 - *kept * (1 - start_sparsity));
      const std::string round_dir = fmt::format("{}/search-{}", dir, r);
      const nlohmann::json asked = {{"from", accepted}, {"structured", structured}, {"kept", *kept}, {"step", search.step()}};
      run_or_read(job_kind("prune"), c, round_dir, asked, quiet_);
      BudgetCandidate cand = measure(fmt::format("prune-{}", r), "prune", RunDir::checkpoint_of(round_dir));
      cand.kept = *kept;
      search.record(*kept, cand.val_accuracy);
      const bool ok = search.accepted_round() == r;
      log_.line(fmt::format("budget: prune round {}: {} kept, {}: {}", r, fmt::format("{:.1f}% of the {}", 100 * *kept, structured ? "filters" : "weights"),
                            describe(cand), ok ? "accepted" : fmt::format("over pruning's share, rejected; the step halves to {:.3g}", search.step())));
      if (ok) accepted = cand.checkpoint, accepted_sparsity = cand.sparsity, accepted_.push_back(cand);
      rounds.push_back(cand.to_json());
      candidates_.push_back(cand);
    }
  }
  fs::create_directories(dir + "/checkpoints");
  copy_file_atomic(accepted, dir + "/checkpoints/last.pt");
  nlohmann::json summary = {{"checkpoint", dir + "/checkpoints/last.pt"}, {"accepted", accepted}, {"rounds", rounds}};
  write_json_atomic(dir + "/summary.json", summary);
  return {dir, dir + "/checkpoints/last.pt", summary};
}

JobResult BudgetSearch::quantize(const Config& stage_config, const std::string& dir, const std::string& start) {
  nlohmann::json runs = nlohmann::json::array();
  std::string last = start;
  if (candidates_[0].within) {
    const JobKind& kind = job_kind("quantize");
    // Quantization-aware training of `from` (an accepted model) with `float_layers` kept float.
    int attempt = 0;
    auto qat = [&](const BudgetCandidate& from, const std::string& name, const std::vector<std::string>& float_layers) {
      Config c = stage_config;
      c.set("quantize.checkpoint", from.checkpoint, "budget search: an accepted model");
      c.set("quantize.float_layers", comma_list(float_layers), "budget search: the layers kept in float");
      const std::string run_dir = fmt::format("{}/search-{}", dir, ++attempt);
      run_or_read(kind, c, run_dir, {{"from", from.checkpoint}, {"float_layers", float_layers}}, quiet_);
      BudgetCandidate cand = measure(name, "quantize", RunDir::checkpoint_of(run_dir));
      cand.precision = float_layers.empty() ? "int8" : "mixed";
      cand.float_layers = float_layers;
      cand.kept = from.kept;
      log_.line(fmt::format("budget: quantize: {}: {}", describe(cand), cand.within ? "within the budget" : "over the budget"));
      runs.push_back(cand.to_json());
      candidates_.push_back(cand);
      last = cand.checkpoint;
      return cand;
    };
    BudgetCandidate from = accepted_.back();
    from.checkpoint = start;  // the prune stage's copy of it
    BudgetCandidate all_int8 = qat(from, "int8", {});
    // Over the budget: int8 of the accepted model before (less pruned: often smaller and faster
    // than the last one with layers in float), and layers of the last one in float.
    if (!all_int8.within && accepted_.size() >= 2) qat(accepted_[accepted_.size() - 2], "int8-" + accepted_[accepted_.size() - 2].name, {});
    if (!all_int8.within) {
      // Rank the layers by what each regains alone in float (post-training, so the ranking costs
      // no training), then estimate each count's accuracy from the quantization-aware run.
      Config qc = stage_config;
      qc.set("quantize.checkpoint", start, "budget search: the pruned model");
      QuantizeConfig q = read_quantize_config(qc);
      auto ptq = [&](const std::vector<std::string>& float_layers) {
        q.float_layers = comma_list(float_layers);
        return ptq_accuracy(start, q, opened_->data, opened_->data.val, 128, 0);
      };
      const double ptq_int8 = ptq({});
      std::vector<std::pair<double, std::string>> gains;
      for (const auto& name : weight_layers(load_checkpoint(start).model->spec())) gains.push_back({ptq({name}) - ptq_int8, name});
      std::stable_sort(gains.begin(), gains.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      std::vector<std::string> order;
      for (const auto& g : gains) order.push_back(g.second);
      log_.line(fmt::format("budget: layers by what their int8 error costs on validation: {}", [&] {
                  std::string s;
                  for (const auto& g : gains) s += fmt::format("{}{} {:+.2f}", s.empty() ? "" : ", ", g.second, 100 * g.first);
                  return s;
                }()));
      auto first = [&](size_t k) { return std::vector<std::string>(order.begin(), order.begin() + k); };
      auto estimate = [&](size_t k) { return all_int8.val_accuracy + (ptq(first(k)) - ptq_int8); };
      std::optional<size_t> k = choose_float_layers(order.size(), estimate, reference_, s_.budget);
      // Estimates are not measurements: a mixed model over the budget gets one more layer in float.
      for (int tries = 0; k && *k > 0 && *k < order.size() && tries < 3; ++tries, ++*k)
        if (qat(from, fmt::format("mixed-{}", *k), first(*k)).within) break;
    }
  }
  nlohmann::json summary = {{"checkpoint", last}, {"runs", runs}};
  fs::create_directories(dir);
  write_json_atomic(dir + "/summary.json", summary);
  return {dir, last, summary};
}

std::string BudgetSearch::finish() {
  // Latencies are timed here, for all candidates back to back (not as the search went, minutes
  // apart while training ran), three passes each keeping its fastest median: on small models the
  // difference between candidates is of the order of the noise.
  for (int pass = 0; pass < 3; ++pass)
    for (auto& c : candidates_) {
      const double ms = runtime_latency_ms(fmt::format("{}/candidates/{}.shrink", root_, c.name), resolve_threads(s_.threads));
      c.latency_ms = pass == 0 ? ms : std::min(c.latency_ms, ms);
    }
  bool met = false;
  const size_t chosen = choose_candidate(candidates_, s_.objective, &met);
  const BudgetCandidate& c = candidates_[chosen];
  nlohmann::json all = nlohmann::json::array();
  for (const auto& cand : candidates_) all.push_back(cand.to_json());
  nlohmann::json out = {{"budget", s_.budget},
                        {"objective", s_.objective},
                        {"val_split", s_.val_split},
                        {"validation_examples", opened_->data.val->size()},
                        {"teacher_val_accuracy", reference_},
                        {"candidates", all},
                        {"chosen", c.name},
                        {"budget_met", met}};
  write_json_atomic(root_ + "/pipeline.json", out);
  log_.line(met ? fmt::format("budget: chosen, the {} within the budget: {}", s_.objective == "size" ? "smallest" : "fastest", describe(c))
                : fmt::format("budget: cannot be met: no candidate is within {:g} points of the teacher on validation; the most accurate is kept: {}",
                              s_.budget, describe(c)));
  return c.checkpoint;
}

}  // namespace shrink
