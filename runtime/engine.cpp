// The runtime's executor: one oneDNN primitive per layer (ReLUs fused as post-ops), compiled
// once per batch size from the ModelSpec in the file into an immutable Plan. Activations are
// NHWC (images) or NC (features); in int8 models they are u8/s8 with the scales of
// docs/quantization.md.
//
// Sharing and memory (runtime.hpp says what callers may rely on):
// - Model::load validates the whole model once (metadata, spec, every tensor, the caps of
//   docs/format.md) and compiles the plan for batch 1, so a model that loads runs.
// - Weights are read in place from the mapped file; a packed copy is made only where oneDNN
//   wants another layout, once per (tensor, layout) and shared by every plan that uses it.
// - Plans hold primitives and constants only. Each predict() allocates its own activations and
//   scratchpad (every primitive is built with scratchpad_mode::user) and its own stream, so calls
//   on one Model run in parallel; a mutex guards only the plan cache, an LRU of kPlanCacheSize.
#include <fmt/format.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <numeric>
#include <oneapi/dnnl/dnnl.hpp>
#include <set>
#include <thread>
#include <utility>

#include "runtime/model_file.h"
#include "spec/spec.h"

namespace shrink::rt {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

constexpr size_t kPlanCacheSize = 8;                    // compiled batch sizes kept (docs/format.md)
constexpr uint64_t kMaxCallBytes = uint64_t(8) << 30;  // activations + scratchpad of one predict()
constexpr uint64_t kAlign = 64;

uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

memory::dims dims_of(const std::vector<int64_t>& shape, int64_t batch) {
  memory::dims d{batch};
  d.insert(d.end(), shape.begin(), shape.end());
  return d;
}

// The calling thread's OpenMP thread count for a scope: oneDNN reads it when a primitive is
// created and when it runs, per thread, so each call sets its model's count and restores the caller's.
struct ThreadScope {
  int saved;
  explicit ThreadScope(int threads) : saved(omp_get_max_threads()) { omp_set_num_threads(threads); }
  ~ThreadScope() { omp_set_num_threads(saved); }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
};

dnnl::primitive_attr user_scratchpad() {
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

struct Step {
  dnnl::primitive prim;
  std::vector<Arg> args;
  memory::desc scratchpad;
};

// A view of one arena buffer with a memory descriptor (several slots may view one buffer).
struct Slot {
  int buffer;
  memory::desc desc;
};

// Everything one batch size needs, immutable once built; shared by concurrent calls.
struct Plan {
  int64_t batch = 0;
  std::vector<Slot> slots;
  std::vector<uint64_t> offsets;  // per buffer, into the call's arena
  uint64_t arena_bytes = 0, scratchpad_bytes = 0;
  int input = -1, output = -1, probabilities = -1;  // slots: N,C,H,W (or N,F) f32 input; N,classes f32
  std::vector<Step> steps;
  Step softmax;  // run only when probabilities are asked for
};

// Aligned memory freed on scope exit (constants made at build time).
struct Arena {
  uint8_t* base = nullptr;
  explicit Arena(uint64_t bytes) {
    base = static_cast<uint8_t*>(std::aligned_alloc(kAlign, align_up(std::max<uint64_t>(bytes, 1))));
    if (!base) throw std::bad_alloc();
  }
  ~Arena() { std::free(base); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
};

// A call's working memory (activations and scratchpad). Mapped directly rather than malloc'd:
// freeing large malloc'd blocks raises glibc's mmap threshold, after which oneDNN's JIT code
// buffers come from dirty heap pages (RSS grew ~5x under random batch sizes). Each thread keeps
// its last working memory up to kKeepCallBytes for its next call, so a steady stream of calls
// neither maps nor faults pages in.
constexpr uint64_t kKeepCallBytes = uint64_t(64) << 20;

struct Mapped {
  uint8_t* base = nullptr;
  uint64_t size = 0;
  Mapped() = default;
  explicit Mapped(uint64_t bytes) : size(bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    base = static_cast<uint8_t*>(p);
  }
  ~Mapped() {
    if (base) ::munmap(base, size);
  }
  Mapped(Mapped&& o) noexcept : base(std::exchange(o.base, nullptr)), size(std::exchange(o.size, 0)) {}
  Mapped& operator=(Mapped&& o) noexcept {
    std::swap(base, o.base), std::swap(size, o.size);
    return *this;
  }
};

thread_local Mapped t_kept;  // this thread's working memory between calls
thread_local bool t_kept_in_use = false;

class CallMemory {
 public:
  explicit CallMemory(uint64_t bytes) {
    bytes = std::max<uint64_t>((bytes + 4095) / 4096 * 4096, 4096);
    if (t_kept_in_use || bytes > kKeepCallBytes) {
      own_ = Mapped(bytes);
      base_ = own_.base;
      return;
    }
    if (t_kept.size < bytes) t_kept = Mapped(bytes);
    t_kept_in_use = kept_ = true;
    base_ = t_kept.base;
  }
  ~CallMemory() {
    if (kept_) t_kept_in_use = false;
  }
  CallMemory(const CallMemory&) = delete;
  CallMemory& operator=(const CallMemory&) = delete;
  uint8_t* base() const { return base_; }

 private:
  Mapped own_;
  uint8_t* base_ = nullptr;
  bool kept_ = false;
};

bool is_number(const nlohmann::json& j) { return j.is_number(); }

}  // namespace

namespace detail {

// A loaded model (Model::Impl is this): the file, its validated description, the plan cache.
struct Loaded {
  ModelFile file;
  ModelSpec spec;
  std::vector<LayerInfo> info;
  std::string path, precision;
  int threads = 1;
  std::vector<float> mean, stdev;
  std::map<std::string, std::pair<float, bool>> act_scales;  // point -> (scale, signed)
  std::set<std::string> int8_layers;
  uint64_t activation_bytes = 0;  // per example, every layer's output as f32 (an upper bound)
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};

  // Compiled plans, most recently used first; the mutex guards only this list.
  mutable std::mutex cache_mutex;
  mutable std::list<std::shared_ptr<const Plan>> plans;
  // One plan build at a time; it guards `packed` (tensor key -> the layouts made of it).
  mutable std::mutex build_mutex;
  mutable std::map<std::string, std::vector<std::pair<memory::desc, memory>>> packed;
  mutable std::set<std::string> in_place;  // tensors some plan reads straight from the file

  [[noreturn]] void fail(const std::string& what) const { throw Error(path + ": " + what); }

  const Tensor& tensor(const std::string& name) const {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) fail("tensor " + name + " is missing");
    return it->second;
  }

  std::pair<float, bool> scale_of(const std::string& point, const std::string& reader) const {
    auto it = act_scales.find(point);
    if (it == act_scales.end()) fail("int8 layer " + reader + " reads " + point + ", which has no activation scale");
    return it->second;
  }

  void init(ModelFile file, const std::string& name, int threads);
  void read_metadata();
  void check_tensors() const;
  std::shared_ptr<const Plan> plan_for(int64_t batch) const;
  Plan build(int64_t n) const;
  std::vector<float> execute(const Plan& plan, const float* input, bool softmax) const;

  // `t` in layout `want`: in place when that is the file's layout, else packed once and shared.
  memory constant(const std::string& key, const Tensor& t, const memory::desc& user, const memory::desc& want) const {
    if (static_cast<size_t>(user.get_size()) != t.bytes.size()) fail("tensor " + key + " does not match its layer's size");
    auto& layouts = packed[key];
    for (const auto& [d, m] : layouts)
      if (d == want) return m;
    memory src(user, engine, const_cast<uint8_t*>(t.bytes.data()));  // oneDNN only reads it
    if (want == user) {
      in_place.insert(key);
      layouts.emplace_back(want, src);
      return src;
    }
    memory dst(want, engine);
    dnnl::reorder::primitive_desc pd(engine, user, engine, want, user_scratchpad());
    Arena scratch(pd.scratchpad_desc().get_size());
    dnnl::stream stream(engine);
    dnnl::reorder(pd).execute(stream, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}, {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), engine, scratch.base)}});
    stream.wait();
    if (!in_place.count(key)) release_pages(file, t.bytes.data(), t.bytes.size());  // packed: the file's copy can go
    layouts.emplace_back(want, dst);
    return dst;
  }

  // A constant computed once from the file (int8 biases in the sum's units).
  memory derived(const std::string& key, const memory::desc& d, const std::function<void(float*)>& fill) const {
    auto& layouts = packed[key];
    if (!layouts.empty()) return layouts.front().second;
    memory m(d, engine);
    fill(static_cast<float*>(m.get_data_handle()));
    layouts.emplace_back(d, m);
    return m;
  }
};

}  // namespace detail

