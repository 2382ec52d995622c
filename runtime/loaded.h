// A loaded model (Model::Impl is this): the file, its checked description, the plan cache and the
// constants (weights in oneDNN's layouts) that plans share. engine.cpp runs it, validate.cpp
// checks it, plan.cpp and runtime/ops/ compile it.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>

#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "runtime/model_file.h"
#include "runtime/model_meta.h"
#include "runtime/plan.h"
#include "spec/spec.h"

namespace shrink::rt::detail {

struct Loaded {
  ModelFile file;
  ModelMeta meta;  // checked (ModelMeta::from_json)
  ModelSpec spec;
  std::vector<LayerInfo> info;
  std::set<std::string> int8_layers;  // int8 models: meta.quantization's, for lookups
  std::string path;
  int threads = 1;
  uint64_t activation_bytes = 0;  // per example, every layer's output as f32 (an upper bound)
  uint64_t pass_budget = 0;       // working memory one pass of a large batch keeps to (batch_per_pass; set at load)
  uint64_t arena_per_example = 1; // the batch-1 plan's activations
  double work_per_example = 0;     // the batch-1 plan's (Plan::work_per_example)
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  // int8 layers run oneDNN's int8 kernels: on a CPU with VNNI (where they sum exactly), or when
  // the caller asked for Int8Sums::fast; else on floats (ops/weighted.h).
  bool int8_kernels = false;
  std::set<std::string> on_floats;  // without them: the int8 layers that run on floats (ops/weighted.h)

  // Compiled plans, most recently used first; the mutex guards only this list.
  mutable std::mutex cache_mutex;
  mutable std::list<std::shared_ptr<const Plan>> plans;
  // One plan build at a time; it guards `packed` (tensor key -> the layouts made of it).
  mutable std::mutex build_mutex;
  mutable std::map<std::string, std::vector<std::pair<memory::desc, memory>>> packed;
  mutable uint64_t packed_bytes = 0;  // of the layouts packed (not in place)
  mutable std::set<std::string> in_place;  // tensors some plan reads straight from the file

  [[noreturn]] void fail(const std::string& what) const { throw Error(path + ": " + what); }

  const Tensor& tensor(const std::string& name) const {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) fail("tensor " + name + " is missing");
    return it->second;
  }

  bool int8() const { return meta.precision == "int8"; }
  // The grid of activation point `point`, or null when it has none (or the model is fp32).
  const ActivationScale* point_scale(const std::string& point) const {
    if (!meta.quantization) return nullptr;
    auto it = meta.quantization->activations.find(point);
    return it == meta.quantization->activations.end() ? nullptr : &it->second;
  }
  // The grid of `point` as the kernels use it; an error when there is none (`reader` reads it).
  std::pair<float, bool> scale_of(const std::string& point, const std::string& reader) const {
    const ActivationScale* s = point_scale(point);
    if (!s) fail("int8 layer " + reader + " reads " + point + ", which has no activation scale");
    return {static_cast<float>(s->scale), s->is_signed};
  }

  void init(ModelFile file, const std::string& name, int threads, Int8Sums sums);
  void read_metadata();       // validate.cpp
  void check_tensors() const;  // validate.cpp
  // The plan for `batch` that keeps the outputs of the layers `kept` (sorted; each one the batch-1
  // plan names) for the call to return.
  std::shared_ptr<const Plan> plan_for(int64_t batch, const std::vector<std::string>& kept = {}, bool one_thread = false) const;
  Plan build(int64_t n, const std::vector<std::string>& kept, bool one_thread) const;
  // How many examples of a `batch` one pass of a plan takes: all, or fewer, so that a pass's
  // activations stay near the cores' caches (run_passes runs such passes one after another).
  int64_t batch_per_pass(int64_t batch) const;
  // How a call of `batch` runs: in `passes` passes, side by side on the threads, each on one
  // thread (`spread`: pass k takes examples [k * batch / passes, (k + 1) * batch / passes), so
  // they differ by one example at most), or one after another on the plan's threads (each of
  // `pass` examples but the last).
  struct CallShape {
    int64_t pass;  // the most examples a pass takes
    int64_t passes;
    bool spread;
  };
  CallShape call_shape(int64_t batch) const;
  // The logits (probabilities with `softmax`) of a call run in passes of that shape.
  std::vector<float> run_passes(const float* input, int64_t batch, bool softmax, CallShape shape) const;
  // With `step_seconds` (one entry per plan step), each step also waits for its end and adds its
  // time there (a profile: waiting costs a little, so profile and timed runs are kept apart).
  // With `kept_values`, the plan's kept outputs, each as N,C,H,W (or N,F) floats.
  std::vector<float> execute(const Plan& plan, const float* input, bool softmax, std::vector<double>* step_seconds = nullptr,
                             std::vector<std::vector<float>>* kept_values = nullptr) const;
  void read_kept(const Plan& plan, const Binding& bound, std::vector<std::vector<float>>& values) const;
  void write_input(const float* input, int64_t batch, dnnl::memory::data_type type, void* dst) const;

  // `t` in layout `want`: in place when that is the file's layout, else packed once and shared.
  memory constant(const std::string& key, const Tensor& t, const memory::desc& user, const memory::desc& want) const;
  // A constant computed once from the file (int8 biases in the sum's units).
  memory derived(const std::string& key, const memory::desc& d, const std::function<void(float*)>& fill) const;
};

}  // namespace shrink::rt::detail
