#include "train/trainer.h"

#include <fmt/format.h>
#include <malloc.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>

#include "common/error.h"
#include "datasets/loader.h"
#include "parallel/sync_batchnorm.h"
#include "parallel/world.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/evaluate.h"
#include "train/objective.h"
#include "train/precision.h"
#include "train/run_dir.h"

namespace shrink {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Learning rate at a (fractional) epoch position: optional linear warm-up, then the schedule.
double learning_rate(const OptimConfig& o, double epoch, double total_epochs) {
  if (epoch < o.warmup_epochs) return o.lr * epoch / o.warmup_epochs;
  if (o.schedule == "step") return o.lr * std::pow(o.gamma, std::floor(epoch / o.step_epochs));
  if (o.schedule == "cosine") {
    double span = std::max(total_epochs - o.warmup_epochs, 1e-9);
    double t = std::min((epoch - o.warmup_epochs) / span, 1.0);
    return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1 + std::cos(M_PI * t));
  }
  return o.lr;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& o, const std::vector<torch::Tensor>& params) {
  if (o.name == "adamw")
    return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).weight_decay(o.weight_decay));
  return std::make_unique<torch::optim::SGD>(params,
                                             torch::optim::SGDOptions(o.lr).momentum(o.momentum).nesterov(o.nesterov).weight_decay(o.weight_decay));
}

// Activations and gradients are freed and allocated again every step. glibc would hand large
// blocks back to the kernel (mmap/trim) and page-fault them in again, zero-filled, on the next
// step; keeping them in the heap lets every step reuse the previous step's memory.
void keep_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // the largest value glibc accepts
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}



void to_channels_last(SpecNet& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
}

class Trainer {
 public:
  Trainer(const JobConfig& job, const RunOptions& options, Objective* objective, std::vector<StepHook*> hooks, const ModelFactory& factory)
      : job_(job), options_(options), objective_(objective), hooks_(std::move(hooks)), factory_(factory) {
    extras();  // two hooks checkpointing under one name are a bug: caught before any work
  }
  nlohmann::json run();

 private:
  void prepare();
  void train_epoch(int64_t epoch);
  // `objective_metrics`: the objective's fields of the epoch's record (computed on every worker).
  void finish_epoch(int64_t epoch, double seconds, int64_t samples, const nlohmann::json& objective_metrics);
  // Training that broke the weights in epoch `epoch` (0-based): what happened, and what is kept.
  UserError diverged(const std::string& what, int64_t epoch) const {
    return UserError(fmt::format("training diverged: {}; {} (try a lower optim.lr or set train.grad_clip)", what,
                                 epoch > 0 ? checkpoints_ + "/last.pt is kept as the last good checkpoint" : std::string("no checkpoint was written")));
  }
  nlohmann::json checkpoint_meta(int64_t epochs_done) const;
  CheckpointExtras extras() const;
  nlohmann::json summary() const;

