#include "jobs/runtime_teacher.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "common/error.h"
#include "distill/cache.h"
#include "export/export.h"
#include "jobs/import.h"
#include "quantize/quantize.h"
#include "runtime/model_file.h"
#include "runtime/model_meta.h"
#include "shrink/runtime.hpp"
#include "train/fold.h"
#include "train/run_log.h"

namespace shrink {
namespace {

constexpr double kMinInt8Agreement = 0.995;  // top-1 agreement with the fp32 teacher an int8 teacher needs
constexpr int64_t kAgreementExamples = 10000;  // training examples it is measured on (at most)

class RuntimeTeacher : public Teacher {
 public:
  // `file`, exported from the teacher `libtorch` (which measure_against_libtorch compares it with).
  RuntimeTeacher(std::unique_ptr<Teacher> libtorch, const std::string& engine, const std::string& file, int threads)
      : libtorch_(std::move(libtorch)), engine_(engine), file_(file), model_(load(file, threads, engine)) {
    mean = libtorch_->mean;
    std = libtorch_->std;
    class_names = libtorch_->class_names;
    path_ = libtorch_->path();
    checkpoint_ = libtorch_->checkpoint();
    if (const ModelSpec* spec = libtorch_->spec()) folded_ = folded_batchnorms(*spec);
    // Teacher-output caches are keyed by this: another engine or calibration gives other logits.
    hash_ = fmt::format("{}-{}-{}", libtorch_->file_hash(), engine, hash_file(file));
    prepare();
  }
  // An int8 .shrink file given as teacher: it runs as it is, whatever the runtime engine; there
  // is no LibTorch teacher behind it.
  RuntimeTeacher(const std::string& file, const ModelMeta& meta, const ModelSpec& spec, rt::Model model)
      : file_spec_(spec), engine_("runtime"), file_(file), model_(std::move(model)) {
    mean = meta.normalization.mean;
    std = meta.normalization.std;
    class_names = meta.class_names;
    given_as(file, hash_file(file) + "-runtime");
    prepare();
  }

  torch::Tensor forward(const torch::Tensor& x, const std::vector<std::string>& taps, std::map<std::string, torch::Tensor>* tapped) override {
    torch::Tensor raw = x.to(torch::kFloat32).contiguous();         // N,C,H,W order, as the runtime reads it
    if (!mean.empty()) {
      // The loader's batches are normalized; the runtime normalizes raw input itself.
      std::vector<int64_t> per_channel(raw.dim(), 1);
      per_channel[1] = -1;
      raw = (raw * std_.view(per_channel) + mean_.view(per_channel)).contiguous();
    }
    const int64_t n = raw.size(0);
    std::vector<std::string> names;
    for (const auto& t : taps) names.push_back(runtime_name(t));
    std::vector<std::vector<float>> values;
    std::vector<float> logits = taps.empty() ? model_.predict(raw.data_ptr<float>(), n) : model_.predict(raw.data_ptr<float>(), n, names, values);
    for (size_t k = 0; k < values.size(); ++k) {
      std::vector<int64_t> shape{n};
      for (int64_t d : output_shapes_.at(names[k])) shape.push_back(d);
      (*tapped)[taps[k]] = torch::from_blob(values[k].data(), shape, torch::kFloat32).clone();
    }
    return torch::from_blob(logits.data(), {n, model_.classes()}, torch::kFloat32).clone();
  }
  // Of `taps`, the teacher layers whose outputs the compiled model does not form (fused with their
  // activation, or a conv whose batchnorm was folded into it).
  std::vector<std::string> unformed(const std::vector<std::string>& taps) const {
    std::vector<std::string> missing;
    for (const auto& t : taps)
      if (!output_shapes_.count(runtime_name(t))) missing.push_back(t);
    return missing;
  }
  // The exported file's name for teacher layer `tap`: a folded batchnorm's output is its conv's
  // there, and that conv's own output (before the batchnorm) is nowhere ("").
  std::string runtime_name(const std::string& tap) const {
    if (auto it = folded_.find(tap); it != folded_.end()) return it->second;
    for (const auto& [bn, conv] : folded_)
      if (conv == tap) return "";
    return tap;
  }
  std::vector<std::string> outputs() const { return model_.outputs(); }
  std::unique_ptr<Teacher> back_to_libtorch() { return std::move(libtorch_); }
  bool model_file_alone() const { return !libtorch_; }
  const ModelSpec* spec() const override { return libtorch_ ? libtorch_->spec() : &file_spec_; }
  std::string kind() const override { return libtorch_ ? libtorch_->kind() : "shrink-model-int8"; }
  bool int8_simulated() const override { return libtorch_ && libtorch_->int8_simulated(); }
  std::string engine() const override { return engine_ + (model_.precision() == "int8" && engine_ != "runtime-int8" ? " (int8 file)" : ""); }
  nlohmann::json engine_report() const override { return report_; }
  void set_threads(int threads) override {
    if (threads != model_.threads()) model_ = load(file_, threads, engine_);  // loading compiles for batch 1: milliseconds
  }

