// The teacher of a distillation: a shrink checkpoint (native: its spec is known, so its layers
// can be tapped for feature losses) or a TorchScript file saved by PyTorch (logits only).
// It always runs frozen: eval mode, no gradients. A quantized shrink checkpoint teaches what it
// computes: its int8 simulation (what its exported int8 model gives), not its float weights.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "datasets/data.h"
#include "datasets/loader.h"
#include "spec/spec.h"

namespace shrink {

class RunLog;

class Teacher {
 public:
  virtual ~Teacher() = default;
  // kind: "auto" (a shrink checkpoint if it is one, else TorchScript), "shrink" or "torchscript".
  // A .shrink or .onnx model file is read by what jobs/ registers (register_model_file_teacher),
  // which keeps what it makes of the file in cache_dir.
  static std::unique_ptr<Teacher> load(const std::string& path, const std::string& kind, bool channels_last, const std::string& cache_dir = "");
  // Logits for x; with taps, also the outputs of those teacher layers (native teachers only).
  virtual torch::Tensor forward(const torch::Tensor& x, const std::vector<std::string>& taps = {},
                                std::map<std::string, torch::Tensor>* tapped = nullptr) = 0;
  virtual const ModelSpec* spec() const { return nullptr; }  // null for TorchScript teachers
  virtual std::string kind() const = 0;  // shrink | shrink-quantized | torchscript
  virtual bool int8_simulated() const { return false; }  // a quantized checkpoint, run as its int8 simulation
  virtual std::string engine() const { return "libtorch"; }  // where its forward runs (teacher.engine)
  virtual nlohmann::json engine_report() const { return nlohmann::json::object(); }  // what choosing the engine measured
  // OpenMP threads of each forward call, for engines that set their own (LibTorch's follow the caller's).
  virtual void set_threads(int threads) {}
  const std::string& path() const { return path_; }       // the file given as teacher
  const std::string& file_hash() const { return hash_; }  // xxh3-64 of the file, hex
  // The shrink checkpoint holding its weights: path(), or what a .shrink file given as teacher became.
  const std::string& checkpoint() const { return checkpoint_; }
  // Given as `file` (a model file, of hash_file `hash`), taught from checkpoint(): path() and file_hash() become the file's.
  void given_as(const std::string& file, const std::string& hash);
  // The input normalization the teacher was trained with (empty: none or unknown), and its class names.
  std::vector<float> mean, std;
  std::vector<std::string> class_names;

 protected:
  std::string path_, hash_, checkpoint_;
};

// xxh3-64 of a file's bytes, as 16 hex digits.
std::string hash_file(const std::string& path);

// teacher.engine other than libtorch: the frozen teacher's forward on shrink's own runtime, in fp32
// or int8 (calibrated after training). The runtime and the exporter sit above distill/, so jobs/
// provides the engine (jobs/runtime_teacher.cpp) and registers it; distill/ only asks for it.
struct TeacherEngineRequest {
  std::string engine;          // runtime-fp32 | runtime-int8 | auto (int8 if it agrees on 99.5%, else fp32)
  const Data& data;            // training batches calibrate an int8 teacher and check it
  const Augment& normalization;
  std::string cache_dir;       // where the exported (and calibrated) teacher is kept for later runs
  bool force_int8 = false;     // run an int8 teacher that agrees with the fp32 one on less than 99.5%
  int64_t batch_size = 512;
  int threads = 1;             // OpenMP threads of its calls
  RunLog& log;
  std::vector<std::string> taps = {};  // teacher layers the feature losses read (hints, attention)
};
using TeacherEngine = std::function<std::unique_ptr<Teacher>(std::unique_ptr<Teacher> libtorch, const TeacherEngineRequest& request)>;
void register_teacher_engine(TeacherEngine engine);
std::unique_ptr<Teacher> teacher_on_engine(std::unique_ptr<Teacher> libtorch, const TeacherEngineRequest& request);

// A model file given as teacher, read above distill/ (jobs/ registers the reader,
// jobs/runtime_teacher.cpp): an ONNX or fp32 .shrink file is imported into a shrink checkpoint in
// cache_dir and teaches on any engine; an int8 .shrink file runs on the runtime as it is (engine()
// is not "libtorch").
using ModelFileTeacher = std::function<std::unique_ptr<Teacher>(const std::string& path, const std::string& cache_dir, bool channels_last)>;
void register_model_file_teacher(ModelFileTeacher reader);

}  // namespace shrink
