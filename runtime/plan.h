// A model compiled for one batch size (Plan), and what compiles it (Builder): one oneDNN
// primitive per layer (activations fused as post-ops where they can be, an int8 1x1 conv and the
// depthwise conv after it as one where oneDNN has a kernel for the pair; int8 max pools and
// residual adds are shrink's own kernels), every activation a slot of one per-call arena.
// Builder::build walks the layers and calls each kind's op (runtime/ops/ops.h) with an OpContext:
// the layer, its inputs, and the decisions the builder took around it (a fused activation, the
// output's type and scale). Activations are NHWC (images) or NC (features); in int8 models they
// are u8/s8 with the scales of docs/quantization.md.
#pragma once
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <climits>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/format.h"
#include "spec/spec.h"

namespace shrink::rt::detail {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Loaded;

using format::align_up;  // activations and scratchpads align like tensors in the file (64 bytes)
using format::kAlign;

inline memory::dims dims_of(const std::vector<int64_t>& shape, int64_t batch) {
  memory::dims d{batch};
  d.insert(d.end(), shape.begin(), shape.end());
  return d;
}

// A float already clamped to an int8 grid's range ([-128, 255] at most) rounded half to even, as
// nearbyint rounds in the default rounding mode: added to 1.5 * 2^23 it keeps no fraction. No
// library call, and a form the compiler vectorizes (ops/binary.cpp).
inline float round_on_grid(float clamped) { return (clamped + 12582912.f) - 12582912.f; }

inline int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }  // no overflow near INT64_MAX (a refused batch)

// The work (in int8 MACs: plan.cpp) a parallel region must carry per thread to repay starting it.
inline constexpr double kParallelWorkPerStep = 3e6;

// The calling thread's OpenMP thread count for a scope: oneDNN reads it when a primitive is
// created (a kernel splits its work for that many threads) and when it runs, per thread.
struct ThreadScope {
  int saved;
  explicit ThreadScope(int threads) : saved(omp_get_max_threads()) { omp_set_num_threads(threads); }
  ~ThreadScope() { omp_set_num_threads(saved); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
};

// Every primitive gets its scratchpad from the call (plans are shared by concurrent calls).
inline dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// An activation of a plan: a slot of the per-call arena, with its quantization scale.
struct Act {
  int slot = -1;
  float scale = 0;  // 0: float; else the quantization scale of its u8/s8 values
};

// A primitive argument: an activation slot (per call) or a constant (weights, shared).
struct Arg {
  int id;
  int slot;  // -1: `constant`
  memory constant;
};

// A step's own code, run instead of a primitive (a small int8 max pool); it gets the call's slots.
using Kernel = std::function<void(const std::vector<memory>& slots)>;

struct Step {
  dnnl::primitive prim;  // empty when `kernel` computes the step
  std::vector<Arg> args;
  memory::desc scratchpad;
  std::string what;  // the layer it computes (or "input", "output") and the primitive's kind, for profiles
  Kernel kernel;
};

// A view of one arena buffer with a memory descriptor (several slots may view one buffer).
struct Slot {
  int buffer;
  memory::desc desc;
};

// What a call binds to a plan: a oneDNN memory object per slot over the call's working memory,
// each step's arguments in oneDNN's C form, and a stream. Making them took microseconds per call
// (as long as a small layer at batch 1), so a plan keeps the bindings calls give back and lends
// them to later calls; a call in other working memory only re-points their memory objects.
struct Binding {
  uint8_t* base = nullptr;                          // the working memory they view
  std::vector<memory> slots;                        // per Plan::slots
  std::vector<memory> scratchpads;                  // per step, the softmax last; empty when none
  std::vector<std::vector<dnnl_exec_arg_t>> args;  // per step, the softmax last
  dnnl::stream stream;
};
struct BindingPool {
  std::mutex mutex;
  std::vector<std::unique_ptr<Binding>> idle;
};

// Everything one batch size needs, immutable once built; shared by concurrent calls.
struct Plan {
  int64_t batch = 0;
  int threads = 1;  // OpenMP threads its primitives were built for and run on (Builder::build)
  bool one_thread = false;  // built for one thread whatever the model's count (a pass of a spread batch)
  double work_per_example = 0;  // the forward's work for one example, in int8 MACs (plan.cpp: choose_threads)
  std::vector<Slot> slots;
  std::vector<uint64_t> offsets;  // per buffer, into the call's arena
  uint64_t arena_bytes = 0, scratchpad_bytes = 0;
  // Slots: the input as the first layer reads it (NHWC or NC; f32, or s8/u8 on the input's grid,
  // written by the executor); the logits and probabilities, N,classes f32.
  int input = -1, output = -1, probabilities = -1;
  std::vector<Step> steps;
  Step softmax;  // run only when probabilities are asked for
  // The layers' outputs the plan forms, by layer name (Builder::build says which); those named in
  // `kept` stay live to the end of a call, which returns them.
  struct Named {
    std::string name;
    Act act;
  };
  std::vector<Named> named;
  std::vector<std::string> kept;  // sorted
  std::shared_ptr<BindingPool> bindings = std::make_shared<BindingPool>();  // idle ones, for the next calls
};

// What a layer's op is given to build its step(s).
struct OpContext {
  OpContext(const Layer& l, const LayerInfo& i) : layer(l), info(i) {}
  const Layer& layer;
  const LayerInfo& info;             // its shapes, for one example
  bool int8 = false;                 // the layer runs in int8 (the file lists it in int8_layers)
  std::vector<Act> inputs;           // what it reads, in layer.inputs order
  std::vector<std::string> points;   // their activation points ("input" or a layer name)
  const Layer* activation = nullptr; // the activation fused as its post-ops, or null
  dnnl::post_ops post_ops;           // that activation, in the output's units
  bool out_int8 = false;             // the output is u8/s8 on its point's grid ...
  float out_scale = 0;               // ... of this scale (0: a float output)
  dt out_type = dt::f32;
  // Without VNNI: the int8 output stays as integer-valued floats, since every reader runs on
  // floats too (ops/weighted.h): no conversion to bytes and back between them.
  bool integer_floats_out = false;
};

// Builds one Plan: slots and steps in execution order, then places every buffer in one arena
// by liveness (a buffer is live from the step that writes it to the last step that reads it).
class Builder {
 public:
  Builder(const Loaded& m, int64_t n, std::vector<std::string> kept = {}, bool one_thread = false) : m_(m), n_(n) {
    plan.batch = n;
    plan.kept = std::move(kept);
    plan.one_thread = one_thread;
  }