namespace {

using detail::Loaded;

// Builds one Plan: slots and steps in execution order, then places every buffer in one arena
// by liveness (a buffer is live from the step that writes it to the last step that reads it).
class Builder {
 public:
  Builder(const Loaded& m, int64_t n) : m_(m), n_(n) { plan.batch = n; }

  Plan plan;

  int slot(const memory::desc& d) {
    int at = static_cast<int>(plan.steps.size());
    buffers_.push_back({static_cast<uint64_t>(d.get_size()), at, at});
    plan.slots.push_back({static_cast<int>(buffers_.size()) - 1, d});
    return static_cast<int>(plan.slots.size()) - 1;
  }
  int alias(int of, const memory::desc& d) {
    plan.slots.push_back({plan.slots[of].buffer, d});
    return static_cast<int>(plan.slots.size()) - 1;
  }
  const memory::desc& desc(int s) const { return plan.slots[s].desc; }
  void keep_live(int s) { buffers_[plan.slots[s].buffer].last = INT_MAX; }

  Step make(dnnl::primitive prim, const memory::desc& scratchpad, std::vector<Arg> args) {
    int at = static_cast<int>(plan.steps.size());
    for (const Arg& a : args)
      if (a.slot >= 0) {
        auto& b = buffers_[plan.slots[a.slot].buffer];
        b.first = std::min(b.first, at), b.last = std::max(b.last, at);
      }
    plan.scratchpad_bytes = std::max<uint64_t>(plan.scratchpad_bytes, scratchpad.get_size());
    return Step{prim, std::move(args), scratchpad};
  }
  void add(dnnl::primitive prim, const memory::desc& scratchpad, std::vector<Arg> args) {
    plan.steps.push_back(make(prim, scratchpad, std::move(args)));
  }

