#include "prune/prune.h"

#include <fmt/format.h>

#include <limits>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "common/error.h"
#include "prune/masks.h"
#include "prune/surgery.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/data_parallel.h"
#include "train/objective.h"

namespace shrink {
namespace fs = std::filesystem;
namespace {

// Data parallel: rank 0's masks on every worker (computed from the same weights, they are equal
// anyway; sent, they cannot part on a tie).
void broadcast_masks(std::map<std::string, torch::Tensor>& masks) {
  std::vector<torch::Tensor> all;
  for (auto& [name, mask] : masks) all.push_back(mask);
  broadcast_from_leader(all);
}

// Pruning's masks; in gradual mode the sparsity rises on the cubic schedule as training goes.
class PruneHook : public MaskingHook {
 public:
  PruneHook(std::map<std::string, torch::Tensor> initial, const PruneTargets* gradual_targets, const PruneConfig* gradual)
      : MaskingHook(std::move(initial)), targets_(gradual_targets ? *gradual_targets : PruneTargets{}), gradual_(gradual) {}
  void begin_step(SpecNet& model, double position) override {
    if (!gradual_) return;
    // Every update_every epochs, and once more at end_epoch, whatever update_every is: the
    // sparsity reaches prune.sparsity there (it stopped short of it when no update fell on it).
    const double every = gradual_->update_every, t = std::min(std::floor(position / every) * every, gradual_->end_epoch);
    if (position >= gradual_->end_epoch ? last_update_ >= gradual_->end_epoch : t <= last_update_) return;
    last_update_ = position >= gradual_->end_epoch ? gradual_->end_epoch : t;
    targets_.sparsity = cubic_sparsity(last_update_, gradual_->start_epoch, gradual_->end_epoch, gradual_->initial_sparsity, gradual_->sparsity);
    auto masks = magnitude_masks(model, targets_);
    broadcast_masks(masks);
    masks_.set_all(masks);
    masks_.apply_to_weights(model);
  }

 private:
  PruneTargets targets_;
  const PruneConfig* gradual_;
  double last_update_ = -1;  // the schedule's time of the last update (epochs)
};

// A checkpoint to prune, which must be a float one: pruning changes the weights that a quantized
// checkpoint's int8 scales were fit to, so a quantized checkpoint is refused (`what` names the key).
LoadedModel load_float(const std::string& path, const std::string& what) {
  LoadedModel loaded = load_checkpoint(path);
  if (loaded.quantized())
    throw UserError(fmt::format("{} {}: a quantized checkpoint cannot be pruned; prune the float checkpoint it came from, then quantize the pruned one",
                                what, path));
  return loaded;
}

std::map<std::string, double> parse_overrides(const ModelSpec& spec, const std::string& text) {
  std::map<std::string, double> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t colon = item.rfind(':');
    if (item.find_first_not_of(" \t") == std::string::npos) continue;
    double v = -1;
    try {
      v = std::stod(item.substr(colon + 1));
    } catch (const std::exception&) {
    }
    if (colon == std::string::npos || !(v >= 0 && v < 1))
      throw UserError(fmt::format("prune.overrides: '{}' is not pattern:value with a value in [0, 1)", item));
    for (const auto& name : match_layers(spec, item.substr(0, colon), "prune.overrides")) out[name] = v;
  }
  return out;
}

PruneTargets targets_for(const ModelSpec& spec, const PruneConfig& c) {
  PruneTargets t;
  t.sparsity = c.sparsity;
  t.global = c.scope == "global";
  t.lamp = c.score == "lamp";
  auto all = weight_layers(spec);
  auto chosen = c.layers.empty() ? all : match_layers(spec, c.layers, "prune.layers");
  auto excluded = match_layers(spec, c.exclude, "prune.exclude");
  for (const auto& name : chosen) {
    if (std::find(all.begin(), all.end(), name) == all.end())
      throw UserError(fmt::format("prune.layers: '{}' is a {} layer; only conv and linear weights are pruned", name,
                                  layer_type_name(spec.layer(name).type)));
    if (std::find(excluded.begin(), excluded.end(), name) == excluded.end()) t.layers.push_back(name);
  }
  for (const auto& [name, v] : parse_overrides(spec, c.overrides))
    if (std::find(t.layers.begin(), t.layers.end(), name) != t.layers.end()) t.layer_sparsity[name] = v;
  if (t.layers.empty()) throw UserError("prune: no layer is left to prune (check prune.layers and prune.exclude)");
  return t;
}

std::string rewind_path(const PruneConfig& c) {
  if (!c.rewind_checkpoint.empty()) return c.rewind_checkpoint;
  std::string epoch = c.rewind == "init" ? "0" : c.rewind.substr(6);
  return (fs::path(c.checkpoint).parent_path() / ("epoch-" + epoch + ".pt")).string();
}

// Sparsity of round r (1-based) of `rounds`: each round removes the same share of what is left.
double round_sparsity(const PruneConfig& c, int64_t r, int64_t rounds) {
  double keep_per_round = std::pow(1 - c.sparsity, 1.0 / rounds);
  return 1 - std::pow(keep_per_round, static_cast<double>(r));
}

double accuracy_of(SpecNet& model, const Data& data, const nlohmann::json& meta) {
  return evaluate(model, data.test, normalization_of(meta), 512).accuracy;
}

struct LayerRow {
  std::string name, shape;
  int64_t params = 0, nonzeros = 0, weights = 0, weight_zeros = 0, macs = 0;
  double macs_left = 0;
};

std::vector<LayerRow> layer_rows(SpecNet& model) {
  auto info = analyze(model->spec());
  auto params = model->named_parameters();
  std::vector<LayerRow> rows;
  for (size_t i = 0; i < info.size(); ++i) {
    const Layer& L = model->spec().layers[i];
    if (!params.contains(L.name + ".weight")) continue;
    LayerRow r;
    r.name = L.name;
    auto w = params[L.name + ".weight"];
    r.shape = shape_string(w.sizes().vec());
    for (const char* part : {".weight", ".bias"})
      if (params.contains(L.name + part)) {
        r.params += params[L.name + part].numel();
        r.nonzeros += (params[L.name + part] != 0).sum().item<int64_t>();
      }
    r.weights = w.numel();
    r.weight_zeros = (w == 0).sum().item<int64_t>();
    r.macs = info[i].macs;
    r.macs_left = r.macs * (1.0 - static_cast<double>(r.weight_zeros) / r.weights);
    rows.push_back(r);
  }
  return rows;
}

nlohmann::json size_summary(SpecNet& model) {
  int64_t params = 0, nonzeros = 0;
  double macs_left = 0;
  for (const auto& r : layer_rows(model)) params += r.params, nonzeros += r.nonzeros, macs_left += r.macs_left;
  return {{"params", params}, {"nonzero_params", nonzeros}, {"sparsity", weight_sparsity(model).sparsity()},
          {"macs", total_cost(model->spec()).macs}, {"macs_left", static_cast<int64_t>(macs_left)}};
}

}  // namespace

