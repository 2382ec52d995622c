#include "train/config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <limits>

#include "common/error.h"
#include "parallel/world.h"
#include "train/checkpoint.h"

namespace shrink {
namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kBig = int64_t(1) << 40;  // "any size" for counts that must only be positive
}  // namespace

void add_train_options(Keys& keys, const std::string& model_section) {
  OptimConfig o;
  TrainConfig t;
  DataConfig d;
  const Rule any = Rule::text(true), fraction = Rule::real(0, 1, false, true), non_negative = Rule::real(0, kInf);
  // clang-format off
  keys.add("job.out", "runs/default", Rule::text(false), "run directory (also --out DIR)")
      .add("data.source", d.source, Rule::choice({"hdf5", "idx", "cifar10", "folder", "synthetic"}), "where the examples come from (folder: PNG/JPEG images in class folders)")
      .add("data.path", "", any, "HDF5 file, or folder of IDX / CIFAR-10 files or of images (also --data PATH)")
      .add("data.train_split", d.train_split, Rule::text(false), "HDF5 group, or image subfolder, of the training examples")
      .add("data.test_split", d.test_split, Rule::text(false), "HDF5 group, or image subfolder, of the test examples")
      .add("data.test_share", d.test_share, fraction, "image folder without train/ and test/: each class's share held out for test")
      .add("data.cache", "", any, "image folder: where decoded images are cached (empty: $XDG_CACHE_HOME/shrink or ~/.cache/shrink)")
      .add("data.shape", "", Rule::shape(true), "per-example shape C,H,W (empty: as stored; synthetic: 1,16,16)")
      .add("data.classes", int64_t(0), Rule::integer(0, 1 << 20), "number of classes; labels must be in [0, classes) (0: an image folder's class folders, else 10)")
      .add("data.in_memory", d.in_memory, "load the whole dataset; false reads HDF5 batch by batch")
      .add("data.train_subset", d.train_subset, Rule::integer(0, kBig), "train on this many training examples, a random choice by data.seed (0: all)")
      .add("data.val_split", d.val_split, fraction, "share of train held out for validation (picks the best checkpoint)")
      .add("data.normalize", d.normalize, Rule::choice({"none", "fixed", "dataset"}), "none | fixed (data.mean, data.std) | dataset (computed on train)")
      .add("data.mean", "", Rule::numbers(-1e6, 1e6, true), "per-channel means for normalize = fixed, e.g. 0.5,0.5,0.5")
      .add("data.std", "", Rule::numbers(1e-12, 1e6, true), "per-channel standard deviations for normalize = fixed")
      .add("data.shift", d.shift, Rule::integer(0, 64), "random shift of up to this many pixels (pad and random crop)")
      .add("data.hflip", d.hflip, "random horizontal flips")
      .add("data.synthetic_train", d.synthetic_train, Rule::integer(1, 10000000), "synthetic dataset: training examples")
      .add("data.synthetic_test", d.synthetic_test, Rule::integer(1, 10000000), "synthetic dataset: test examples")
      .add("data.seed", int64_t(0), Rule::integer(0, kBig), "seed of the synthetic data, the validation split, data.train_subset and an image tree's test split")
      .add(model_section + ".spec", "usps_student", Rule::text(false), "preset name or layer string, e.g. 'conv(16) bn relu gap linear(classes)'")
      .add(model_section + ".init", "", any, "start from this checkpoint's weights (same spec); empty: fresh initialization")
      .add("train.epochs", t.epochs, Rule::integer(1, 100000), "epochs")
      .add("train.batch_size", t.batch_size, Rule::integer(1, 1 << 20), "training batch size")
      .add("train.eval_batch_size", t.eval_batch_size, Rule::integer(1, 1 << 20), "evaluation batch size")
      .add("train.seed", t.seed, Rule::integer(0, kBig), "seed of initialization, data order and augmentation")
      .add("train.threads", t.threads, Rule::integer(0, 1024), "LibTorch intra-op threads (0: all cores, shared by this host's workers under shrink launch)")
      .add("train.label_smoothing", t.label_smoothing, fraction, "label smoothing of the cross-entropy")
      .add("train.grad_clip", t.grad_clip, non_negative, "clip the gradient norm to this (0: off)")
      .add("train.drop_last", t.drop_last, "drop the last incomplete training batch")
      .add("train.channels_last", t.channels_last, "NHWC memory format (faster convolutions on oneDNN)")
      .add("train.precision", t.precision, Rule::choice({"fp32", "bf16", "auto"}),
           "fp32, or bf16 autocast (weights and optimizer state in fp32); auto: bf16 only on CPUs with AMX or AVX512-BF16")
      .add("train.sync_batchnorm", t.sync_batchnorm, Rule::choice({"auto", "true", "false"}),
           "data parallel (shrink launch): batchnorm statistics over the whole global batch, as one process computes them, at two collectives "
           "per batchnorm layer and step (false: each worker's own, as PyTorch's DDP; auto: true for quantization-aware training)")
      .add("train.prefetch", int64_t(t.prefetch), Rule::integer(0, 64), "batches prepared ahead on a background thread (0: none)")
      .add("train.log_seconds", t.log_seconds, Rule::real(0, kInf, true), "interval of progress lines when not on a terminal")
      .add("train.keep_epochs", "", Rule::numbers(0, 100000, true, true), "also keep checkpoints/epoch-K.pt after these epochs, e.g. 0,2 (0: initial weights; for rewinding)")
      .add("optim.name", o.name, Rule::choice({"sgd", "adamw"}), "the optimizer")
      .add("optim.lr", o.lr, Rule::real(0, 1e6, true), "peak learning rate")
      .add("optim.momentum", o.momentum, fraction, "SGD momentum")
      .add("optim.nesterov", o.nesterov, "SGD Nesterov momentum")
      .add("optim.weight_decay", o.weight_decay, non_negative, "weight decay (decoupled for adamw)")
      .add("optim.beta1", o.beta1, fraction, "AdamW beta1")
      .add("optim.beta2", o.beta2, fraction, "AdamW beta2")
      .add("optim.schedule", o.schedule, Rule::choice({"constant", "step", "cosine"}), "per step, to optim.min_lr")
      .add("optim.warmup_epochs", o.warmup_epochs, non_negative, "linear warm-up from 0 over this many epochs")
      .add("optim.step_epochs", o.step_epochs, Rule::real(0, kInf, true), "step schedule: multiply by gamma every this many epochs")
      .add("optim.gamma", o.gamma, Rule::real(0, 1e6, true), "step schedule factor")
      .add("optim.min_lr", o.min_lr, non_negative, "cosine schedule: final learning rate (at most optim.lr)");
  // clang-format on
}

