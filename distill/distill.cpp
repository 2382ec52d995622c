#include "distill/distill.h"

#include <fmt/format.h>

#include <chrono>
#include <limits>

#include <sstream>

#include "common/error.h"
#include "common/shape.h"
#include "distill/cache.h"
#include "distill/losses.h"
#include "distill/teacher.h"
#include "distill/thread_split.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/evaluate.h"
#include "train/objective.h"

namespace shrink {
namespace {

namespace F = torch::nn::functional;

std::vector<std::pair<std::string, std::string>> parse_pairs(const Config& c, const std::string& key) {
  std::vector<std::pair<std::string, std::string>> pairs;
  std::stringstream in(c.get<std::string>(key));
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(std::remove_if(item.begin(), item.end(), ::isspace), item.end());
    size_t colon = item.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == item.size())
      c.fail(key, fmt::format("'{}' is not a pair student_layer:teacher_layer", item));
    pairs.emplace_back(item.substr(0, colon), item.substr(colon + 1));
  }
  return pairs;
}

// Hint adapters: per pair, a 1x1 conv (images) or linear (features) from the student layer's
// width to the teacher layer's.
struct Adapters : torch::nn::Module {
  std::vector<torch::nn::AnyModule> per_pair;
};

class DistillObjective : public Objective {
 public:
  explicit DistillObjective(const DistillConfig& c) : c_(c) {}
  std::string stage() const override { return "distill"; }

  void prepare(const Data& data, const Augment& normalization, SpecNet& student, RunLog& log) override {
    teacher_ = Teacher::load(c_.teacher_path, c_.teacher_kind, c_.channels_last, c_.cache_dir);
    check_teacher_fits(data, normalization);
    build_feature_losses(student->spec());
    // (an int8 .shrink teacher is on the runtime from the start: the engine checks it)
    if (c_.teacher_engine != "libtorch" || teacher_->engine() != "libtorch") move_teacher_to_engine(data, normalization, log);
    teacher_test_ = teacher_accuracy(data, normalization);
    log.line(fmt::format("teacher {} ({}): test accuracy {:.2f}%", teacher_->path(), teacher_->kind(), 100 * teacher_test_));
    if (teacher_->int8_simulated())
      log.line(fmt::format("teacher {}: a quantized checkpoint; it teaches with its int8 simulation, as it computes once exported", teacher_->path()));
    bool augmented = c_.data.shift > 0 || c_.data.hflip;
    bool features = !teacher_taps_.empty();
    if (c_.cache == "augment-free" || (c_.cache == "auto" && !augmented && !features)) {
      if (features) throw UserError("distill.cache = augment-free caches logits only; hints and attention need the teacher on every batch");
      auto cached = teacher_logits_cached(*teacher_, data.train, normalization, c_.cache_dir, c_.eval_batch_size);
      cached_ = cached.logits;
      teacher_outputs_ = cached.reused ? "cache (reused)" : "cache (computed)";
      log.line(fmt::format("teacher logits: {} {}", cached.reused ? "reused" : "computed and cached in", cached.file));
    } else {
      choose_where_teacher_runs(data, normalization, student, log);
      teacher_outputs_ = ahead_ ? "teacher on every batch, ahead on the loader's thread" : "teacher on every batch";
    }
  }