  // A reorder of `from` into a new slot of descriptor `to` (with output scales when given).
  int reorder(int from, const memory::desc& to, float scale = 0) {
    auto attr = user_scratchpad();
    if (scale != 0) attr.set_output_scales(0, {scale});
    dnnl::reorder::primitive_desc pd(m_.engine, desc(from), m_.engine, to, attr);
    int out = slot(to);
    add(dnnl::reorder(pd), pd.scratchpad_desc(), {{DNNL_ARG_FROM, from, {}}, {DNNL_ARG_TO, out, {}}});
    return out;
  }

  static tag plain(const memory::desc& d) { return d.dims().size() == 4 ? tag::nhwc : tag::nc; }

  // `a` as a float tensor (dequantizing int8 with a reorder when needed).
  Act as_float(const Act& a) {
    if (a.scale == 0) return a;
    const auto& d = desc(a.slot);
    return Act{reorder(a.slot, memory::desc(d.dims(), dt::f32, plain(d)), a.scale), 0};
  }

  // `a` quantized onto point `point`'s grid (`reader` names the layer that needs it, for errors).
  Act quantize(const Act& a, const std::string& point, const std::string& reader) {
    auto [scale, is_signed] = m_.scale_of(point, reader);
    Act f = as_float(a);
    const auto& d = desc(f.slot);
    return Act{reorder(f.slot, memory::desc(d.dims(), is_signed ? dt::s8 : dt::u8, plain(d)), 1.0f / scale), scale};
  }

  void build();

  // Places buffers: largest first, each at the lowest offset free during its whole lifetime.
  void place() {
    std::vector<int> order(buffers_.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return buffers_[a].bytes > buffers_[b].bytes; });
    plan.offsets.assign(buffers_.size(), 0);
    std::vector<int> placed;
    for (int b : order) {
      const auto& B = buffers_[b];
      std::vector<std::pair<uint64_t, uint64_t>> busy;  // [offset, end) of buffers live at the same time
      for (int p : placed) {
        const auto& P = buffers_[p];
        if (P.first <= B.last && B.first <= P.last) busy.emplace_back(plan.offsets[p], plan.offsets[p] + align_up(P.bytes));
      }
      std::sort(busy.begin(), busy.end());
      uint64_t at = 0;
      for (const auto& [from, to] : busy) {
        if (at + align_up(B.bytes) <= from) break;
        at = std::max(at, to);
      }
      plan.offsets[b] = at;
      plan.arena_bytes = std::max(plan.arena_bytes, at + align_up(B.bytes));
      placed.push_back(b);
    }
  }

 private:
  struct Buffer {
    uint64_t bytes;
    int first, last;
  };
  const Loaded& m_;
  int64_t n_;
  std::vector<Buffer> buffers_;
};