void add_prune_options(Keys& keys) {
  PruneConfig p;
  const double inf = std::numeric_limits<double>::infinity();
  const Rule share = Rule::real(0, 1, false, true), any = Rule::text(true);
  // clang-format off
  keys.add("prune.checkpoint", "", any, "the checkpoint to prune (its spec is the model)")
      .add("prune.method", p.method, Rule::choice({"unstructured", "structured"}), "unstructured (magnitude, masks) | structured (remove conv filters and hidden linear features by L1 norm)")
      .add("prune.schedule", p.schedule, Rule::choice({"oneshot", "iterative", "gradual"}), "oneshot | iterative (rounds, lottery-ticket rewinding) | gradual (cubic, during training)")
      .add("prune.scope", p.scope, Rule::choice({"global", "layer"}), "global (one threshold over all pruned layers) | layer (each layer to its own sparsity)")
      .add("prune.score", "auto", Rule::choice({"auto", "magnitude", "lamp"}), "scope = global: rank weights (structured: filters) across layers by magnitude, or by LAMP score (layer-adaptive: scale-free per layer, so no layer is emptied because its weights are small); auto: lamp for structured, magnitude for unstructured")
      .add("prune.sparsity", p.sparsity, share, "target share of zero weights (unstructured)")
      .add("prune.layers", "", any, "layers to prune: names, globs or re:REGEX, comma-separated (empty: all conv and linear)")
      .add("prune.exclude", "", any, "layers never pruned (names, globs or re:REGEX)")
      .add("prune.overrides", "", any, "per-layer targets, pattern:value,... (sparsity, or filter ratio for structured)")
      .add("prune.rounds", p.rounds, Rule::integer(1, 100), "iterative: rounds, each removing the same share of the remaining weights; train.epochs of fine-tuning each")
      .add("prune.rewind", p.rewind, Rule::text(false), "iterative: none | init | epoch:K (weights of epoch K of the original training, lottery ticket)")
      .add("prune.rewind_checkpoint", "", any, "checkpoint to rewind to (default: epoch-K.pt beside prune.checkpoint; train with train.keep_epochs)")
      .add("prune.initial_sparsity", p.initial_sparsity, share, "gradual: sparsity s_i at prune.start_epoch (at most prune.sparsity)")
      .add("prune.start_epoch", p.start_epoch, Rule::real(0, inf), "gradual: when the sparsity starts rising (fractional epochs)")
      .add("prune.end_epoch", p.end_epoch, Rule::real(-1, inf), "gradual: when it reaches prune.sparsity (-1: at 3/4 of train.epochs)")
      .add("prune.update_every", p.update_every, Rule::real(0, inf, true), "gradual: epochs between mask updates")
      .add("prune.filter_ratio", p.filter_ratio, share, "structured: share of each conv layer's filters and each hidden linear layer's output features removed (with scope = global: overall)");
  // clang-format on
}

