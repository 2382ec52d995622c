// Builder: the layers in spec order, each through its kind's op (runtime/ops/ops.h); which activation
// fuses into its producer and on which grid each unit's output lies is decided here, once.
#include <algorithm>
#include <functional>
#include <numeric>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"
#include "runtime/ops/weighted.h"

namespace shrink::rt::detail {

const dnnl::engine& Builder::engine() const { return m_.engine; }

int Builder::slot(const memory::desc& d) {
  int at = static_cast<int>(plan.steps.size());
  buffers_.push_back({static_cast<uint64_t>(d.get_size()), at, at});
  plan.slots.push_back({static_cast<int>(buffers_.size()) - 1, d});
  return static_cast<int>(plan.slots.size()) - 1;
}

int Builder::alias(int of, const memory::desc& d) {
  plan.slots.push_back({plan.slots[of].buffer, d});
  return static_cast<int>(plan.slots.size()) - 1;
}

namespace {
const char* primitive_name(dnnl::primitive::kind k) {
  using K = dnnl::primitive::kind;
  switch (k) {
    case K::reorder: return "reorder";
    case K::convolution: return "convolution";
    case K::inner_product: return "inner product";
    case K::pooling: return "pooling";
    case K::eltwise: return "eltwise";
    case K::binary: return "binary";
    case K::concat: return "concat";
    case K::softmax: return "softmax";
    case K::batch_normalization: return "batchnorm";
    default: return "primitive";
  }
}
}  // namespace

Step Builder::make(dnnl::primitive prim, const memory::desc& scratchpad, std::vector<Arg> args, const std::string& kind) {
  int at = static_cast<int>(plan.steps.size());
  for (const Arg& a : args)
    if (a.slot >= 0) {
      auto& b = buffers_[plan.slots[a.slot].buffer];
      b.first = std::min(b.first, at), b.last = std::max(b.last, at);
    }
  plan.scratchpad_bytes = std::max<uint64_t>(plan.scratchpad_bytes, scratchpad.get_size());
  return Step{prim, std::move(args), scratchpad, building + " (" + (kind.empty() ? primitive_name(prim.get_kind()) : kind) + ")", {}};
}

void Builder::add(Kernel kernel, const std::string& kind, std::vector<Arg> args) {
  Step step = make(dnnl::primitive(), memory::desc(), std::move(args), kind);
  step.kernel = std::move(kernel);
  plan.steps.push_back(std::move(step));
}

// How many threads the plan runs on: all of the model's, or one when the forward's steps are on
// average too small at this batch to repay a parallel region each. Starting and joining one
// costs microseconds, and so does moving activations between cores' caches, once per step: what
// decides is the work per step, not the forward's total. Measured on a 2-core EPYC at batch 1:
// the MobileNetV2-class Fashion student (18 steps, 0.43 M int8 MACs each) took 52 us on one
// thread and 100 on two (fp32, 1.6 M each in the units below: 86 and 142); the USPS teacher's
// int8 forward (9 steps, 3.1 M each) ran alike on both, its fp32 one (11 M each) 1.25x faster on
// two, as did Fashion at batch 16 int8 (6.8 M) and batch 4 fp32 (6.5 M). Single-threading only
// the small steps of a large forward did not help: a pool after a two-thread convolution took 10
// us instead of 1.7, reading what the other core wrote. Work is counted in int8 MACs; a float MAC
// costs about four (a quarter of the lanes), an element of a layer without MACs (pool, add,
// concat, activation) about 25 (a load, a compare or add, a store, no reuse). An activation run
// as its producer's post-op, a dropout and an unflatten make no step.
namespace {
constexpr double kFloatMacWork = 4, kElementWork = 25;
}  // namespace

void Builder::choose_threads(const std::vector<int>& readers) {
  const auto& layers = m_.spec.layers;
  double work = 0;
  int steps = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& L = layers[i];
    if ((i > 0 && fuses_next(i - 1, readers)) || L.type == LayerType::Dropout || L.type == LayerType::Unflatten) continue;
    const LayerInfo& info = m_.info[i];
    const bool int8 = m_.int8() && m_.int8_layers.count(L.name);
    work += info.macs > 0 ? info.macs * (int8 ? 1 : kFloatMacWork)
                          : kElementWork * std::accumulate(info.in_shape.begin(), info.in_shape.end(), 1.0, std::multiplies<double>());
    ++steps;
  }
  plan.work_per_example = work;
  const bool parallel = static_cast<double>(n_) * work >= kParallelWorkPerStep * std::max(steps, 1);
  plan.threads = parallel && !plan.one_thread ? m_.threads : 1;
}