  // Top-1 agreement with the LibTorch teacher on up to kAgreementExamples training examples (shuffled
  // from a fixed seed, un-augmented), and both test accuracies: an int8 teacher's check.
  void measure_against_libtorch(const Data& data, const Augment& normalization, int64_t batch_size) {
    int64_t agree = 0, seen = 0;
    const int64_t batches = (kAgreementExamples + batch_size - 1) / batch_size;
    for_each_batch(data.train, batch_size, normalization, [&](const Batch& b) {
      agree += (forward(b.x, {}, nullptr).argmax(1) == libtorch_->forward(b.x).argmax(1)).sum().item<int64_t>();
      seen += b.y.size(0);
    }, batches, 0);
    int64_t correct = 0, correct_fp32 = 0, total = 0;
    for_each_batch(data.test, batch_size, normalization, [&](const Batch& b) {
      correct += (forward(b.x, {}, nullptr).argmax(1) == b.y).sum().item<int64_t>();
      correct_fp32 += (libtorch_->forward(b.x).argmax(1) == b.y).sum().item<int64_t>();
      total += b.y.size(0);
    });
    report_["agreement_with_libtorch"] = static_cast<double>(agree) / std::max<int64_t>(seen, 1);
    report_["agreement_examples"] = seen;
    report_["test_accuracy"] = static_cast<double>(correct) / std::max<int64_t>(total, 1);
    report_["libtorch_test_accuracy"] = static_cast<double>(correct_fp32) / std::max<int64_t>(total, 1);
  }

 private:
  // What both constructors finish with.
  void prepare() {
    if (!mean.empty()) mean_ = torch::tensor(mean), std_ = torch::tensor(std);
    for (const auto& name : model_.outputs()) output_shapes_[name] = model_.output_shape(name);  // read per batch, never changed
    report_["file"] = file_;
  }
  // A file the runtime cannot run (damaged in the cache, or a layer it cannot compile) is one line.
  // An int8 teacher takes oneDNN's int8 kernels even without VNNI, where their sums are not exact
  // but fast: measure_against_libtorch measures what that costs (the 99.5% agreement rule).
  static rt::Model load(const std::string& file, int threads, const std::string& engine) {
    try {
      return rt::Model::load(file, threads, rt::Int8Sums::fast);
    } catch (const rt::Error& e) {
      throw UserError(fmt::format("teacher.engine = {}: the runtime cannot run {} ({}); delete it to export the teacher again, "
                                  "or use teacher.engine = libtorch", engine, file, e.what()));
    }
  }