PruneConfig read_prune_config(const Config& c) {
  PruneConfig p;
  p.checkpoint = c.get<std::string>("prune.checkpoint");
  if (p.checkpoint.empty()) c.fail("prune.checkpoint", "give the checkpoint to prune");
  p.method = c.get<std::string>("prune.method");
  p.schedule = c.get<std::string>("prune.schedule");
  p.scope = c.get<std::string>("prune.scope");
  p.score = c.get<std::string>("prune.score");
  p.sparsity = c.get<double>("prune.sparsity");
  p.layers = c.get<std::string>("prune.layers");
  p.exclude = c.get<std::string>("prune.exclude");
  p.overrides = c.get<std::string>("prune.overrides");
  p.rounds = c.get<int64_t>("prune.rounds");
  p.rewind = c.get<std::string>("prune.rewind");
  if (p.rewind != "none" && p.rewind != "init" && !(p.rewind.rfind("epoch:", 0) == 0 && p.rewind.size() > 6 &&
                                                    p.rewind.find_first_not_of("0123456789", 6) == std::string::npos))
    c.fail("prune.rewind", "expected none, init or epoch:K");
  p.rewind_checkpoint = c.get<std::string>("prune.rewind_checkpoint");
  p.initial_sparsity = c.get<double>("prune.initial_sparsity");
  p.start_epoch = c.get<double>("prune.start_epoch");
  p.end_epoch = c.get<double>("prune.end_epoch");
  p.update_every = c.get<double>("prune.update_every");
  if (p.initial_sparsity > p.sparsity) c.fail("prune.initial_sparsity", "must be at most prune.sparsity");
  p.filter_ratio = c.get<double>("prune.filter_ratio");
  if (p.score == "lamp" && p.scope != "global") c.fail("prune.score", "lamp ranks weights or filters across layers: it needs prune.scope = global");
  // One magnitude threshold over filters empties the layers of largest fan-in (their filters'
  // weights are smallest): on the USPS teacher at half the filters, conv5 kept one and the model
  // fine-tuned to 31.5%; LAMP kept 72 of 256 and 97.7%. For weights it has no such failure.
  if (p.score == "auto") p.score = p.method == "structured" && p.scope == "global" ? "lamp" : "magnitude";
  if (p.method == "structured" && p.schedule != "oneshot")
    c.fail("prune.schedule", "structured pruning removes the filters once and fine-tunes: set prune.schedule = oneshot");
  return p;
}