// Whether layer i+1, an activation that only layer i feeds, runs as layer i's post-op: in int8
// only when layer i has no point of its own (the simulation rounds there first: a clamp since
// scheme v2, any activation in v1 files).
bool Builder::fuses_next(size_t i, const std::vector<int>& readers) const {
  const auto& layers = m_.spec.layers;
  const Layer& L = layers[i];
  if (!fuses_activation(L.type) || i + 1 == layers.size() || readers[i] != 1) return false;
  const Layer& next = layers[i + 1];
  const bool own_point = m_.int8() && m_.int8_layers.count(L.name) && m_.point_scale(L.name);
  return is_activation(next.type) && next.inputs[0] == L.name && !own_point;
}

int Builder::reorder(int from, const memory::desc& to, float scale) {
  auto attr = user_scratchpad();
  if (scale != 0) attr.set_output_scales(0, {scale});
  dnnl::reorder::primitive_desc pd(m_.engine, desc(from), m_.engine, to, attr);
  int out = slot(to);
  add(dnnl::reorder(pd), pd.scratchpad_desc(), {{DNNL_ARG_FROM, from, {}}, {DNNL_ARG_TO, out, {}}});
  return out;
}

Act Builder::as_float(const Act& a) {
  if (a.scale == 0) return a;
  const auto& d = desc(a.slot);
  return Act{reorder(a.slot, memory::desc(d.dims(), dt::f32, plain(d)), a.scale), 0};
}

Act Builder::quantize(const Act& a, const std::string& point, const std::string& reader) {
  auto [scale, is_signed] = m_.scale_of(point, reader);
  Act f = as_float(a);
  const auto& d = desc(f.slot);
  return Act{reorder(f.slot, memory::desc(d.dims(), is_signed ? dt::s8 : dt::u8, plain(d)), 1.0f / scale), scale};
}

memory::desc Builder::output_desc(const OpContext& c) const {
  const auto& out_shape = c.info.out_shape;
  return memory::desc(dims_of(out_shape, n_), c.out_type, out_shape.size() == 3 ? tag::nhwc : tag::nc);
}

// The input as the first layer reads it: NHWC for images (the layout oneDNN's convolutions run
// fastest in), on the input's grid when an int8 model has one. The executor writes it there from
// the caller's raw N,C,H,W floats (normalizing, transposing and rounding in one pass), so no
// reorder runs for it.
Act Builder::input_unit(bool int8) {
  const auto& in_shape = m_.spec.input;
  const ActivationScale* point = int8 ? m_.point_scale(kInputPoint) : nullptr;
  const dt type = !point ? dt::f32 : point->is_signed ? dt::s8 : dt::u8;
  plan.input = slot(memory::desc(dims_of(in_shape, n_), type, in_shape.size() == 3 ? tag::nhwc : tag::nc));
  return Act{plan.input, point ? static_cast<float>(point->scale) : 0.f};
}

// Layer i with what it reads, and its unit's decisions: the activation after it as its post-op
// (fuses_next; the point after the activation is then the unit's output), and the unit's output
// int8 on its point's grid, or float (the logits, float layers).
OpContext Builder::unit(size_t i, const std::vector<int>& readers, const std::vector<Act>& acts, const Act& input, bool int8) const {
  const ModelSpec& spec = m_.spec;
  const size_t count = spec.layers.size();
  const Layer& L = spec.layers[i];
  OpContext c{L, m_.info[i]};
  const bool last = i + 1 == count;
  c.int8 = int8 && m_.int8_layers.count(L.name);
  const int fused = fuses_next(i, readers) ? static_cast<int>(i + 1) : -1;
  const std::string& end_name = fused >= 0 ? spec.layers[fused].name : L.name;
  const ActivationScale* end_point = m_.point_scale(end_name);
  c.out_int8 = c.int8 && end_point && !(fused >= 0 ? fused + 1 == static_cast<int>(count) : last);
  c.out_scale = c.out_int8 ? static_cast<float>(end_point->scale) : 0;
  if (fused >= 0) {
    c.activation = &spec.layers[fused];
    // Post-ops see values after the output scales, in the output's units (ops/activation.cpp).
    append_activation(c.post_ops, *c.activation, c.out_scale);
  }
  c.out_type = c.out_int8 ? (end_point->is_signed ? dt::s8 : dt::u8) : dt::f32;
  c.integer_floats_out = c.out_int8 && m_.on_floats.count(L.name) && all_readers_on_floats(end_name);
  for (const std::string& in : L.inputs) {
    c.inputs.push_back(in.empty() ? input : acts[index_.at(in)]);
    c.points.push_back(in.empty() ? std::string(kInputPoint) : in);
  }
  return c;
}