  // teacher.ahead: a runtime teacher on every batch runs either beside each step on the training
  // threads, or ahead on the loader's thread while the student trains on the batch before; auto
  // times both (and each way to split the threads) and takes the faster.
  void choose_where_teacher_runs(const Data& data, const Augment& normalization, SpecNet& student, RunLog& log) {
    if (c_.teacher_ahead == "false") return;
    const bool runtime = teacher_->engine() != "libtorch";
    if (!runtime || c_.prefetch == 0) {
      if (c_.teacher_ahead == "true")
        log.line(runtime ? "teacher.ahead: train.prefetch = 0 leaves no loader thread to run the teacher on; it runs beside each step"
                         : "teacher.ahead: only a runtime teacher runs ahead; this one runs beside each step");
      return;
    }
    const int threads = torch::get_num_threads();
    if (!student->describe().empty()) {  // a quantized simulation (QAT): timing its steps would move its observers' ranges
      ahead_ = c_.teacher_ahead == "true";
      if (c_.teacher_ahead == "auto") log.line("teacher.ahead = auto: a quantization-aware student is not timed; the teacher runs beside each step");
      return;
    }
    if (c_.teacher_threads > 0 || threads < 2) {  // nothing to choose: teacher.threads is the user's split; one thread cannot be split
      ahead_ = c_.teacher_ahead == "true";
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    ThreadSplit split = time_thread_split(data, normalization, student, threads, c_.teacher_ahead == "auto");
    ahead_ = split.ahead;
    log.line(fmt::format("teacher.ahead = {}: {} (timed on a training batch in {:.1f} s)", c_.teacher_ahead, describe(split, threads),
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()));
    thread_split_ = {{"ahead", split.ahead}, {"student_threads", split.student_threads}, {"teacher_threads", split.teacher_threads},
                     {"batch_ms", split.batch_ms}, {"serial_ms", split.serial_ms}};
  }

  // Times the student's forward and backward and the teacher's forward on the first training batch
  // at each thread count choose_thread_split asks for, and sets the counts it chose. The student
  // leaves as it came: batchnorm statistics, gradients and the random state are put back.
  ThreadSplit time_thread_split(const Data& data, const Augment& normalization, SpecNet& student, int threads, bool allow_serial) {
    Batch batch;
    for_each_batch(data.train, c_.batch_size, normalization, [&](const Batch& b) { batch = b; }, 1);
    std::vector<torch::Tensor> buffers;
    for (const auto& b : student->buffers()) buffers.push_back(b.clone());
    auto generator = at::detail::getDefaultCPUGenerator();
    const torch::Tensor random_state = generator.get_state();
    constexpr int kReps = 3;
    auto student_ms = [&](int n) {
      torch::set_num_threads(n);
      return median_ms([&] { F::cross_entropy(student->forward(batch.x), batch.y).backward(); }, kReps);
    };
    std::map<std::string, torch::Tensor> features;  // the layers hints and attention read cost their share too
    auto teacher_ms = [&](int n) {
      teacher_->set_threads(n);
      return median_ms([&] { teacher_->forward(batch.x, teacher_taps_, &features); }, kReps);
    };
    ThreadSplit split = choose_thread_split(threads, allow_serial, student_ms, teacher_ms);
    torch::set_num_threads(split.student_threads);
    teacher_->set_threads(split.teacher_threads);
    torch::NoGradGuard no_grad;
    auto now = student->buffers();
    for (size_t k = 0; k < now.size(); ++k) now[k].copy_(buffers[k]);
    for (auto& p : student->parameters()) p.mutable_grad() = torch::Tensor();
    generator.set_state(random_state);
    return split;
  }

  // teacher.engine: the runtime runs a shrink checkpoint's teacher (its logits, and the layers the
  // feature losses read when the compiled model forms them; else it stays on LibTorch).
  void move_teacher_to_engine(const Data& data, const Augment& normalization, RunLog& log) {
    const std::string engine = c_.teacher_engine;
    if (teacher_->kind() == "torchscript") {
      log.line(fmt::format("teacher.engine = {}: a TorchScript teacher runs on LibTorch", engine));
    } else {
      const int threads = c_.teacher_threads > 0 ? c_.teacher_threads : torch::get_num_threads();
      teacher_ = teacher_on_engine(std::move(teacher_),
                                   {engine, data, normalization, c_.cache_dir, c_.force_int8_teacher, c_.eval_batch_size, threads, log, teacher_taps_});
    }
  }

  // A runtime teacher (thread-safe, off LibTorch's autograd) computes the next batch's logits on the
  // loader's thread; its logits are the same as on the training thread.
  std::function<void(Batch&)> batch_ahead() override {
    if (!ahead_) return nullptr;
    return [this](Batch& b) { b.soft_targets = teacher_->forward(b.x, teacher_taps_, &b.teacher_features); };
  }

  std::vector<std::string> student_taps() const override { return student_taps_; }
  std::shared_ptr<torch::nn::Module> trainable() override { return adapters_; }

  torch::Tensor loss(const Batch& batch, const torch::Tensor& logits, const std::map<std::string, torch::Tensor>& taps) override {
    std::map<std::string, torch::Tensor> teacher_features = batch.teacher_features;  // computed ahead, or below
    torch::Tensor teacher_logits = cached_.defined()              ? cached_.index_select(0, batch.index)
                                   : batch.soft_targets.defined() ? batch.soft_targets
                                                                  : teacher_->forward(batch.x, teacher_taps_, &teacher_features);
    auto soft = soft_target_loss(logits, teacher_logits, c_.temperature);
    auto hard = F::cross_entropy(logits, batch.y);
    auto loss = c_.alpha * soft + (1 - c_.alpha) * hard;
    double hint_value = 0, attention_value = 0;
    for (size_t k = 0; k < c_.hints.size(); ++k) {
      auto h = hint_loss(adapters_->per_pair[k].forward(taps.at(c_.hints[k].first)), teacher_features.at(c_.hints[k].second));
      loss = loss + c_.hint_weight * h;
      hint_value += h.item<double>();
    }
    for (const auto& [s, t] : c_.attention) {
      auto a = attention_loss(taps.at(s), teacher_features.at(t));
      loss = loss + c_.attention_weight * a;
      attention_value += a.item<double>();
    }
    const int64_t n = batch.counted ? batch.y.size(0) : 0;  // a short last batch every worker runs whole counts once
    sums_.soft += soft.item<double>() * n;
    sums_.hint += hint_value * n;
    sums_.attention += attention_value * n;
    sums_.count += n;
    return loss;
  }

  nlohmann::json epoch_metrics() override {
    sum_over_workers({&sums_.soft, &sums_.hint, &sums_.attention, &sums_.count});  // the global batch's means
    const double count = std::max(sums_.count, 1.0);
    nlohmann::json m = {{"kd_loss", sums_.soft / count}};
    if (!c_.hints.empty()) m["hint_loss"] = sums_.hint / count;
    if (!c_.attention.empty()) m["attention_loss"] = sums_.attention / count;
    last_kd_ = m["kd_loss"].get<double>();
    sums_ = {};
    return m;
  }

  void resume(const nlohmann::json& last_epoch_metrics) override { last_kd_ = last_epoch_metrics.value("kd_loss", 0.0); }

  nlohmann::json finish(SpecNet& student, const Data& data, const Augment& normalization) override {
    torch::NoGradGuard no_grad;
    student->eval();
    int64_t agree = 0, total = 0;
    for_test_batches(data, normalization, [&](const Batch& b) {
      agree += (student->forward(b.x).argmax(1) == teacher_->forward(b.x).argmax(1)).sum().item<int64_t>();
      total += b.y.size(0);
    });
    student->train();
    return {{"teacher", teacher_->path()},
            {"teacher_kind", teacher_->kind()},
            {"teacher_engine", teacher_->engine()},
            {"teacher_engine_report", teacher_->engine_report()},
            {"teacher_test_accuracy", teacher_test_},
            {"agreement_with_teacher", static_cast<double>(agree) / std::max<int64_t>(total, 1)},
            {"kd_loss_final", last_kd_},
            {"teacher_outputs", teacher_outputs_},
            {"teacher_thread_split", thread_split_}};
  }

 private:
  void for_test_batches(const Data& data, const Augment& normalization, const std::function<void(const Batch&)>& fn) {
    for_each_batch(data.test, c_.eval_batch_size, normalization, fn);
  }

  double teacher_accuracy(const Data& data, const Augment& normalization) {
    int64_t correct = 0, total = 0;
    for_test_batches(data, normalization, [&](const Batch& b) {
      correct += (teacher_->forward(b.x).argmax(1) == b.y).sum().item<int64_t>();
      total += b.y.size(0);
    });
    return static_cast<double>(correct) / std::max<int64_t>(total, 1);
  }

  void check_teacher_fits(const Data& data, const Augment& normalization) {
    check_class_names(data.class_names, teacher_->class_names, "teacher " + teacher_->path());
    // (A conv net ending in a global pool runs on other sizes in LibTorch, computing other features;
    // on the runtime it would read past each example.)
    if (const ModelSpec* spec = teacher_->spec(); spec && spec->input != data.shape)
      throw UserError(fmt::format("teacher {} takes examples of {}; the data's are {}", teacher_->path(), shape_string(spec->input), shape_string(data.shape)));
    if (!teacher_->mean.empty() && (teacher_->mean != normalization.mean || teacher_->std != normalization.std))
      throw UserError(fmt::format("teacher {} was trained with another input normalization than data.normalize gives the student",
                                  teacher_->path()));
    std::vector<int64_t> shape{2};
    shape.insert(shape.end(), data.shape.begin(), data.shape.end());
    auto logits = teacher_->forward(torch::zeros(shape));
    if (logits.dim() != 2 || logits.size(1) != data.classes)
      throw UserError(fmt::format("teacher {} outputs {} values per example but the data has {} classes", teacher_->path(),
                                  logits.dim() == 2 ? logits.size(1) : logits.numel() / 2, data.classes));
  }

  // Checks the hint and attention layer pairs and builds the hint adapters.
  void build_feature_losses(const ModelSpec& student) {
    adapters_ = std::make_shared<Adapters>();
    if (c_.hints.empty() && c_.attention.empty()) return;
    const ModelSpec* tspec = teacher_->spec();
    if (!tspec) throw UserError("distill.hints and distill.attention need a shrink checkpoint as teacher (TorchScript gives logits only)");
    auto sinfo = analyze(student), tinfo = analyze(*tspec);
    auto shape_of = [](const ModelSpec& spec, const std::vector<LayerInfo>& info, const std::string& name, const char* who) {
      int i = spec.index_of(name);
      if (i < 0) throw UserError(fmt::format("distill: the {} has no layer named '{}'", who, name));
      return info[i].out_shape;
    };
    int k = 0;
    for (const auto& [s, t] : c_.hints) {
      auto ss = shape_of(student, sinfo, s, "student"), ts = shape_of(*tspec, tinfo, t, "teacher");
      std::string name = fmt::format("hint{}", ++k);
      if (ss.size() == 3 && ts.size() == 3 && ss[1] == ts[1] && ss[2] == ts[2]) {
        auto conv = adapters_->register_module(name, torch::nn::Conv2d(torch::nn::Conv2dOptions(ss[0], ts[0], 1).bias(false)));
        if (c_.channels_last) conv->weight.set_data(conv->weight.data().contiguous(torch::MemoryFormat::ChannelsLast));
        adapters_->per_pair.emplace_back(conv);
      } else if (ss.size() == 1 && ts.size() == 1) {
        adapters_->per_pair.emplace_back(adapters_->register_module(name, torch::nn::Linear(ss[0], ts[0])));
      } else {
        throw UserError(fmt::format("distill.hints {}:{}: shapes {} and {} cannot be matched (need the same height and width, or both flat)", s, t,
                                    shape_string(ss), shape_string(ts)));
      }
      add_taps(s, t);
    }
    for (const auto& [s, t] : c_.attention) {
      auto ss = shape_of(student, sinfo, s, "student"), ts = shape_of(*tspec, tinfo, t, "teacher");
      if (ss.size() != 3 || ts.size() != 3 || ss[1] != ts[1] || ss[2] != ts[2])
        throw UserError(fmt::format("distill.attention {}:{}: shapes {} and {} need the same height and width", s, t, shape_string(ss), shape_string(ts)));
      add_taps(s, t);
    }
  }

  void add_taps(const std::string& s, const std::string& t) {
    if (std::find(student_taps_.begin(), student_taps_.end(), s) == student_taps_.end()) student_taps_.push_back(s);
    if (std::find(teacher_taps_.begin(), teacher_taps_.end(), t) == teacher_taps_.end()) teacher_taps_.push_back(t);
  }

  DistillConfig c_;
  std::unique_ptr<Teacher> teacher_;
  std::shared_ptr<Adapters> adapters_;
  std::vector<std::string> student_taps_, teacher_taps_;
  torch::Tensor cached_;
  std::string teacher_outputs_;
  bool ahead_ = false;  // the teacher's forward runs on the loader's thread (batch_ahead)
  nlohmann::json thread_split_ = nlohmann::json::object();  // what teacher.ahead timed and chose (empty: nothing timed)
  double teacher_test_ = 0, last_kd_ = 0;
  struct {
    double soft = 0, hint = 0, attention = 0;
    double count = 0;  // examples (a double: summed over the workers with the losses)
  } sums_;
};

}  // namespace