void Builder::build() {
  const ModelSpec& spec = m_.spec;
  const auto& info = m_.info;
  const int64_t n = n_;
  const bool int8 = m_.precision == "int8";
  const auto& in_shape = spec.input;
  plan.input = slot(memory::desc(dims_of(in_shape, n), dt::f32, in_shape.size() == 3 ? tag::nchw : tag::nc));
  Act input{plan.input, 0};
  if (in_shape.size() == 3)  // to NHWC, the layout oneDNN's convolutions run fastest in
    input.slot = reorder(plan.input, memory::desc(dims_of(in_shape, n), dt::f32, tag::nhwc));
  if (int8 && m_.act_scales.count("input")) input = quantize(input, "input", "input");

  const size_t count = spec.layers.size();
  std::vector<int> readers(count, 0);
  for (const Layer& L : spec.layers)
    for (const auto& in : L.inputs)
      if (!in.empty()) ++readers[spec.index_of(in)];
  std::vector<Act> acts(count);
  std::vector<bool> fused(count, false);
  auto act_of = [&](const std::string& name) -> Act& { return name.empty() ? input : acts[spec.index_of(name)]; };
  auto point_of = [](const std::string& name) { return name.empty() ? std::string("input") : name; };

  for (size_t i = 0; i < count; ++i) {
    const Layer& L = spec.layers[i];
    if (fused[i]) continue;  // a ReLU already applied as its producer's post-op
    const auto& out_shape = info[i].out_shape;
    const bool last = i + 1 == count;
    const bool q = int8 && m_.int8_layers.count(L.name);
    // A ReLU that only this layer feeds runs as its post-op; the point after it is the unit's output.
    int relu = -1;
    if ((L.type == LayerType::Conv2d || L.type == LayerType::Linear || L.type == LayerType::Add) && !last && readers[i] == 1 &&
        (spec.layers[i + 1].type == LayerType::ReLU || spec.layers[i + 1].type == LayerType::ReLU6) && spec.layers[i + 1].inputs[0] == L.name)
      relu = static_cast<int>(i + 1);
    const std::string& end_name = relu >= 0 ? spec.layers[relu].name : L.name;
    // The unit's output type: int8 onto its point's grid, or float (the logits, float layers).
    auto end_point = m_.act_scales.find(end_name);
    bool out_q = q && end_point != m_.act_scales.end() && !(relu >= 0 ? relu + 1 == static_cast<int>(count) : last);
    float out_scale = out_q ? end_point->second.first : 0;
    // Post-ops see values after the output scales, in the output's units: ReLU6 clips at 6 / scale there.
    dnnl::post_ops ops;
    if (relu >= 0) {
      if (spec.layers[relu].type == LayerType::ReLU) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      else ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, out_q ? 6.f / out_scale : 6.f);
    }
    dt out_dt = out_q ? (end_point->second.second ? dt::s8 : dt::u8) : dt::f32;
    Act src = act_of(L.inputs[0]);
    Act result;
    switch (L.type) {
      case LayerType::Conv2d:
      case LayerType::Linear: {
        Act x = q ? src : as_float(src);
        if (q && x.scale == 0) x = quantize(x, point_of(L.inputs[0]), L.name);
        const Tensor& w = m_.tensor(L.name + ".weight");
        const bool has_bias = L.bias;
        memory::desc xd = desc(x.slot);
        memory::desc dst_md(dims_of(out_shape, n), out_dt, out_shape.size() == 3 ? tag::nhwc : tag::nc);
        memory::desc b_md({static_cast<int64_t>(out_shape[0])}, dt::f32, tag::x);
        auto attr = user_scratchpad();
        const float* ws = q ? m_.tensor(L.name + ".weight_scale").f32() : nullptr;
        if (q) {
          std::vector<float> scales;
          for (int64_t c = 0; c < out_shape[0]; ++c) scales.push_back(x.scale * ws[c] / (out_q ? out_scale : 1.0f));
          attr.set_output_scales(1 << 1, scales);
        }
        attr.set_post_ops(ops);
        dt w_dt = q ? dt::s8 : dt::f32;
        memory weights;
        dnnl::primitive prim;
        memory::desc scratchpad;
        if (L.type == LayerType::Conv2d) {
          int64_t in_c = info[i].in_shape[0], out_c = out_shape[0], groups = L.depthwise ? in_c : L.groups, k = L.kernel;
          memory::dims wd = groups == 1 ? memory::dims{out_c, in_c, k, k} : memory::dims{groups, out_c / groups, in_c / groups, k, k};
          memory::desc w_any(wd, w_dt, tag::any), w_user(wd, w_dt, groups == 1 ? tag::oihw : tag::goihw);
          dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, xd, w_any,
                                            has_bias ? b_md : memory::desc(), dst_md, {L.stride, L.stride}, {L.padding, L.padding},
                                            {L.padding, L.padding});
          dnnl::convolution_forward::primitive_desc pd(d, attr, m_.engine);
          weights = m_.constant(L.name + ".weight", w, w_user, pd.weights_desc());
          prim = dnnl::convolution_forward(pd);
          scratchpad = pd.scratchpad_desc();
        } else {
          memory::dims wd{out_shape[0]};
          auto in_dims = xd.dims();
          wd.insert(wd.end(), in_dims.begin() + 1, in_dims.end());
          memory::desc w_any(wd, w_dt, tag::any), w_user(wd, w_dt, wd.size() == 4 ? tag::oihw : tag::oi);
          dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, xd, w_any, has_bias ? b_md : memory::desc(), dst_md);
          dnnl::inner_product_forward::primitive_desc pd(d, attr, m_.engine);
          weights = m_.constant(L.name + ".weight", w, w_user, pd.weights_desc());
          prim = dnnl::inner_product_forward(pd);
          scratchpad = pd.scratchpad_desc();
        }
        result = Act{slot(dst_md), out_scale};
        std::vector<Arg> args;
        args.reserve(4);
        args.push_back({DNNL_ARG_SRC, x.slot, {}});
        args.push_back({DNNL_ARG_WEIGHTS, -1, weights});
        args.push_back({DNNL_ARG_DST, result.slot, {}});
        if (has_bias) {
          const Tensor& b = m_.tensor(L.name + ".bias");
          memory bias;
          if (!q) {
            bias = m_.constant(L.name + ".bias", b, b_md, b_md);
          } else {
            // int8: oneDNN adds the bias to the int32 sum before the output scales, so it goes in
            // the sum's units, b / (s_in * s_w[c]). s_in is fixed per model, so this is made once.
            float s_in = x.scale;
            bias = m_.derived(L.name + ".bias/int8", b_md, [&](float* dst) {
              for (int64_t c = 0; c < out_shape[0]; ++c) dst[c] = b.f32()[c] / (s_in * ws[c]);
            });
          }
          args.push_back({DNNL_ARG_BIAS, -1, bias});
        }
        add(prim, scratchpad, std::move(args));
        break;
      }
      case LayerType::Add: {
        Act a = src, b = act_of(L.inputs[1]);
        if (!q) {
          a = as_float(a), b = as_float(b);
        } else {  // both operands on their points' grids
          if (a.scale == 0) a = quantize(a, point_of(L.inputs[0]), L.name);
          if (b.scale == 0) b = quantize(b, point_of(L.inputs[1]), L.name);
        }
        memory::desc dst_md(dims_of(out_shape, n), out_dt, out_shape.size() == 3 ? tag::nhwc : tag::nc);
        auto attr = user_scratchpad();
        attr.set_post_ops(ops);
        if (q) {  // dst = s_a/s_out * a + s_b/s_out * b, rounded and saturated into the output type
          float so = out_q ? out_scale : 1.0f;
          attr.set_scales(DNNL_ARG_SRC_0, 0, {a.scale / so});
          attr.set_scales(DNNL_ARG_SRC_1, 0, {b.scale / so});
        }
        dnnl::binary::desc d(dnnl::algorithm::binary_add, desc(a.slot), desc(b.slot), dst_md);
        dnnl::binary::primitive_desc pd(d, attr, m_.engine);
        result = Act{slot(dst_md), out_scale};
        add(dnnl::binary(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC_0, a.slot, {}}, {DNNL_ARG_SRC_1, b.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
        break;
      }
      case LayerType::MaxPool:
      case LayerType::AvgPool:
      case LayerType::GlobalAvgPool: {
        memory::desc sd = desc(src.slot);
        const auto& is = info[i].in_shape;
        bool global = L.type == LayerType::GlobalAvgPool;
        int64_t kh = global ? is[1] : L.kernel, kw = global ? is[2] : L.kernel, s = global ? 1 : L.stride, p = global ? 0 : L.padding;
        int64_t oh = global ? 1 : out_shape[1], ow = global ? 1 : out_shape[2];
        memory::desc dst_md({n, is[0], oh, ow}, sd.data_type(), tag::nhwc);
        auto alg = L.type == LayerType::MaxPool ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_include_padding;
        dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, alg, sd, dst_md, {s, s}, {kh, kw}, {p, p},
                                      {(oh - 1) * s + kh - is[1] - p, (ow - 1) * s + kw - is[2] - p});
        dnnl::pooling_forward::primitive_desc pd(d, user_scratchpad(), m_.engine);
        Act pooled{slot(dst_md), src.scale};  // pooling keeps the grid (averages round onto it)
        add(dnnl::pooling_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src.slot, {}}, {DNNL_ARG_DST, pooled.slot, {}}});
        result = pooled;
        if (global) result.slot = alias(pooled.slot, memory::desc({n, is[0]}, sd.data_type(), tag::nc));
        break;
      }
      case LayerType::Flatten: {
        memory::desc sd = desc(src.slot);
        if (sd.dims().size() == 4) {  // torch flattens in C,H,W order
          int plain_nchw = reorder(src.slot, memory::desc(sd.dims(), sd.data_type(), tag::nchw));
          result = Act{alias(plain_nchw, memory::desc({n, out_shape[0]}, sd.data_type(), tag::nc)), src.scale};
        } else {
          result = src;
        }
        break;
      }
      case LayerType::Dropout: result = src; break;
      case LayerType::ReLU:
      case LayerType::ReLU6: {
        memory::desc sd = desc(src.slot);
        float upper = L.type == LayerType::ReLU6 ? (src.scale > 0 ? 6.0f / src.scale : 6.0f) : 0.f;
        auto alg = L.type == LayerType::ReLU ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_clip;
        dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference, alg, sd, 0.f, upper);
        dnnl::eltwise_forward::primitive_desc pd(d, user_scratchpad(), m_.engine);
        result = Act{slot(sd), src.scale};
        add(dnnl::eltwise_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
        break;
      }
      case LayerType::BatchNorm: m_.fail("layer " + L.name + ": unfolded batchnorm is not supported (export folds batchnorm into convs)");
    }
    if (int8 && !q && !last && m_.act_scales.count(L.name) && result.scale == 0) result = quantize(result, L.name, L.name);
    acts[i] = result;
    if (relu >= 0) {
      fused[relu] = true;
      acts[relu] = result;
    }
  }
  Act out = as_float(acts.back());
  plan.output = out.slot;
  keep_live(plan.output);
  const memory::desc& od = desc(out.slot);
  dnnl::softmax_forward::desc sd(dnnl::prop_kind::forward_inference, od, 1);
  dnnl::softmax_forward::primitive_desc pd(sd, user_scratchpad(), m_.engine);
  plan.probabilities = slot(od);
  keep_live(plan.probabilities);
  plan.softmax = make(dnnl::softmax_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, plan.output, {}}, {DNNL_ARG_DST, plan.probabilities, {}}});
  place();
}

}  // namespace