  Plan plan;

  const Loaded& model() const { return m_; }
  int64_t batch() const { return n_; }
  const dnnl::engine& engine() const;

  int slot(const memory::desc& d);
  int alias(int of, const memory::desc& d);  // another view of slot `of`'s buffer
  const memory::desc& desc(int s) const { return plan.slots[s].desc; }
  void keep_live(int s) { buffers_[plan.slots[s].buffer].last = INT_MAX; }

  // A step of `prim`; `kind` names what computes it (default: the primitive's kind).
  Step make(dnnl::primitive prim, const memory::desc& scratchpad, std::vector<Arg> args, const std::string& kind = "");
  std::string building = "input";  // what the steps added now compute (Step::what)
  void add(dnnl::primitive prim, const memory::desc& scratchpad, std::vector<Arg> args) {
    plan.steps.push_back(make(prim, scratchpad, std::move(args)));
  }
  // A step of shrink's own code; `args` name the slots it reads and writes (for their lifetimes).
  void add(Kernel kernel, const std::string& kind, std::vector<Arg> args);

  // A reorder of `from` into a new slot of descriptor `to` (with output scales when given).
  int reorder(int from, const memory::desc& to, float scale = 0);
  static tag plain(const memory::desc& d) { return d.dims().size() == 4 ? tag::nhwc : tag::nc; }
  // `a` as a float tensor (dequantizing int8 with a reorder when needed).
  Act as_float(const Act& a);
  // `a` quantized onto point `point`'s grid (`reader` names the layer that needs it, for errors).
  Act quantize(const Act& a, const std::string& point, const std::string& reader);
  // The layer's output: N + its out_shape, in the context's output type, NHWC or NC.
  memory::desc output_desc(const OpContext& c) const;

  void build();

 private:
  void choose_threads(const std::vector<int>& readers);
  bool fuses_next(size_t i, const std::vector<int>& readers) const;
  struct Buffer {
    uint64_t bytes;
    int first, last;
  };
  Act input_unit(bool int8);
  OpContext unit(size_t i, const std::vector<int>& readers, const std::vector<Act>& acts, const Act& input, bool int8) const;
  int depthwise_reader(const OpContext& c, size_t end, const std::vector<int>& readers) const;
  bool all_readers_on_floats(const std::string& name) const;
  void output_unit(const Act& logits);
  void name_output(const std::string& layer, const Act& act);
  void place();

  const Loaded& m_;
  int64_t n_;
  std::vector<Buffer> buffers_;
  std::unordered_map<std::string, int> index_;  // layer name -> its place in the spec
};

}  // namespace shrink::rt::detail