void add_distill_options(Keys& keys) {
  add_train_options(keys, "student");
  add_teacher_options(keys);
}

std::unique_ptr<Objective> make_distill_objective(const Config& config, const JobConfig& job) {
  if (config.get<std::string>("teacher.path").empty()) return nullptr;
  return std::make_unique<DistillObjective>(read_distill_config(config, job));
}

void add_teacher_options(Keys& keys) {
  DistillConfig d;
  const double inf = std::numeric_limits<double>::infinity();
  // clang-format off
  keys.add("teacher.path", "", Rule::text(true), "the teacher: a shrink checkpoint, a model file (.onnx, or .shrink: fp32 on any engine, int8 on the runtime as it is) or a TorchScript file (torch.jit.save)")
      .add("teacher.kind", d.teacher_kind, Rule::choice({"auto", "shrink", "torchscript"}), "what teacher.path is (auto: by its content)")
      .add("teacher.engine", d.teacher_engine, Rule::choice({"libtorch", "runtime-fp32", "runtime-int8", "auto"}),
           "where the frozen teacher's forward runs: LibTorch, or shrink's runtime in fp32 or in int8 (calibrated on training batches); "
           "auto: int8 when it agrees with the fp32 teacher on 99.5% of training examples, else fp32, on the runtime")
      .add("teacher.ahead", d.teacher_ahead, Rule::choice({"auto", "true", "false"}),
           "a runtime teacher computes the next batch's logits on the loader's thread while the student trains: auto (when timing a "
           "training batch says it is faster, with the thread split it timed fastest) | true | false")
      .add("teacher.threads", int64_t(d.teacher_threads), Rule::integer(0, 1024),
           "OpenMP threads of a runtime teacher's calls (0: chosen by teacher.ahead's timing, else train.threads)")
      .add("teacher.force_int8", d.force_int8_teacher,
           "run a runtime-int8 teacher even when it agrees with the fp32 teacher on less than 99.5% of training examples")
      .add("distill.temperature", d.temperature, Rule::real(0, 1e6, true), "softmax temperature T of the soft targets")
      .add("distill.alpha", d.alpha, Rule::real(0, 1), "weight of the soft-target loss; 1 - alpha goes to cross-entropy on labels")
      .add("distill.hints", "", Rule::text(true), "FitNets hints: student_layer:teacher_layer pairs, comma-separated")
      .add("distill.hint_weight", d.hint_weight, Rule::real(0, inf), "weight of the hint (feature MSE) loss")
      .add("distill.attention", "", Rule::text(true), "attention transfer: student_layer:teacher_layer pairs")
      .add("distill.attention_weight", d.attention_weight, Rule::real(0, inf), "weight of the attention-transfer loss (~1000)")
      .add("distill.cache", d.cache, Rule::choice({"auto", "off", "augment-free"}), "auto (cache teacher logits when inputs are not augmented) | off | augment-free")
      .add("distill.cache_dir", d.cache_dir, Rule::text(false), "folder of the teacher-output cache files");
  // clang-format on
}