nlohmann::json run_prune_job(const JobConfig& job_in, const PruneConfig& c, const RunOptions& options_in, Objective* fine_tune) {
  JobConfig base = job_in;
  RunOptions options = options_in;
  as_stage_worker(base, options);
  torch::set_num_threads(resolve_threads(base.train.threads));
  LoadedModel start = load_float(c.checkpoint, "prune.checkpoint");
  if (c.rewind != "none" && c.schedule == "iterative" && !fs::exists(rewind_path(c)))  // found now, not after the first round
    throw UserError(fmt::format("prune.rewind = {}: {} does not exist (the original training keeps epoch K's weights with train.keep_epochs = K; "
                                "or give prune.rewind_checkpoint)", c.rewind, rewind_path(c)));
  const bool structured = c.method == "structured", gradual = c.schedule == "gradual";
  PruneConfig g = c;
  if (gradual && g.end_epoch < 0) g.end_epoch = 0.75 * base.train.epochs;
  if (gradual && (g.end_epoch >= base.train.epochs || g.start_epoch >= g.end_epoch))  // it would stop short of prune.sparsity
    throw UserError(fmt::format("prune.schedule = gradual: the sparsity rises from epoch {:g} (prune.start_epoch) to {:g} (prune.end_epoch), which "
                                "must come before training ends at epoch {} (train.epochs)", g.start_epoch, g.end_epoch, base.train.epochs));
  const nlohmann::json start_meta = start.meta;
  SpecNet current = start.model;
  Data data = open_data(base.data);
  check_data_fits(data, start_meta, "prune.checkpoint " + c.checkpoint);
  RunDir run_dir = RunDir::open_stages(base.out, base.resolved_ini, options);
  RunLog& log = run_dir.log();
  double before = accuracy_of(current, data, start_meta);
  log.line(fmt::format("pruning {} ({}): test accuracy {:.2f}% before", c.checkpoint, size_summary(current).dump(), 100 * before));

  const int64_t rounds = c.schedule == "iterative" && !structured ? c.rounds : 1;
  nlohmann::json history = nlohmann::json::array();
  nlohmann::json last;
  for (int64_t r = 1; r <= rounds; ++r) {
    std::string dir = fmt::format("{}/round-{}", base.out, r);
    bool done = RunDir::finished(dir), started = RunDir::holds_checkpoint(dir);
    JobConfig job = base;
    job.out = dir;
    job.init = dir + "/start.pt";
    RunOptions round_options = options;
    round_options.resume = started && !done;
    round_options.overwrite = false;
    std::map<std::string, torch::Tensor> masks;
    PruneTargets targets = targets_for(current->spec(), c);
    if (started && !done) current = load_checkpoint(job.init).model;  // resuming this round: its pruned model
    if (done) {
      last = nlohmann::json::parse(read_text_file(dir + "/summary.json"));
    } else {
      double pruned_accuracy = 0;
      if (!started) {
        if (structured) {
          FilterPruning f;
          f.ratio = c.filter_ratio;
          f.global = c.scope == "global";
          f.lamp = c.score == "lamp";
          auto chosen = c.layers.empty() ? weight_layers(current->spec()) : match_layers(current->spec(), c.layers, "prune.layers");
          for (const auto& L : current->spec().layers)
            if (has_weights(L.type) && std::find(chosen.begin(), chosen.end(), L.name) == chosen.end()) f.excluded.push_back(L.name);
          for (const auto& name : match_layers(current->spec(), c.exclude, "prune.exclude")) f.excluded.push_back(name);
          f.layer_ratio = parse_overrides(current->spec(), c.overrides);
          current = remove_filters(current, plan_filter_pruning(current, f));
        } else if (!gradual) {
          targets.sparsity = round_sparsity(c, r, rounds);
          masks = magnitude_masks(current, targets);
          broadcast_masks(masks);
          if (c.rewind != "none" && c.schedule == "iterative") {
            SpecNet rewound = load_float(rewind_path(c), "prune.rewind").model;
            if (rewound->spec().to_string() != current->spec().to_string())
              throw UserError(fmt::format("prune.rewind: {} is not the same model as {}", rewind_path(c), c.checkpoint));
            current = rewound;
          }
          MaskSet set;
          set.set_all(masks);
          set.apply_to_weights(current);
        }
        pruned_accuracy = accuracy_of(current, data, start_meta);
        fs::create_directories(dir);
        nlohmann::json meta = start_meta;
        meta["stage"] = "prune";
        meta["accuracy_before_fine_tuning"] = pruned_accuracy;  // for the summary of a resumed run
        save_checkpoint(job.init, current, nullptr, meta);
        log.line(fmt::format("round {}/{}: {} -> test accuracy {:.2f}% before fine-tuning", r, rounds,
                             structured ? fmt::format("{} params after removing filters", total_cost(current->spec()).params)
                             : gradual  ? fmt::format("sparsity {:.2f}% (rising to {:.2f}% by epoch {:g})", 100 * weight_sparsity(current).sparsity(),
                                                      100 * g.sparsity, g.end_epoch)
                                        : fmt::format("sparsity {:.2f}%", 100 * weight_sparsity(current).sparsity()),
                             100 * pruned_accuracy));
      }
      job.model = current->spec().to_string();
      PruneHook hook(masks, gradual ? &targets : nullptr, gradual ? &g : nullptr);
      last = run_train_job(job, round_options, fine_tune, structured ? std::vector<StepHook*>{} : std::vector<StepHook*>{&hook});
      if (last.contains("stopped_after_epoch")) return last;  // interrupted (tests): --resume continues
      if (!started) last["accuracy_before_fine_tuning"] = pruned_accuracy;
    }
    if (!last.contains("accuracy_before_fine_tuning")) {  // a round finished or started by an earlier, interrupted run
      nlohmann::json start = read_checkpoint_meta(job.init);
      if (start.contains("accuracy_before_fine_tuning")) last["accuracy_before_fine_tuning"] = start["accuracy_before_fine_tuning"];
    }
    current = load_checkpoint(dir + "/checkpoints/last.pt").model;
    nlohmann::json entry = {{"round", r}, {"sparsity", weight_sparsity(current).sparsity()}, {"test_accuracy", last["test_accuracy"]}};
    if (last.contains("accuracy_before_fine_tuning")) entry["accuracy_before_fine_tuning"] = last["accuracy_before_fine_tuning"];
    history.push_back(entry);
    log.line(fmt::format("round {}/{}: sparsity {:.2f}%, test accuracy {:.2f}% after fine-tuning", r, rounds,
                         100 * entry["sparsity"].get<double>(), 100 * entry["test_accuracy"].get<double>()));
  }
  copy_file_atomic(fmt::format("{}/round-{}/checkpoints/last.pt", base.out, rounds), base.out + "/checkpoints/last.pt");
  nlohmann::json summary = last;
  summary.update(size_summary(current));
  summary["rounds"] = history;
  summary["accuracy_before"] = before;
  summary["method"] = c.method;
  summary["schedule"] = c.schedule;
  if (!structured) summary["score"] = c.score;
  summary["checkpoint"] = base.out + "/checkpoints/last.pt";
  summary.erase("best_checkpoint");
  run_dir.write_summary(summary);
  log.line(fmt::format("done: sparsity {:.2f}%, {} of {} params nonzero, test accuracy {:.2f}% (was {:.2f}%), {}", 100 * summary["sparsity"].get<double>(),
                       summary["nonzero_params"].get<int64_t>(), summary["params"].get<int64_t>(), 100 * summary["test_accuracy"].get<double>(),
                       100 * before, summary["checkpoint"].get<std::string>()));
  return summary;
}