namespace {

// The checkpoint a job starts from: model.init (student.init), or what prune and quantize take.
std::pair<std::string, std::string> start_checkpoint(const Config& c, const std::string& section) {
  for (const std::string& key : {section + ".init", std::string("prune.checkpoint"), std::string("quantize.checkpoint")})
    if (c.has(key) && !c.get<std::string>(key).empty()) return {key, c.get<std::string>(key)};
  return {};
}

// A model started from a checkpoint (an imported one, say) needs no spec restated, and reads its
// inputs normalized as it was trained: both come from the checkpoint where the config leaves
// them at their defaults (the saved config.ini then states them, for --resume and eval).
void take_from_start(const Config& c, const std::string& section, JobConfig& j) {
  const auto [key, path] = start_checkpoint(c, section);
  const bool spec_open = key == section + ".init" && c.where(section + ".spec") == "default";
  const bool normalize_open = c.where("data.normalize") == "default";
  if (path.empty() || !(spec_open || normalize_open)) return;
  nlohmann::json meta = read_checkpoint_meta(path);
  Config resolved = c;
  const std::string origin = path + " (" + key + ")";
  if (spec_open) {
    j.model = meta.at("spec").get<std::string>();
    resolved.set(section + ".spec", j.model, origin);
  }
  auto mean = meta.value("mean", std::vector<double>{}), std = meta.value("std", std::vector<double>{});
  if (!mean.empty() && normalize_open) {
    j.data.normalize = "fixed", j.data.mean = mean, j.data.std = std;
    resolved.set("data.normalize", "fixed", origin);
    resolved.set("data.mean", fmt::format("{}", fmt::join(mean, ",")), origin);
    resolved.set("data.std", fmt::format("{}", fmt::join(std, ",")), origin);
  }
  j.resolved_ini = resolved.to_ini();
}

}  // namespace