// Whether layer `name`'s output has readers and all run on floats (and the call does not keep it).
// A reader that moves values (a max pool, shuffle or slice: oneDNN's float max, a copy) passes
// integer-valued floats on unchanged, so it counts as one when its own readers do.
bool Builder::all_readers_on_floats(const std::string& name) const {
  if (std::binary_search(plan.kept.begin(), plan.kept.end(), name)) return false;
  int readers = 0;
  for (const Layer& R : m_.spec.layers) {
    for (const std::string& in : R.inputs) {
      if (in != name) continue;
      ++readers;
      const bool on_floats = moves_values(R.type) ? all_readers_on_floats(R.name) : m_.on_floats.count(R.name) > 0;
      if (!on_floats) return false;
    }
  }
  return readers > 0;
}

// The depthwise conv that is the only reader of the int8 1x1 conv unit `c` (whose output is layer
// `end`'s), 3x3 with padding 1 and stride 1 or 2 as oneDNN fuses them: its index, or -1. Not when
// the call keeps the 1x1's output, which the fused primitive never forms.
int Builder::depthwise_reader(const OpContext& c, size_t end, const std::vector<int>& readers) const {
  const ModelSpec& spec = m_.spec;
  const Layer& L = c.layer;
  const Pads P = L.pads();
  if (L.type != LayerType::Conv2d || L.kernel != 1 || L.kernel_width() != 1 || L.stride != 1 || L.stride_width() != 1 || L.groups != 1 || L.depthwise || P.top || P.left || P.bottom || P.right) return -1;
  if (!c.int8 || !c.out_int8 || !m_.int8_kernels || c.inputs[0].scale == 0 || end + 1 >= spec.layers.size() || readers[end] != 1) return -1;
  const std::string& formed = spec.layers[end].name;
  if (std::binary_search(plan.kept.begin(), plan.kept.end(), formed)) return -1;
  const Layer& D = spec.layers[end + 1];
  const Pads DP = D.pads();
  const bool fusable = D.type == LayerType::Conv2d && D.depthwise && D.inputs[0] == formed && D.kernel == 3 && D.kernel_width() == 3 && (D.stride == 1 || D.stride == 2) && D.stride_width() == D.stride &&
                       D.dilation == 1 && DP.top == 1 && DP.left == 1 && DP.bottom == 1 && DP.right == 1 && m_.int8_layers.count(D.name);
  return fusable ? static_cast<int>(end + 1) : -1;
}

// The logits as f32, and the softmax that turns them into probabilities when asked.
void Builder::output_unit(const Act& logits) {
  Act out = as_float(logits);
  plan.output = out.slot;
  keep_live(plan.output);
  const memory::desc& od = desc(out.slot);
  dnnl::softmax_forward::desc sd(dnnl::prop_kind::forward_inference, od, 1);
  dnnl::softmax_forward::primitive_desc pd(sd, user_scratchpad(), m_.engine);
  plan.probabilities = slot(od);
  keep_live(plan.probabilities);
  plan.softmax = make(dnnl::softmax_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, plan.output, {}}, {DNNL_ARG_DST, plan.probabilities, {}}});
}