  std::unique_ptr<Teacher> libtorch_;  // null for an int8 .shrink file given as teacher
  ModelSpec file_spec_;                 // that file's spec (batchnorm folded)
  std::string engine_, file_;
  torch::Tensor mean_, std_;  // the normalization as tensors, made once (forward runs per batch)
  std::map<std::string, std::string> folded_;  // folded batchnorm -> the conv that gives its output
  std::map<std::string, std::vector<int64_t>> output_shapes_;  // the outputs the compiled model forms, C,H,W
  rt::Model model_;
  nlohmann::json report_ = nlohmann::json::object();
};

// `checkpoint` exported to `file` unless an earlier run left it there (the name holds the hash of
// what it was made from).
void export_once(const std::string& checkpoint, const std::string& file, const std::string& precision) {
  if (std::filesystem::exists(file)) return;
  ExportOptions options;
  options.precision = precision;
  options.provenance_accuracy = false;
  export_model(checkpoint, file, options);
}

// The fp32 teacher calibrated after training as `shrink quantize --quantize.mode=ptq` does (16
// batches, min-max observers), saved once per teacher and training data.
std::string int8_checkpoint(const Teacher& libtorch, const TeacherEngineRequest& r, const std::string& stem) {
  if (libtorch.int8_simulated()) return libtorch.checkpoint();  // already quantized: its own scales
  QuantizeConfig q;
  const std::string file = fmt::format("{}-int8-data-{}-b{}x{}.pt", stem, hash_examples(*r.data.train, r.normalization), q.calibration_batches, r.batch_size);
  if (!std::filesystem::exists(file)) {
    r.log.line(fmt::format("teacher.engine = runtime-int8: calibrating the teacher on {} training batches of {}", q.calibration_batches, r.batch_size));
    save_ptq_checkpoint(libtorch.checkpoint(), q, r.data, r.batch_size, 0, file);
  }
  return file;
}

// The feature losses read teacher layers the runtime does not form: the teacher stays on LibTorch.
bool stays_on_libtorch(RuntimeTeacher& teacher, const TeacherEngineRequest& r) {
  const std::vector<std::string> missing = teacher.unformed(r.taps);
  if (missing.empty()) return false;
  r.log.line(fmt::format("teacher.engine = {}: hints and attention read {}, which the compiled teacher does not form (a batchnorm folded "
                         "into its conv, a layer fused with its activation; it forms {}): the teacher runs on LibTorch",
                         r.engine, fmt::join(missing, ", "), fmt::join(teacher.outputs(), ", ")));
  return true;
}

// The teacher exported as it is (fp32, or int8 for a quantized teacher) and run on the runtime.
std::unique_ptr<Teacher> on_runtime_fp32(std::unique_ptr<Teacher> libtorch, const TeacherEngineRequest& r, const std::string& stem) {
  // A quantized teacher teaches what it computes, so its file is int8 on either engine.
  const std::string precision = libtorch->int8_simulated() ? "int8" : "fp32";
  const std::string file = fmt::format("{}-{}.shrink", stem, precision);
  export_once(libtorch->checkpoint(), file, precision);
  auto teacher = std::make_unique<RuntimeTeacher>(std::move(libtorch), "runtime-fp32", file, r.threads);
  if (stays_on_libtorch(*teacher, r)) return teacher->back_to_libtorch();
  r.log.line(fmt::format("teacher.engine = {}: the teacher runs on shrink's runtime ({} file {})", r.engine, precision, file));
  return teacher;
}

// An int8 .shrink file given as teacher is on the runtime already: any runtime engine runs it as it
// is (nothing to calibrate, no fp32 teacher to check it against), and feature losses must find
// their layers in it (there is no LibTorch teacher to fall back to).
std::unique_ptr<Teacher> keep_model_file(std::unique_ptr<Teacher> teacher, RuntimeTeacher& file, const TeacherEngineRequest& r) {
  if (r.engine == "libtorch")
    throw UserError(fmt::format("teacher {}: an int8 model file runs on shrink's runtime only (its float weights are not in it): set "
                                "teacher.engine = runtime-int8, or give the checkpoint it was exported from", file.path()));
  if (const auto missing = file.unformed(r.taps); !missing.empty())
    throw UserError(fmt::format("teacher {}: hints and attention read {}, which this int8 model file does not form (it forms {}); give the "
                                "checkpoint it was exported from", file.path(), fmt::join(missing, ", "), fmt::join(file.outputs(), ", ")));
  file.set_threads(r.threads);
  r.log.line(fmt::format("teacher.engine = {}: the teacher is an int8 model file: it runs on shrink's runtime as it is (nothing to calibrate, no fp32 "
                         "teacher to measure it against)", r.engine));
  return teacher;
}

}  // namespace

std::unique_ptr<Teacher> model_file_teacher(const std::string& path, const std::string& cache_dir, bool channels_last) {
  if (format::is_model_file(path) || std::filesystem::path(path).extension() == ".shrink") {  // (a damaged one: the runtime's message)
    try {
      DescribedModel described;
      const ModelMeta meta = ModelMeta::from_json(rt::read_model_file(path).meta, &described);
      if (meta.precision == "int8") return std::make_unique<RuntimeTeacher>(path, meta, described.spec, rt::Model::load(path, 1, rt::Int8Sums::fast));
    } catch (const ModelMetaError& e) {
      throw UserError(fmt::format("teacher {}: {}", path, e.what()));
    } catch (const rt::Error& e) {
      throw UserError(fmt::format("teacher {}", e.what()));  // names the file
    }
  }
  std::filesystem::create_directories(cache_dir);
  const std::string hash = hash_file(path);
  const std::string checkpoint = fmt::format("{}/teacher-{}-imported.pt", cache_dir, hash);
  import_once(path, checkpoint, "teacher");
  auto teacher = Teacher::load(checkpoint, "shrink", channels_last);
  teacher->given_as(path, hash);
  return teacher;
}

std::unique_ptr<Teacher> runtime_teacher(std::unique_ptr<Teacher> libtorch, const TeacherEngineRequest& r) {
  if (auto* file = dynamic_cast<RuntimeTeacher*>(libtorch.get()); file && file->model_file_alone()) return keep_model_file(std::move(libtorch), *file, r);
  std::filesystem::create_directories(r.cache_dir);
  const std::string stem = fmt::format("{}/teacher-{}", r.cache_dir, libtorch->file_hash());
  if (r.engine == "runtime-fp32") return on_runtime_fp32(std::move(libtorch), r, stem);
  // runtime-int8, and auto: int8 when it keeps the teacher's answers, else fp32 on the runtime.
  if (r.engine != "runtime-int8" && r.engine != "auto") throw std::logic_error("runtime_teacher: unknown engine " + r.engine);
  const std::string quantized = int8_checkpoint(*libtorch, r, stem);
  const std::string file = libtorch->int8_simulated() ? stem + "-int8.shrink" : quantized.substr(0, quantized.size() - 3) + ".shrink";
  export_once(quantized, file, "int8");
  auto teacher = std::make_unique<RuntimeTeacher>(std::move(libtorch), "runtime-int8", file, r.threads);
  if (stays_on_libtorch(*teacher, r)) return teacher->back_to_libtorch();
  teacher->measure_against_libtorch(r.data, r.normalization, r.batch_size);
  const nlohmann::json& m = teacher->engine_report();
  const double agreement = m["agreement_with_libtorch"].get<double>();
  const std::string measured = fmt::format("agrees with the fp32 teacher on {:.2f}% of {} training examples; test accuracy {:.2f}% (fp32 {:.2f}%)",
                                           100 * agreement, m["agreement_examples"].get<int64_t>(), 100 * m["test_accuracy"].get<double>(),
                                           100 * m["libtorch_test_accuracy"].get<double>());
  if (agreement < kMinInt8Agreement && !r.force_int8) {
    if (r.engine == "auto") {
      r.log.line(fmt::format("teacher.engine = auto: the int8 teacher {}, under the {:.1f}% it needs: fp32", measured, 100 * kMinInt8Agreement));
      return on_runtime_fp32(teacher->back_to_libtorch(), r, stem);
    }
    throw UserError(fmt::format("teacher.engine = runtime-int8: the int8 teacher {}, under the {:.1f}% it needs: use teacher.engine = runtime-fp32, "
                                "or teacher.force_int8 = true to distil from it anyway", measured, 100 * kMinInt8Agreement));
  }
  r.log.line(fmt::format("teacher.engine = {}: the int8 teacher {}{}", r.engine, measured,
                         agreement < kMinInt8Agreement ? " (under 99.5%: teacher.force_int8 = true)" : ""));
  return teacher;
}

}  // namespace shrink