Plan Loaded::build(int64_t n) const {
  Builder b(*this, n);
  b.build();
  if (b.plan.arena_bytes + b.plan.scratchpad_bytes > kMaxCallBytes)
    throw Error(fmt::format("{}: predict: batch {} needs {} MiB of working memory, more than the runtime's limit of {} MiB; split the batch", path, n,
                            (b.plan.arena_bytes + b.plan.scratchpad_bytes) >> 20, kMaxCallBytes >> 20));
  return std::move(b.plan);
}

std::shared_ptr<const Plan> Loaded::plan_for(int64_t batch) const {
  auto lookup = [&]() -> std::shared_ptr<const Plan> {
    std::lock_guard<std::mutex> lock(cache_mutex);
    for (auto it = plans.begin(); it != plans.end(); ++it)
      if ((*it)->batch == batch) {
        plans.splice(plans.begin(), plans, it);  // most recently used first
        return plans.front();
      }
    return nullptr;
  };
  if (auto plan = lookup()) return plan;
  // Refuse absurd batches before compiling anything (activations alone would exceed the limit).
  if (static_cast<uint64_t>(batch) > kMaxCallBytes / std::max<uint64_t>(activation_bytes, 1))
    throw Error(fmt::format("{}: predict: batch {} needs more than the runtime's limit of {} MiB of working memory; split the batch", path, batch,
                            kMaxCallBytes >> 20));
  std::lock_guard<std::mutex> building(build_mutex);
  if (auto plan = lookup()) return plan;  // another thread built it meanwhile
  std::shared_ptr<const Plan> plan;
  try {
    plan = std::make_shared<const Plan>(build(batch));
  } catch (const dnnl::error& e) {
    throw Error(fmt::format("{}: oneDNN cannot run this model for batch {}: {}", path, batch, e.what()));
  } catch (const std::bad_alloc&) {
    throw Error(fmt::format("{}: out of memory compiling the model for batch {}", path, batch));
  }
  std::lock_guard<std::mutex> lock(cache_mutex);
  plans.push_front(plan);
  if (plans.size() > kPlanCacheSize) plans.pop_back();  // calls still running it keep their reference
  return plan;
}