void Builder::build() {
  const ModelSpec& spec = m_.spec;
  const size_t count = spec.layers.size();
  for (size_t i = 0; i < count; ++i) index_[spec.layers[i].name] = static_cast<int>(i);
  std::vector<int> readers(count, 0);
  for (const Layer& L : spec.layers)
    for (const auto& in : L.inputs)
      if (!in.empty()) ++readers[index_.at(in)];
  choose_threads(readers);
  ThreadScope threads(plan.threads);  // oneDNN splits each kernel's work for this many threads
  const bool int8 = m_.int8();
  Act input = input_unit(int8);
  std::vector<Act> acts(count);
  std::vector<bool> fused(count, false);
  for (size_t i = 0; i < count; ++i) {
    if (fused[i]) continue;  // an activation already applied as its producer's post-op
    const Layer& L = spec.layers[i];
    OpContext c = unit(i, readers, acts, input, int8);
    building = c.activation ? L.name + "+" + c.activation->name : L.name;
    const size_t end_index = c.activation ? i + 1 : i;
    if (const int d = depthwise_reader(c, end_index, readers); d >= 0) {
      acts[end_index] = Act{-1, c.out_scale};  // the 1x1's output, never formed if the two fuse
      OpContext dc = unit(d, readers, acts, input, int8);
      const std::string named = building;
      building += "+" + (dc.activation ? dc.layer.name + "+" + dc.activation->name : dc.layer.name);
      if (auto both = build_conv_with_depthwise(*this, c, dc)) {
        for (size_t k = i; k <= static_cast<size_t>(dc.activation ? d + 1 : d); ++k) fused[k] = true, acts[k] = *both;
        name_output(dc.activation ? dc.activation->name : dc.layer.name, *both);
        continue;
      }
      building = named;
    }
    Act result = op_for(L.type).build(*this, c);
    // A float result that an int8 layer may read goes onto its point's grid once, here (the
    // point after the fused activation, when one ran as a post-op).
    const std::string& end = c.activation ? c.activation->name : L.name;
    if (int8 && !c.int8 && i + 1 != count && m_.point_scale(end) && result.scale == 0) result = quantize(result, end, end);
    acts[i] = result;
    if (c.activation) {
      size_t a = i + 1;  // unit() fuses only the next layer
      fused[a] = true;
      acts[a] = result;
    }
    name_output(end, result);  // (a layer whose activation ran as its post-op formed no output of its own)
  }
  building = "output";
  output_unit(acts.back());
  place();
}

void Builder::name_output(const std::string& layer, const Act& act) {
  plan.named.push_back({layer, act});
  if (std::binary_search(plan.kept.begin(), plan.kept.end(), layer)) keep_live(act.slot);
}

// Places buffers: largest first, each at the lowest offset free during its whole lifetime.
void Builder::place() {
  const int n = static_cast<int>(buffers_.size());
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return buffers_[a].bytes > buffers_[b].bytes; });
  plan.offsets.assign(n, 0);
  // live[t]: the buffers placed so far that are live at step t. Two buffers overlap in time when
  // one is live at the step where the later of the two is made, so looking at the steps a buffer
  // lives keeps a deep model's placement near linear (comparing every pair took most of a
  // 32,000-layer model's load). Kept outputs live to the end: they are listed apart, `forever`.
  int end = 0;
  for (const auto& B : buffers_) end = std::max(end, B.first);
  std::vector<std::vector<int>> live(end + 1);
  std::vector<int> forever, seen(n, -1);
  for (int b : order) {
    const auto& B = buffers_[b];
    const int last = std::min(B.last, end);
    std::vector<std::pair<uint64_t, uint64_t>> busy;  // [offset, end) of buffers live at the same time
    auto overlaps = [&](int p) {
      if (seen[p] != b) seen[p] = b, busy.emplace_back(plan.offsets[p], plan.offsets[p] + align_up(buffers_[p].bytes));
    };
    for (int t = B.first; t <= last; ++t)
      for (int p : live[t]) overlaps(p);
    for (int p : forever)
      if (buffers_[p].first <= B.last) overlaps(p);
    std::sort(busy.begin(), busy.end());
    uint64_t at = 0;
    for (const auto& [from, to] : busy) {
      if (at + align_up(B.bytes) <= from) break;
      at = std::max(at, to);
    }
    plan.offsets[b] = at;
    plan.arena_bytes = std::max(plan.arena_bytes, at + align_up(B.bytes));
    if (B.last >= end) forever.push_back(b);
    else
      for (int t = B.first; t <= last; ++t) live[t].push_back(b);
  }
}

}  // namespace shrink::rt::detail