JobConfig read_job_config(const Config& c) {
  JobConfig j;
  j.out = c.get<std::string>("job.out");
  DataConfig& d = j.data;
  d.source = c.get<std::string>("data.source");
  d.path = c.get<std::string>("data.path");
  d.train_split = c.get<std::string>("data.train_split");
  d.test_split = c.get<std::string>("data.test_split");
  if (!c.get<std::string>("data.shape").empty()) d.shape = parse_shape(c.get<std::string>("data.shape"));
  d.test_share = c.get<double>("data.test_share");
  d.cache = c.get<std::string>("data.cache");
  // 0: an image folder's classes are its class folders (a count given must agree); other sources
  // have no list of classes to count, and 10 was always their default.
  d.classes = c.get<int64_t>("data.classes");
  if (d.classes == 0 && d.source != "folder") d.classes = 10;
  d.in_memory = c.get<bool>("data.in_memory");
  d.train_subset = c.get<int64_t>("data.train_subset");
  d.val_split = c.get<double>("data.val_split");
  d.normalize = c.get<std::string>("data.normalize");
  d.mean = config_numbers(c, "data.mean");
  d.std = config_numbers(c, "data.std");
  d.shift = c.get<int64_t>("data.shift");
  d.hflip = c.get<bool>("data.hflip");
  d.synthetic_train = c.get<int64_t>("data.synthetic_train");
  d.synthetic_test = c.get<int64_t>("data.synthetic_test");
  d.seed = static_cast<uint64_t>(c.get<int64_t>("data.seed"));
  std::string section = c.has("model.spec") ? "model" : "student";
  j.model = c.get<std::string>(section + ".spec");
  j.init = c.get<std::string>(section + ".init");

  TrainConfig& t = j.train;
  t.epochs = c.get<int64_t>("train.epochs");
  t.batch_size = c.get<int64_t>("train.batch_size");
  t.eval_batch_size = c.get<int64_t>("train.eval_batch_size");
  t.seed = c.get<int64_t>("train.seed");
  t.threads = c.get<int64_t>("train.threads");
  t.label_smoothing = c.get<double>("train.label_smoothing");
  t.grad_clip = c.get<double>("train.grad_clip");
  t.drop_last = c.get<bool>("train.drop_last");
  t.channels_last = c.get<bool>("train.channels_last");
  t.prefetch = static_cast<int>(c.get<int64_t>("train.prefetch"));
  t.sync_batchnorm = c.get<std::string>("train.sync_batchnorm");
  t.precision = c.get<std::string>("train.precision");
  t.log_seconds = c.get<double>("train.log_seconds");
  for (double e : config_numbers(c, "train.keep_epochs")) t.keep_epochs.push_back(static_cast<int64_t>(e));

  OptimConfig& o = j.optim;
  o.name = c.get<std::string>("optim.name");
  o.lr = c.get<double>("optim.lr");
  o.momentum = c.get<double>("optim.momentum");
  o.nesterov = c.get<bool>("optim.nesterov");
  if (o.nesterov && o.momentum == 0 && o.name == "sgd") c.fail("optim.nesterov", "Nesterov needs optim.momentum > 0");
  o.weight_decay = c.get<double>("optim.weight_decay");
  o.beta1 = c.get<double>("optim.beta1");
  o.beta2 = c.get<double>("optim.beta2");
  o.schedule = c.get<std::string>("optim.schedule");
  o.warmup_epochs = c.get<double>("optim.warmup_epochs");
  o.step_epochs = c.get<double>("optim.step_epochs");
  o.gamma = c.get<double>("optim.gamma");
  o.min_lr = c.get<double>("optim.min_lr");
  if (o.min_lr > o.lr) c.fail("optim.min_lr", "must be at most optim.lr");
  j.resolved_ini = c.to_ini();
  take_from_start(c, section, j);
  return j;
}

int resolve_threads(int64_t requested) { return requested > 0 ? static_cast<int>(requested) : default_worker_threads(); }

}  // namespace shrink