  const JobConfig& job_;
  RunOptions options_;
  Objective* objective_;
  std::vector<StepHook*> hooks_;  // in the order they act around each step
  ModelFactory factory_;
  std::shared_ptr<torch::nn::Module> extra_;  // the objective's own trainable parameters
  Data data_;
  ModelSpec spec_;
  SpecNet model_{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<Loader> loader_;
  std::optional<RunDir> run_dir_;          // rank 0's (every run on one process)
  std::optional<RunLog> worker_log_;       // other data-parallel workers': rank-K.log
  RunLog* log_ = nullptr;                  // one of them
  std::vector<torch::Tensor> params_;      // what the optimizer steps: the model's and the objective's
  bool leader_ = true;                     // writes the run directory (rank 0)
  bool synced_batchnorm_ = false;          // SyncBatchNorm (train.sync_batchnorm)
  Augment normalization_;
  std::vector<std::string> class_names_;  // the data's, or else the starting checkpoint's
  int64_t start_epoch_ = 0;
  double best_metric_ = -1, train_seconds_ = 0, train_loss_ = 0, train_accuracy_ = 0;
  Precision precision_;
  int64_t train_samples_ = 0;
  EvalResult last_test_;
  std::string checkpoints_;
};

void Trainer::prepare() {
  const int threads = resolve_threads(job_.train.threads);
  torch::set_num_threads(threads);
  keep_freed_memory();
  join_workers();
  World& world = World::get();
  leader_ = world.leader() || options_.worker_folder;
  data_ = open_data(job_.data);
  try {
    spec_ = parse_spec(job_.model, data_.shape, data_.classes);
  } catch (const UserError& e) {
    throw UserError(fmt::format("model.spec: {}", e.what()));
  }
  if (leader_) {
    run_dir_.emplace(RunDir::open_training(job_.out, job_.resolved_ini, options_));
    log_ = &run_dir_->log();
  }
  world.barrier();  // rank 0 has checked and opened the folder (a shared one, with --overwrite, emptied)
  if (!leader_) log_ = &worker_log_.emplace(job_.out, true, fmt::format("rank-{}.log", world.rank()));
  checkpoints_ = job_.out + "/checkpoints";
  std::string last = leader_ ? run_dir_->checkpoint() : "";
  if (options_.resume) last = checkpoint_on_every_worker(last, job_.out);

  torch::manual_seed(job_.train.seed);
  model_ = factory_ ? SpecNet(factory_(spec_)) : SpecNet(spec_);
  if (!job_.init.empty() && !options_.resume) load_weights_into(job_.init, *model_);
  class_names_ = data_.class_names;
  if (!job_.init.empty()) {  // an imported or earlier model's names go on, and must be the data's
    const nlohmann::json init_meta = read_checkpoint_meta(job_.init);
    auto names = class_names_of(init_meta);
    check_class_names(data_.class_names, names, "model.init " + job_.init);
    // A net ending in a global pool takes another image size (fine-tuning at a new resolution): legal, but said.
    const std::vector<int64_t> trained_on = init_meta.value("input", std::vector<int64_t>{});
    if (!trained_on.empty() && trained_on != data_.shape)
      log_->line(fmt::format("model.init {} was trained on examples of {}; these are {}: its layers see them at another size", job_.init,
                             shape_string(trained_on), shape_string(data_.shape)));
    if (class_names_.empty() && static_cast<int64_t>(names.size()) == spec_.classes) class_names_ = names;
  }
  normalization_.mean = data_.mean;
  normalization_.std = data_.std;
  normalization_.channels_last = job_.train.channels_last;
  params_ = model_->parameters();
  if (objective_) {
    objective_->prepare(data_, normalization_, model_, *log_);
    extra_ = objective_->trainable();
    if (extra_)
      for (auto& p : extra_->parameters()) params_.push_back(p);
  }
  optimizer_ = make_optimizer(job_.optim, params_);
  for (StepHook* hook : hooks_) hook->prepare(model_, *log_);

  if (options_.resume) {
    nlohmann::json meta;
    if (load_weights_into(last, *model_, &meta) > 0) throw UserError(fmt::format("--resume: {} lacks part of the model's state", last));
    if (extra_ && !load_extra_state(last, "objective", *extra_)) throw UserError(fmt::format("--resume: {} lacks the objective's state", last));
    for (StepHook* hook : hooks_)
      if (hook->state() && !load_extra_state(last, hook->state_name(), *hook->state()))
        throw UserError(fmt::format("--resume: {} lacks the {} state", last, hook->state_name()));
    load_optimizer_state(last, *optimizer_);
    start_epoch_ = meta.at("epoch").get<int64_t>();
    best_metric_ = meta.value("best_metric", -1.0);
    train_seconds_ = meta.value("train_seconds", 0.0);
    train_samples_ = meta.value("train_samples", int64_t(0));
    if (objective_) objective_->resume(meta.value("epoch_metrics", nlohmann::json::object()));
    log_->line(fmt::format("resuming {} after epoch {}", job_.out, start_epoch_));
    if (!world.leader()) std::filesystem::remove(last);  // rank 0's checkpoint, copied here to be read
  }
  // Records of epochs the checkpoint does not hold (a run killed between its metrics record and
  // its checkpoint, or before its first checkpoint) are dropped, and a cut last line with them.
  if (leader_) log_->truncate_metrics(start_epoch_);
  if (world.distributed()) {
    std::vector<torch::Tensor> state = params_;
    for (const auto& b : model_->buffers()) state.push_back(b);
    broadcast_from_leader(state);  // one starting point, whatever each worker initialized or read
  }
  // Synchronized batchnorm runs its own code on one process too (its collectives do nothing there),
  // so a run's weights do not depend on how many workers computed it: LibTorch's batchnorm rounds
  // differently, and QAT's fake quantization turns such 1e-7 differences into whole steps. auto:
  // on for quantization-aware training (the simulation comes from the factory), whose batchnorm
  // folding and observer ranges need the global batch.
  synced_batchnorm_ = job_.train.sync_batchnorm == "true" || (job_.train.sync_batchnorm == "auto" && factory_);
  if (synced_batchnorm_) model_->set_training_batchnorm(sync_batch_norm);
  if (job_.train.channels_last) to_channels_last(model_);

  LoaderOptions lo;
  lo.batch_size = job_.train.batch_size;
  lo.drop_last = job_.train.drop_last;
  lo.seed = static_cast<uint64_t>(job_.train.seed);
  lo.prefetch = job_.train.prefetch;
  lo.augment = normalization_;
  lo.augment.shift = job_.data.shift;
  lo.augment.hflip = job_.data.hflip;
  lo.shard = world.rank();
  lo.shards = world.size();
  if (objective_) lo.ahead = objective_->batch_ahead();
  loader_ = std::make_unique<Loader>(data_.train, lo);

  ModelCost cost = total_cost(spec_);
  log_->line(fmt::format("model {} params, {} MACs per example; data {} train / {} test examples of {}; {} threads", cost.params, cost.macs,
                         data_.train->size(), data_.test->size(), shape_string(data_.shape), threads));
  if (world.distributed())
    log_->line(fmt::format("data parallel: rank {} of {} workers, a shard of each global batch of {}; batchnorm {}", world.rank(), world.size(),
                           job_.train.batch_size,
                           synced_batchnorm_ ? "synchronized over the workers (train.sync_batchnorm)" : "per worker"));
  precision_ = resolve_precision(job_.train.precision);
  if (job_.train.precision != "fp32")
    log_->line(fmt::format("precision {} (train.precision = {}; the CPU's bf16 flags: {})", precision_.name, job_.train.precision,
                           precision_.cpu_flags.empty() ? "none" : precision_.cpu_flags));
}

void Trainer::train_epoch(int64_t epoch) {
  model_->train();
  torch::manual_seed(job_.train.seed * 7919 + epoch + 1);  // dropout: the same per epoch, resumed or not
  loader_->start_epoch(epoch);
  const int64_t steps = loader_->batches_per_epoch();
  const double total_epochs = static_cast<double>(job_.train.epochs);
  Progress progress(options_.quiet || !leader_, job_.train.log_seconds);
  progress.start(fmt::format("epoch {}/{}", epoch + 1, job_.train.epochs), steps);
  auto t0 = std::chrono::steady_clock::now();
  double loss_sum = 0;
  int64_t correct = 0, seen = 0, step = 0;
  namespace F = torch::nn::functional;
  auto loss_options = F::CrossEntropyFuncOptions().label_smoothing(job_.train.label_smoothing);
  std::vector<std::string> tap_names = objective_ ? objective_->student_taps() : std::vector<std::string>{};
  std::map<std::string, torch::Tensor> taps;
  Batch batch;
  while (loader_->next(batch)) {
    double lr = learning_rate(job_.optim, epoch + static_cast<double>(step) / steps, total_epochs);
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
    for (StepHook* hook : hooks_) hook->begin_step(model_, epoch + static_cast<double>(step) / steps);
    optimizer_->zero_grad();
    torch::Tensor logits, loss;
    {
      Bf16Autocast autocast(precision_.name == "bf16");  // the forward and the loss; the backward outside
      logits = tap_names.empty() ? model_->forward(batch.x) : model_->forward_with(batch.x, tap_names, taps);
      loss = objective_ ? objective_->loss(batch, logits, taps) : F::cross_entropy(logits, batch.y, loss_options);
    }
    double loss_value = loss.item<double>();
    if (!std::isfinite(loss_value))
      throw diverged(fmt::format("the loss became {} at epoch {}, step {}", loss_value, epoch + 1, step + 1), epoch);
    const int64_t n = batch.y.size(0);
    if (batch.global_size != n) loss = loss * (static_cast<double>(n) / batch.global_size);  // this worker's share of the batch's mean
    loss.backward();
    all_reduce_gradients(params_);
    for (StepHook* hook : hooks_) hook->after_backward(model_);
    if (job_.train.grad_clip > 0) torch::nn::utils::clip_grad_norm_(model_->parameters(), job_.train.grad_clip);
    optimizer_->step();
    for (StepHook* hook : hooks_) hook->after_step(model_);
    if (batch.counted) {
      loss_sum += loss_value * n;
      correct += (logits.argmax(1) == batch.y).sum().item<int64_t>();
      seen += n;
    }
    ++step;
    progress.update(step, loss_sum / std::max<int64_t>(seen, 1), static_cast<double>(correct) / std::max<int64_t>(seen, 1), seen / seconds_since(t0));
  }
  progress.finish();
  double correct_all = static_cast<double>(correct), seen_all = static_cast<double>(seen);
  sum_over_workers({&loss_sum, &correct_all, &seen_all});
  train_loss_ = loss_sum / std::max(seen_all, 1.0);
  train_accuracy_ = correct_all / std::max(seen_all, 1.0);
  const nlohmann::json objective_metrics = objective_ ? objective_->epoch_metrics() : nlohmann::json::object();  // every worker: it may sum over them
  finish_epoch(epoch, seconds_since(t0), static_cast<int64_t>(seen_all), objective_metrics);
}

void Trainer::finish_epoch(int64_t epoch, double seconds, int64_t samples, const nlohmann::json& objective_metrics) {
  train_seconds_ += seconds;
  train_samples_ += samples;
  if (!leader_) return;  // rank 0 evaluates and writes; the others go on to the next epoch
  last_test_ = evaluate(model_, data_.test, normalization_, job_.train.eval_batch_size);
  if (!std::isfinite(last_test_.loss))  // the epoch's last steps broke the weights: not saved as an epoch done
    throw diverged(fmt::format("after epoch {} the test loss is {}", epoch + 1, last_test_.loss), epoch);
  EvalResult val;
  if (data_.val) val = evaluate(model_, data_.val, normalization_, job_.train.eval_batch_size);
  double metric = data_.val ? val.accuracy : last_test_.accuracy;
  bool best = metric > best_metric_;
  if (best) best_metric_ = metric;
  nlohmann::json record = {{"epoch", epoch + 1},
                           {"lr", learning_rate(job_.optim, epoch + 1.0, static_cast<double>(job_.train.epochs))},
                           {"train_loss", train_loss_},
                           {"train_accuracy", train_accuracy_},
                           {"test_loss", last_test_.loss},
                           {"test_accuracy", last_test_.accuracy},
                           {"seconds", seconds},
                           {"samples_per_s", samples / seconds},
                           {"precision", precision_.name}};
  if (data_.val) record["val_accuracy"] = val.accuracy, record["val_loss"] = val.loss;
  record.update(objective_metrics);
  for (StepHook* hook : hooks_) record.update(hook->epoch_metrics(model_));
  // last.pt is written last: it marks the epoch done. A run killed before it redoes the epoch
  // (its metrics record is dropped on resume, so none is doubled) and writes best.pt and the kept
  // epochs again; one killed after it has them all (best_metric in last.pt would otherwise keep a
  // stale best.pt from ever being written again).
  log_->metrics(record);
  nlohmann::json meta = checkpoint_meta(epoch + 1);
  meta["epoch_metrics"] = record;  // what a resumed run's summary needs of this epoch (Objective::resume)
  if (std::count(job_.train.keep_epochs.begin(), job_.train.keep_epochs.end(), epoch + 1))
    save_checkpoint(fmt::format("{}/epoch-{}.pt", checkpoints_, epoch + 1), model_, nullptr, meta, extras());
  if (best) save_checkpoint(checkpoints_ + "/best.pt", model_, nullptr, meta, extras());
  save_checkpoint(checkpoints_ + "/last.pt", model_, optimizer_.get(), meta, extras());
  log_->line(fmt::format("epoch {}/{}: train loss {:.4f} acc {:.2f}% | test loss {:.4f} acc {:.2f}%{} | {:.1f}s, {:.0f} samples/s{}", epoch + 1,
                         job_.train.epochs, train_loss_, 100 * train_accuracy_, last_test_.loss, 100 * last_test_.accuracy,
                         data_.val ? fmt::format(" | val acc {:.2f}%", 100 * val.accuracy) : "", seconds, samples / seconds,
                         best ? " *" : ""));
}

// The objective's adapters and each hook's state, checkpointed beside the model under their names.
CheckpointExtras Trainer::extras() const {
  CheckpointExtras out = {{"objective", extra_.get()}};
  for (StepHook* hook : hooks_) {
    if (!hook->state()) continue;
    if (!out.emplace(hook->state_name(), hook->state()).second)
      throw std::logic_error(fmt::format("two step hooks checkpoint their state as '{}'", hook->state_name()));
  }
  return out;
}

nlohmann::json Trainer::checkpoint_meta(int64_t epochs_done) const {
  return {{"epoch", epochs_done},         {"best_metric", best_metric_},       {"test_accuracy", last_test_.accuracy},
          {"train_seconds", train_seconds_}, {"train_samples", train_samples_}, {"mean", data_.mean},
          {"std", data_.std},             {"config", job_.resolved_ini},      {"stage", objective_ ? objective_->stage() : "train"},
          {"class_names", class_names_},  {"image_input", data_.images}};
}

nlohmann::json Trainer::summary() const {
  ModelCost cost = total_cost(spec_);
  return {{"test_accuracy", last_test_.accuracy},
          {"test_loss", last_test_.loss},
          {"best_metric", best_metric_},
          {"best_metric_is", data_.val ? "val_accuracy" : "test_accuracy"},
          {"params", cost.params},
          {"macs", cost.macs},
          {"epochs", job_.train.epochs},
          {"train_seconds", train_seconds_},
          {"train_samples_per_s", train_seconds_ > 0 ? train_samples_ / train_seconds_ : 0.0},
          {"threads", resolve_threads(job_.train.threads)},
          {"precision", precision_.name},
          {"precision_cpu_flags", precision_.cpu_flags},
          {"model", spec_.to_string()},
          {"checkpoint", checkpoints_ + "/last.pt"},
          {"best_checkpoint", checkpoints_ + "/best.pt"}};
}

nlohmann::json Trainer::run() {
  prepare();
  if (leader_ && !options_.resume && std::count(job_.train.keep_epochs.begin(), job_.train.keep_epochs.end(), 0))
    save_checkpoint(checkpoints_ + "/epoch-0.pt", model_, nullptr, checkpoint_meta(0), extras());
  int64_t stop_at = options_.stop_after_epochs >= 0 ? start_epoch_ + options_.stop_after_epochs : job_.train.epochs;
  for (int64_t epoch = start_epoch_; epoch < std::min(stop_at, job_.train.epochs); ++epoch) train_epoch(epoch);
  if (start_epoch_ >= job_.train.epochs)  // resumed a finished run: measure it again for the summary
    last_test_ = evaluate(model_, data_.test, normalization_, job_.train.eval_batch_size);
  if (stop_at < job_.train.epochs) return {{"stopped_after_epoch", stop_at}};
  if (!leader_) return {{"rank", World::get().rank()}};
  nlohmann::json s = summary();
  if (objective_) s.update(objective_->finish(model_, data_, normalization_));
  for (StepHook* hook : hooks_) s.update(hook->finish(model_));
  if (!options_.leave_summary) run_dir_->write_summary(s);
  log_->line(fmt::format("done: test accuracy {:.2f}%, {:.0f} samples/s{}", 100 * last_test_.accuracy, s["train_samples_per_s"].get<double>(),
                         options_.leave_summary ? "" : ", " + job_.out + "/summary.json written"));
  return s;
}

}  // namespace

nlohmann::json run_train_job(const JobConfig& job, const RunOptions& options, Objective* objective, std::vector<StepHook*> hooks,
                             const ModelFactory& factory) {
  return Trainer(job, options, objective, std::move(hooks), factory).run();
}

}  // namespace shrink