std::vector<float> Loaded::execute(const Plan& plan, const float* input, bool softmax) const {
  const int64_t batch = plan.batch;
  CallMemory arena(plan.arena_bytes + plan.scratchpad_bytes);
  uint8_t* scratch = arena.base() + plan.arena_bytes;
  std::vector<memory> mems;
  mems.reserve(plan.slots.size());
  for (const Slot& s : plan.slots) mems.emplace_back(s.desc, engine, arena.base() + plan.offsets[s.buffer]);

  float* dst = static_cast<float*>(mems[plan.input].get_data_handle());
  int64_t per = 1;
  for (int64_t d : spec.input) per *= d;
  // Images: one mean and std per channel; feature vectors: one for all, or one per feature.
  int64_t groups = spec.input.size() == 3 ? spec.input[0] : static_cast<int64_t>(mean.size()), plane = mean.empty() ? per : per / groups;
  for (int64_t k = 0; k < batch * per; ++k) {
    float v = input[k];
    if (!mean.empty()) {
      int64_t c = (k % per) / plane;
      v = (v - mean[c]) / stdev[c];
    }
    dst[k] = v;
  }
  dnnl::stream stream(engine);
  auto run = [&](const Step& step) {
    std::unordered_map<int, memory> args;
    for (const Arg& a : step.args) args.emplace(a.id, a.slot >= 0 ? mems[a.slot] : a.constant);
    if (step.scratchpad.get_size()) args.emplace(DNNL_ARG_SCRATCHPAD, memory(step.scratchpad, engine, scratch));
    step.prim.execute(stream, args);
  };
  for (const Step& step : plan.steps) run(step);
  if (softmax) run(plan.softmax);
  stream.wait();
  const float* out = static_cast<const float*>(mems[softmax ? plan.probabilities : plan.output].get_data_handle());
  return std::vector<float>(out, out + batch * spec.classes);
}

