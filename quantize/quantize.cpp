#include "quantize/quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include <limits>

#include <filesystem>

#include "common/error.h"
#include "spec/match.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/masks.h"
#include "train/data_parallel.h"
#include "train/objective.h"

namespace shrink {
namespace fs = std::filesystem;
namespace {

// During QAT: freezes batchnorm statistics and observers of the simulation being trained at their
// configured epochs. (A pruned model's zeros are kept by a MaskingHook beside it.)
class QatHook : public StepHook {
 public:
  explicit QatHook(const QuantizeConfig& q) : q_(q) {}
  // Builds the simulation the trainer trains, and keeps it to act on.
  ModelFactory factory() {
    return [this](const ModelSpec& spec) {
      net_ = QuantNet(spec, q_.settings);
      return std::static_pointer_cast<SpecNetImpl>(net_.ptr());
    };
  }
  void begin_step(SpecNet&, double position) override {
    net_->freeze_batchnorm(q_.freeze_bn_epoch >= 0 && position >= q_.freeze_bn_epoch);
    net_->freeze_observers(q_.freeze_observers_epoch >= 0 && position >= q_.freeze_observers_epoch);
  }

 private:
  const QuantizeConfig& q_;
  QuantNet net_{nullptr};
};

// The float model a quantization starts from: the checkpoint's own, or a quantized checkpoint's
// float weights (quantizing it again keeps its activation ranges: they seed the calibration).
SpecNet float_start(const LoadedModel& start, const std::string& path) {
  if (!start.quantized()) return start.model;
  SpecNet fp32(start.model->spec());
  load_weights_into(path, *fp32);
  return fp32;
}

// Observers see `batches` batches of (un-augmented) training data, in float, shuffled from the
// seed so that a file sorted by class still shows them every class.
void calibrate(QuantNetImpl& model, const Data& data, const Augment& norm, int64_t batches, int64_t batch_size, uint64_t seed) {
  torch::NoGradGuard no_grad;
  model.eval();
  model.set_calibrating(true);
  for_each_batch(data.train, batch_size, norm, [&](const Batch& b) { model.forward(b.x); }, batches, seed);
  model.set_calibrating(false);
  model.finish_calibration();
}

}  // namespace

void add_quantize_options(Keys& keys) {
  QuantizeConfig q;
  const double inf = std::numeric_limits<double>::infinity();
  // clang-format off
  keys.add("quantize.checkpoint", "", Rule::text(true), "the checkpoint to quantize (dense or pruned)")
      .add("quantize.mode", q.mode, Rule::choice({"qat", "ptq"}), "qat (fine-tune with fake quantization) | ptq (calibrate only)")
      .add("quantize.observer", q.settings.observer, Rule::choice({"minmax", "ema", "percentile"}), "activation ranges: minmax | ema (moving average) | percentile (histogram)")
      .add("quantize.ema_momentum", q.settings.ema_momentum, Rule::real(0, 1, true), "ema observer: weight of each new batch")
      .add("quantize.percentile", q.settings.percentile, Rule::real(50, 100, true), "percentile observer: share of |x| kept unclipped, in percent")
      .add("quantize.lsq", false, "learnable step sizes (LSQ, Esser et al. 2020) for weights and activations")
      .add("quantize.float_layers", "", Rule::text(true), "layers kept in float: names, globs or re:REGEX")
      .add("quantize.calibration_batches", q.calibration_batches, Rule::integer(1, 1000000), "training batches the observers see before QAT or as PTQ")
      .add("quantize.freeze_bn_epoch", q.freeze_bn_epoch, Rule::real(-1, inf), "QAT: batchnorm statistics frozen from this epoch (-1: never)")
      .add("quantize.freeze_observers_epoch", q.freeze_observers_epoch, Rule::real(-1, inf), "QAT: activation ranges frozen from this epoch (-1: never)");
  // clang-format on
}

QuantizeConfig read_quantize_config(const Config& c) {
  QuantizeConfig q;
  q.checkpoint = c.get<std::string>("quantize.checkpoint");
  if (q.checkpoint.empty()) c.fail("quantize.checkpoint", "give the checkpoint to quantize");
  q.mode = c.get<std::string>("quantize.mode");
  q.settings.observer = c.get<std::string>("quantize.observer");
  q.settings.ema_momentum = c.get<double>("quantize.ema_momentum");
  q.settings.percentile = c.get<double>("quantize.percentile");
  q.settings.lsq = c.get<bool>("quantize.lsq");
  q.float_layers = c.get<std::string>("quantize.float_layers");
  q.calibration_batches = c.get<int64_t>("quantize.calibration_batches");
  q.freeze_bn_epoch = c.get<double>("quantize.freeze_bn_epoch");
  q.freeze_observers_epoch = c.get<double>("quantize.freeze_observers_epoch");
  return q;
}

namespace {

// quantize.float_layers' layers. A name given as it is must be one that runs in int8, or a
// batchnorm with no conv or linear to fold into (kept float so that the rest quantizes): any other
// (an activation, a batchnorm folded into its conv) was silently ignored.
std::vector<std::string> float_layers_of(const ModelSpec& spec, const std::string& patterns) {
  const std::vector<std::string> layers = match_layers(spec, patterns, "quantize.float_layers");
  std::string listed = "," + patterns + ",";
  listed.erase(std::remove_if(listed.begin(), listed.end(), [](unsigned char ch) { return std::isspace(ch); }), listed.end());
  for (const std::string& name : layers) {
    const Layer& L = spec.layer(name);
    if (listed.find("," + name + ",") == std::string::npos || runs_int8(L.type)) continue;  // a glob's, or an int8 layer
    const int input = L.inputs[0].empty() ? -1 : spec.index_of(L.inputs[0]);
    const bool folds = input >= 0 && has_weights(spec.layers[input].type);
    if (L.type == LayerType::BatchNorm && !folds) continue;
    throw UserError(folds ? fmt::format("quantize.float_layers: {} folds into {}: name {} to keep both in float", name, L.inputs[0], L.inputs[0])
                          : fmt::format("quantize.float_layers: {} is a {}, which does not run in int8 ({} do): name the layer that computes its input",
                                        name, layer_type_name(L.type), int8_kinds()));
  }
  return layers;
}

}  // namespace

nlohmann::json run_quantize_job(const JobConfig& job_in, const QuantizeConfig& q_in, const RunOptions& options_in, Objective* fine_tune) {
  JobConfig base = job_in;
  RunOptions options = options_in;
  as_stage_worker(base, options);
  torch::set_num_threads(resolve_threads(base.train.threads));
  QuantizeConfig q = q_in;
  LoadedModel start_model = load_checkpoint(q.checkpoint);
  nlohmann::json meta = start_model.meta;
  SpecNet fp32 = float_start(start_model, q.checkpoint);
  q.settings.float_layers = float_layers_of(fp32->spec(), q.float_layers);
  Data data = open_data(base.data);
  check_data_fits(data, meta, "quantize.checkpoint " + q.checkpoint);
  RunDir run_dir = RunDir::open_stages(base.out, base.resolved_ini, options);
  RunLog& log = run_dir.log();
  Augment norm = normalization_of(meta);
  double fp32_accuracy = evaluate(fp32, data.test, norm, base.train.eval_batch_size).accuracy;
  double sparsity = weight_sparsity(fp32).sparsity();

  QuantNet qnet(fp32->spec(), q.settings);
  SpecNet model(std::static_pointer_cast<SpecNetImpl>(qnet.ptr()));  // the same module, seen as a SpecNet
  load_weights_into(q.checkpoint, *qnet);
  std::string start = base.out + "/start.pt";
  double ptq_accuracy = 0;
  if (!options.resume || !fs::exists(start)) {
    calibrate(*qnet, data, norm, q.calibration_batches, base.train.batch_size, static_cast<uint64_t>(base.train.seed));
    ptq_accuracy = evaluate(model, data.test, norm, base.train.eval_batch_size).accuracy;
    meta["stage"] = "quantize";
    save_checkpoint(start, model, nullptr, meta);
  } else {
    load_weights_into(start, *qnet);
    ptq_accuracy = evaluate(model, data.test, norm, base.train.eval_batch_size).accuracy;
  }
  log.line(fmt::format("{}: fp32 test accuracy {:.2f}%, int8 simulated after calibration {:.2f}% (sparsity {:.2f}%)", q.checkpoint,
                       100 * fp32_accuracy, 100 * ptq_accuracy, 100 * sparsity));
  nlohmann::json summary;
  if (q.mode == "ptq") {
    copy_file_atomic(start, base.out + "/checkpoints/last.pt");
    summary = {{"test_accuracy", ptq_accuracy}, {"params", total_cost(fp32->spec()).params}, {"macs", total_cost(fp32->spec()).macs},
               {"checkpoint", base.out + "/checkpoints/last.pt"}};
  } else {
    JobConfig job = base;
    job.model = fp32->spec().to_string();
    job.init = start;
    MaskingHook keep_zeros(zero_masks(fp32));  // a pruned model stays pruned
    QatHook qat(q);
    RunOptions run = options;
    run.overwrite = false;  // with --overwrite the whole folder is already gone
    run.leave_summary = true;  // written below, once the quantization's results are in it
    summary = run_train_job(job, run, fine_tune, {&keep_zeros, &qat}, qat.factory());
    if (summary.contains("stopped_after_epoch")) return summary;
  }
  SpecNet final_model = load_checkpoint(base.out + "/checkpoints/last.pt").model;
  summary["mode"] = q.mode;
  summary["fp32_test_accuracy"] = fp32_accuracy;
  summary["ptq_test_accuracy"] = ptq_accuracy;
  summary["int8_sim_test_accuracy"] = summary["test_accuracy"];
  summary["sparsity_before"] = sparsity;
  summary["sparsity"] = weight_sparsity(final_model).sparsity();
  summary["scales"] = dynamic_cast<QuantNetImpl&>(*final_model).scales();
  run_dir.write_summary(summary);
  log.line(fmt::format("done: int8 simulated test accuracy {:.2f}% (fp32 {:.2f}%), sparsity {:.2f}%, {}", 100 * summary["int8_sim_test_accuracy"].get<double>(),
                       100 * fp32_accuracy, 100 * summary["sparsity"].get<double>(), base.out + "/checkpoints/last.pt"));
  return summary;
}

namespace {

// `checkpoint` quantized with q's settings and calibrated as the job calibrates, and its metadata.
std::pair<SpecNet, nlohmann::json> calibrated_after_training(const std::string& checkpoint, const QuantizeConfig& q, const Data& data,
                                                             int64_t batch_size, uint64_t seed) {
  LoadedModel start = load_checkpoint(checkpoint);
  SpecNet fp32 = float_start(start, checkpoint);
  QuantSettings settings = q.settings;
  settings.float_layers = float_layers_of(fp32->spec(), q.float_layers);
  QuantNet qnet(fp32->spec(), settings);
  load_weights_into(checkpoint, *qnet);
  calibrate(*qnet, data, normalization_of(start.meta), q.calibration_batches, batch_size, seed);
  return {SpecNet(std::static_pointer_cast<SpecNetImpl>(qnet.ptr())), start.meta};
}

}  // namespace

double ptq_accuracy(const std::string& checkpoint, const QuantizeConfig& q, const Data& data, const std::shared_ptr<const Source>& on,
                    int64_t batch_size, uint64_t seed) {
  auto [model, meta] = calibrated_after_training(checkpoint, q, data, batch_size, seed);
  return evaluate(model, on, normalization_of(meta), 512).accuracy;
}

void save_ptq_checkpoint(const std::string& checkpoint, const QuantizeConfig& q, const Data& data, int64_t batch_size, uint64_t seed,
                         const std::string& out) {
  auto [model, meta] = calibrated_after_training(checkpoint, q, data, batch_size, seed);
  meta["stage"] = "quantize";
  save_checkpoint(out, model, nullptr, meta);
}

}  // namespace shrink