DistillConfig read_distill_config(const Config& c, const JobConfig& job) {
  DistillConfig d;
  d.teacher_path = c.get<std::string>("teacher.path");
  if (d.teacher_path.empty()) c.fail("teacher.path", "give the teacher: a shrink checkpoint, a .shrink or ONNX model file, or a TorchScript file");
  d.teacher_kind = c.get<std::string>("teacher.kind");
  d.teacher_engine = c.get<std::string>("teacher.engine");
  d.force_int8_teacher = c.get<bool>("teacher.force_int8");
  d.teacher_ahead = c.get<std::string>("teacher.ahead");
  d.teacher_threads = static_cast<int>(c.get<int64_t>("teacher.threads"));
  d.temperature = c.get<double>("distill.temperature");
  d.alpha = c.get<double>("distill.alpha");
  d.hints = parse_pairs(c, "distill.hints");
  d.attention = parse_pairs(c, "distill.attention");
  d.hint_weight = c.get<double>("distill.hint_weight");
  d.attention_weight = c.get<double>("distill.attention_weight");
  if (!d.hints.empty() && d.hint_weight == 0) c.fail("distill.hint_weight", "distill.hints is set but its weight is 0");
  if (!d.attention.empty() && d.attention_weight == 0) c.fail("distill.attention_weight", "distill.attention is set but its weight is 0");
  d.cache = c.get<std::string>("distill.cache");
  d.cache_dir = c.get<std::string>("distill.cache_dir");
  d.data = job.data;
  d.eval_batch_size = job.train.eval_batch_size;
  d.batch_size = job.train.batch_size;
  d.prefetch = job.train.prefetch;
  d.channels_last = job.train.channels_last;
  return d;
}

nlohmann::json run_distill_job(const JobConfig& job, const DistillConfig& distill, const RunOptions& options) {
  DistillObjective objective(distill);
  return run_train_job(job, options, &objective);
}

}  // namespace shrink