// Metadata: every field the runtime reads, with its type and range, before anything uses it.
void Loaded::read_metadata() {
  const auto& meta = file.meta;
  auto field = [&](const char* key) -> const nlohmann::json& {
    auto it = meta.find(key);
    if (it == meta.end()) fail(std::string("metadata is incomplete: no \"") + key + "\"");
    return *it;
  };
  if (meta.value("format", nlohmann::json()) != "shrink-model") fail("metadata does not describe a shrink model");
  const auto& spec_text = field("spec");
  const auto& input = field("input");
  const auto& classes = field("classes");
  if (!spec_text.is_string()) fail("metadata: \"spec\" is not a string");
  if (!input.is_array() || (input.size() != 1 && input.size() != 3)) fail("metadata: \"input\" must be [C,H,W] or [features]");
  std::vector<int64_t> shape;
  uint64_t input_elements = 1;
  for (const auto& d : input) {
    if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > (int64_t(1) << 24)) fail("metadata: \"input\" has a bad dimension " + d.dump());
    shape.push_back(d.get<int64_t>());
    input_elements *= static_cast<uint64_t>(shape.back());
    if (input_elements > format::kMaxInputElements)
      fail("metadata: the input has more than " + std::to_string(format::kMaxInputElements) + " values per example (the runtime's limit)");
  }
  if (!classes.is_number_integer() || classes.get<int64_t>() < 1 || classes.get<int64_t>() > format::kMaxClasses)
    fail("metadata: \"classes\" must be an integer from 1 to " + std::to_string(format::kMaxClasses));
  try {
    spec = parse_spec(spec_text.get<std::string>(), shape, classes.get<int64_t>());
    info = analyze(spec);
  } catch (const std::exception& e) {  // the spec parser's UserError
    fail(std::string("model spec: ") + e.what());
  }
  if (spec.layers.empty()) fail("model spec has no layers");
  double act = static_cast<double>(input_elements);
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    if (spec.layers[i].type == LayerType::BatchNorm)
      fail("layer " + spec.layers[i].name + ": unfolded batchnorm is not supported (export folds batchnorm into convs)");
    double numel = 1;
    for (int64_t d : info[i].out_shape) numel *= static_cast<double>(d);
    act += numel;
  }
  // oneDNN's kernels for very wide or tall images allocate far more than their activations.
  for (size_t i = 0; i <= spec.layers.size(); ++i) {
    const auto& s = i < spec.layers.size() ? info[i].out_shape : shape;
    if (s.size() == 3 && (s[1] > format::kMaxImageSide || s[2] > format::kMaxImageSide))
      fail(fmt::format("{} is {}x{} pixels high or wide, more than the runtime's limit of {}", i < spec.layers.size() ? "layer " + spec.layers[i].name : "the input",
                       s[1], s[2], format::kMaxImageSide));
  }
  if (act * 4 > static_cast<double>(format::kMaxActivationBytesPerExample))
    fail(fmt::format("the model's activations need {:.0f} MiB per example, more than the runtime's limit of {} MiB", act * 4 / (1 << 20),
                     format::kMaxActivationBytesPerExample >> 20));
  activation_bytes = static_cast<uint64_t>(act * 4);

  auto it = meta.find("precision");
  if (it != meta.end() && !it->is_string()) fail("metadata: \"precision\" is not a string");
  precision = it == meta.end() ? "fp32" : it->get<std::string>();
  if (precision != "fp32" && precision != "int8") fail("unknown precision " + precision);

  // Normalization: both lists empty, or one mean and std per input channel (feature vectors: one
  // for all features or one per feature); finite, std nonzero.
  if (auto norm = meta.find("normalization"); norm != meta.end() && !norm->is_null()) {
    if (!norm->is_object()) fail("metadata: \"normalization\" is not an object");
    auto numbers = [&](const char* key) {
      std::vector<float> v;
      auto f = norm->find(key);
      if (f == norm->end() || f->is_null()) return v;
      if (!f->is_array()) fail(std::string("metadata: normalization \"") + key + "\" is not a list");
      for (const auto& x : *f) {
        if (!is_number(x) || !std::isfinite(x.get<double>()) || std::fabs(x.get<double>()) > 1e30)
          fail(std::string("metadata: normalization \"") + key + "\" has a value that is not a finite number");
        v.push_back(x.get<float>());
      }
      return v;
    };
    mean = numbers("mean");
    stdev = numbers("std");
    int64_t channels = shape.size() == 3 ? shape[0] : 1;
    bool fits = mean.size() == stdev.size() &&
                (mean.empty() || static_cast<int64_t>(mean.size()) == channels || (shape.size() == 1 && static_cast<int64_t>(mean.size()) == shape[0]));
    if (!fits) fail("normalization does not match the input channels");
    for (float s : stdev)
      if (s == 0 || !std::isfinite(s)) fail("normalization: a std is zero");
  }

  if (precision == "int8") {
    auto q = meta.find("quantization");
    if (q == meta.end() || !q->is_object()) fail("metadata is incomplete: an int8 model needs \"quantization\"");
    auto acts = q->find("activations");
    auto layers = q->find("int8_layers");
    if (acts == q->end() || !acts->is_object()) fail("metadata: quantization \"activations\" is missing or not an object");
    if (layers == q->end() || !layers->is_array()) fail("metadata: quantization \"int8_layers\" is missing or not a list");
    for (const auto& [name, v] : acts->items()) {
      if (name != "input" && spec.index_of(name) < 0) fail("activation scale for " + name + ", which is not a layer of the model");
      if (!v.is_object() || !v.contains("scale") || !v.contains("signed") || !v.at("signed").is_boolean() || !is_number(v.at("scale")))
        fail("activation scale of " + name + " must be {\"scale\": number, \"signed\": bool}");
      double s = v.at("scale").get<double>();
      if (!(s > 1e-30) || !(s < 1e30)) fail("activation scale of " + name + " is not a positive number");
      act_scales[name] = {static_cast<float>(s), v.at("signed").get<bool>()};
    }
    for (const auto& name : *layers) {
      if (!name.is_string()) fail("metadata: quantization \"int8_layers\" has a non-string entry");
      int at = spec.index_of(name.get<std::string>());
      if (at < 0) fail("int8 layer " + name.get<std::string>() + " is not a layer of the model");
      LayerType t = spec.layers[at].type;
      if (t != LayerType::Conv2d && t != LayerType::Linear && t != LayerType::Add)
        fail("int8 layer " + name.get<std::string>() + " is a " + layer_type_name(t) + " (only conv, linear and add run in int8)");
      int8_layers.insert(name.get<std::string>());
    }
  }
}

