#include "distill/teacher.h"

#include <fmt/format.h>
#include <torch/script.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "train/checkpoint.h"
#include "train/fold.h"

namespace shrink {
namespace {

class NativeTeacher : public Teacher {
 public:
  NativeTeacher(const std::string& path, bool channels_last) {
    LoadedModel trained = load_checkpoint(path);
    trained.model->eval();
    spec_ = trained.model->spec();  // hint and attention layers are named in the trained spec
    quantized_ = trained.quantized();
    if (quantized_) {
      model_ = trained.model;  // teaches what it computes: the int8 simulation (which folds its batchnorms itself)
    } else {
      FoldedModel folded = fold_batchnorm(trained.model);  // frozen: batchnorm costs nothing folded into its conv
      model_ = folded.model;
      renamed_ = folded.renamed;
    }
    for (auto& p : model_->parameters()) {
      p.set_requires_grad(false);
      if (channels_last && p.dim() == 4) p.set_data(p.data().contiguous(torch::MemoryFormat::ChannelsLast));
    }
    Augment norm = normalization_of(trained.meta);
    mean = norm.mean;
    std = norm.std;
    class_names = class_names_of(trained.meta);
  }
  torch::Tensor forward(const torch::Tensor& x, const std::vector<std::string>& taps, std::map<std::string, torch::Tensor>* tapped) override {
    torch::NoGradGuard no_grad;
    if (taps.empty()) return model_->forward(x);
    std::vector<std::string> names;
    for (const auto& t : taps) names.push_back(renamed_.count(t) ? renamed_.at(t) : t);
    std::map<std::string, torch::Tensor> got;
    auto logits = model_->forward_with(x, names, got);
    for (size_t k = 0; k < taps.size(); ++k) (*tapped)[taps[k]] = got[names[k]];
    return logits;
  }
  const ModelSpec* spec() const override { return &spec_; }
  std::string kind() const override { return quantized_ ? "shrink-quantized" : "shrink"; }
  bool int8_simulated() const override { return quantized_; }

 private:
  SpecNet model_{nullptr};
  ModelSpec spec_;
  bool quantized_ = false;
  std::map<std::string, std::string> renamed_;
};

class TorchScriptTeacher : public Teacher {
 public:
  explicit TorchScriptTeacher(const std::string& path) {
    try {
      module_ = torch::jit::load(path);
    } catch (const c10::Error& e) {
      throw UserError(fmt::format("teacher {}: neither a shrink checkpoint nor a TorchScript file", path));
    }
    module_.eval();
    for (auto p : module_.parameters()) p.set_requires_grad(false);
  }
  torch::Tensor forward(const torch::Tensor& x, const std::vector<std::string>& taps, std::map<std::string, torch::Tensor>*) override {
    if (!taps.empty()) throw UserError(fmt::format("teacher {}: feature losses need a shrink checkpoint as teacher, not TorchScript", path_));
    torch::NoGradGuard no_grad;
    torch::jit::IValue out;
    try {
      out = module_.forward({x});
    } catch (const std::exception& e) {
      throw UserError(fmt::format("teacher {}: its forward failed on an input of shape {}", path_, shape_string(x.sizes().vec())));
    }
    if (!out.isTensor()) throw UserError(fmt::format("teacher {}: forward must return one tensor of logits", path_));
    return out.toTensor();
  }
  std::string kind() const override { return "torchscript"; }

 private:
  torch::jit::Module module_;
};

bool is_shrink_checkpoint(const std::string& path) {
  try {
    read_checkpoint_meta(path);
    return true;
  } catch (const UserError&) {
    return false;
  }
}

}  // namespace

std::string hash_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(fmt::format("{}: cannot read", path));
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    XXH3_64bits_update(state, buf.data(), static_cast<size_t>(in.gcount()));
  }
  uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return fmt::format("{:016x}", h);
}

namespace {
TeacherEngine& registered_engine() {
  static TeacherEngine engine;
  return engine;
}
ModelFileTeacher& registered_model_file_reader() {
  static ModelFileTeacher reader;
  return reader;
}
}  // namespace

void register_teacher_engine(TeacherEngine engine) { registered_engine() = std::move(engine); }
void register_model_file_teacher(ModelFileTeacher reader) { registered_model_file_reader() = std::move(reader); }

void Teacher::given_as(const std::string& file, const std::string& hash) {
  path_ = file;
  hash_ = hash;
}

std::unique_ptr<Teacher> teacher_on_engine(std::unique_ptr<Teacher> libtorch, const TeacherEngineRequest& request) {
  if (!registered_engine()) throw std::logic_error("teacher.engine = " + request.engine + ": no engine registered (jobs/ registers it)");
  return registered_engine()(std::move(libtorch), request);
}

std::unique_ptr<Teacher> Teacher::load(const std::string& path, const std::string& kind, bool channels_last, const std::string& cache_dir) {
  if (path.empty()) throw UserError("teacher.path is empty: give a shrink checkpoint, a .shrink or ONNX model file, or a TorchScript file");
  if (!std::filesystem::is_regular_file(path)) throw UserError(fmt::format("teacher {}: no such file", path));
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".shrink" || ext == ".onnx") {
    if (!registered_model_file_reader() || cache_dir.empty()) throw std::logic_error("Teacher::load: a model file as teacher needs jobs/' reader and a cache folder");
    return registered_model_file_reader()(path, cache_dir, channels_last);
  }
  std::unique_ptr<Teacher> t;
  if (kind == "shrink" || (kind == "auto" && is_shrink_checkpoint(path))) t = std::make_unique<NativeTeacher>(path, channels_last);
  else if (kind == "torchscript" || kind == "auto") t = std::make_unique<TorchScriptTeacher>(path);
  else throw UserError(fmt::format("teacher.kind = {}: expected auto, shrink or torchscript", kind));
  t->path_ = t->checkpoint_ = path;
  t->hash_ = hash_file(path);
  return t;
}

}  // namespace shrink