std::string prune_report(const std::string& checkpoint) {
  SpecNet model = load_checkpoint(checkpoint).model;  // a quantized checkpoint: its float weights' sparsity
  std::string out = fmt::format("{:<12} {:<14} {:>10} {:>10} {:>9} {:>12} {:>12}\n", "layer", "weight", "params", "nonzeros", "sparsity", "MACs", "MACs left");
  LayerRow total;
  for (const auto& r : layer_rows(model)) {
    out += fmt::format("{:<12} {:<14} {:>10} {:>10} {:>8.2f}% {:>12} {:>12.0f}\n", r.name, r.shape, r.params, r.nonzeros,
                       100.0 * r.weight_zeros / r.weights, r.macs, r.macs_left);
    total.params += r.params, total.nonzeros += r.nonzeros, total.weights += r.weights, total.weight_zeros += r.weight_zeros;
    total.macs += r.macs, total.macs_left += r.macs_left;
  }
  out += fmt::format("{:<12} {:<14} {:>10} {:>10} {:>8.2f}% {:>12} {:>12.0f}\n", "total", "", total.params, total.nonzeros,
                     100.0 * total.weight_zeros / std::max<int64_t>(total.weights, 1), total.macs, total.macs_left);
  return out;
}

std::string sensitivity_table(const std::string& checkpoint, const DataConfig& data_config, const std::vector<double>& sparsities) {
  LoadedModel loaded = load_float(checkpoint, "prune sensitivity");
  const nlohmann::json& meta = loaded.meta;
  SpecNet model = loaded.model;
  Data data = open_data(data_config);
  check_data_fits(data, meta, checkpoint);
  double base = accuracy_of(model, data, meta);
  std::string out = fmt::format("test accuracy of {} unpruned: {:.2f}%\n{:<12}", checkpoint, 100 * base, "layer");
  for (double s : sparsities) out += fmt::format(" {:>8}", fmt::format("{:.0f}%", 100 * s));
  out += "\n";
  for (const auto& name : weight_layers(model->spec())) {
    out += fmt::format("{:<12}", name);
    for (double s : sparsities) {
      SpecNet copy = load_checkpoint(checkpoint).model;
      PruneTargets t;
      t.layers = {name};
      t.sparsity = s;
      t.global = false;
      MaskSet set;
      set.set_all(magnitude_masks(copy, t));
      set.apply_to_weights(copy);
      out += fmt::format(" {:>7.2f}%", 100 * accuracy_of(copy, data, meta));
    }
    out += "\n";
  }
  return out;
}

}  // namespace shrink