// Tensors: exactly the ones the layers need, each with its dtype and shape.
void Loaded::check_tensors() const {
  std::set<std::string> expected;
  auto need = [&](const std::string& name, format::DType dtype, const std::vector<int64_t>& dims) {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) fail("tensor " + name + " is missing");
    const Tensor& t = it->second;
    auto dims_text = [](const std::vector<int64_t>& d) {
      std::string s;
      for (int64_t v : d) s += (s.empty() ? "" : "x") + std::to_string(v);
      return s;
    };
    if (t.dtype != dtype) fail("tensor " + name + " has dtype " + std::to_string(static_cast<uint32_t>(t.dtype)) + ", expected " + std::to_string(static_cast<uint32_t>(dtype)));
    if (t.dims != dims) fail("tensor " + name + " has shape " + dims_text(t.dims) + ", the layer needs " + dims_text(dims));
    expected.insert(name);
    return &t;
  };
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    if (L.type != LayerType::Conv2d && L.type != LayerType::Linear) continue;
    int64_t out = info[i].out_shape[0];
    bool q = int8_layers.count(L.name) > 0;
    need(L.name + ".weight", q ? format::DType::S8 : format::DType::F32, info[i].weight_shape);
    if (L.bias) need(L.name + ".bias", format::DType::F32, {out});
    if (q) {
      const Tensor* s = need(L.name + ".weight_scale", format::DType::F32, {out});
      for (int64_t c = 0; c < out; ++c)
        if (!(s->f32()[c] > 1e-30f) || !(s->f32()[c] < 1e30f)) fail("weight scale " + std::to_string(c) + " of " + L.name + " is not a positive number");
    }
  }
  for (const auto& [name, t] : file.tensors)
    if (!expected.count(name)) fail("tensor " + name + " belongs to no layer of the model");
}

void Loaded::init(ModelFile f, const std::string& name, int n_threads) {
  path = name;
  file = std::move(f);
  threads = n_threads > 0 ? n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  try {
    read_metadata();
    check_tensors();
  } catch (const nlohmann::json::exception& e) {  // a type the checks above missed: still the file's fault
    fail(std::string("metadata: ") + e.what());
  }
  ThreadScope scope(threads);
  plan_for(1);  // builds every primitive once: problems surface at load
}

struct Model::Impl : detail::Loaded {};

Model Model::load(const std::string& path, int threads) {
  Model m;
  m.impl_ = std::make_shared<Impl>();
  m.impl_->init(read_model_file(path), path, threads);
  return m;
}

Model Model::from_memory(const void* data, size_t size, int threads, const std::string& name) {
  if (!data && size) throw Error(name + ": null data");
  Model m;
  m.impl_ = std::make_shared<Impl>();
  m.impl_->init(parse_model_file(static_cast<const uint8_t*>(data), size, name), name, threads);
  return m;
}

std::vector<float> Model::predict(const float* input, int64_t batch) const { return run(input, batch, false); }

std::vector<float> Model::probabilities(const float* input, int64_t batch) const { return run(input, batch, true); }

std::vector<float> Model::run(const float* input, int64_t batch, bool softmax) const {
  if (batch < 1) throw Error("predict: batch must be at least 1");
  if (!input) throw Error("predict: input is null");
  ThreadScope scope(impl_->threads);
  auto plan = impl_->plan_for(batch);
  try {
    return impl_->execute(*plan, input, softmax);
  } catch (const dnnl::error& e) {
    throw Error(impl_->path + ": oneDNN failed running batch " + std::to_string(batch) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw Error(impl_->path + ": out of memory running batch " + std::to_string(batch));
  }
}

std::vector<int64_t> Model::input_shape() const { return impl_->spec.input; }
int64_t Model::classes() const { return impl_->spec.classes; }
std::string Model::precision() const { return impl_->precision; }
std::string Model::metadata_json() const { return impl_->file.meta.dump(); }
uint64_t Model::file_bytes() const { return impl_->file.file_size; }
int Model::threads() const { return impl_->threads; }

}  // namespace shrink::rt
