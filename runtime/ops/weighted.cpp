#include "runtime/ops/weighted.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

// Without oneDNN's int8 kernels, an int8 conv or linear runs on floats when no partial sum of its
// int32 sums can reach 2^24, below which floats hold integers exactly: the largest magnitude of its
// input's grid times each output channel's sum of |weights|.
std::set<std::string> layers_on_floats(const Loaded& m) {
  std::set<std::string> on_floats;
  if (m.int8_kernels) return on_floats;
  for (size_t i = 0; i < m.spec.layers.size(); ++i) {
    const Layer& L = m.spec.layers[i];
    if (!m.int8_layers.count(L.name) || (L.type != LayerType::Conv2d && L.type != LayerType::Linear)) continue;
    const ActivationScale* grid = m.point_scale(L.inputs[0].empty() ? kInputPoint : L.inputs[0]);
    const Tensor& w = m.tensor(weight_key(L.name));
    const int64_t out = m.info[i].out_shape[0], per = w.numel() / out;
    int64_t widest = 0;
    for (int64_t k = 0; k < out; ++k) {
      int64_t sum = 0;
      for (int64_t e = 0; e < per; ++e) sum += std::abs(static_cast<int>(w.s8()[k * per + e]));
      widest = std::max(widest, sum);
    }
    if (widest * (grid && grid->is_signed ? 128 : 255) < (int64_t{1} << 24)) on_floats.insert(L.name);
  }
  return on_floats;
}

namespace {

// The int8 layer as a float primitive on the integer values: its input q converted to floats
// (exact), the weights q_w as floats, the same bias in the sum's units, then the sums times the
// channel's output scale (a multiply post-op: oneDNN 2.6's float kernels take no output scales),
// the activation, and a float output that end_weighted rounds onto the output's grid.
// An input already on floats (a producer's integer-valued output) is read as it is; an output all
// of whose readers run on floats stays so (clamped to the type's range and rounded by post-ops).
void to_floats(Builder& b, const OpContext& c, Weighted& w) {
  const memory::desc x = b.desc(w.x.slot);
  if (x.data_type() != dt::f32) w.x.slot = b.reorder(w.x.slot, memory::desc(x.dims(), dt::f32, Builder::plain(x)));
  w.src = b.desc(w.x.slot);
  w.dst = memory::desc(w.dst.dims(), dt::f32, Builder::plain(w.dst));
  w.on_floats = true;
  memory::dims per_channel(w.dst.dims().size(), 1);
  per_channel[1] = w.dst.dims()[1];
  const memory::desc scales(per_channel, dt::f32, per_channel.size() == 4 ? tag::nchw : tag::nc);
  w.channel_scales = b.model().derived(weight_scale_key(c.layer.name) + "/on-floats", scales,
                                       [&](float* dst) { std::copy(w.output_scales.begin(), w.output_scales.end(), dst); });
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_mul, scales);
  if (c.activation) append_activation(ops, *c.activation, c.out_scale);
  if (c.integer_floats_out) {
    const bool is_signed = c.out_type == dt::s8;
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, is_signed ? -128.f : 0.f, is_signed ? 127.f : 255.f);
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_round, 0.f, 0.f);  // half to even, as the int8 kernels' conversion
  }
  w.attr = user_scratchpad();
  w.attr.set_post_ops(ops);
}

}  // namespace

Weighted begin_weighted(Builder& b, const OpContext& c) {
  Act x = c.int8 ? c.inputs[0] : b.as_float(c.inputs[0]);
  if (c.int8 && x.scale == 0) x = b.quantize(x, c.points[0], c.layer.name);
  Weighted w = weighted_on(b, c, x, b.desc(x.slot));
  if (c.int8 && !b.model().int8_kernels) {
    if (b.model().on_floats.count(c.layer.name))
      to_floats(b, c, w);
    else
      w.reference = true;
  }
  return w;
}

Weighted weighted_on(Builder& b, const OpContext& c, const Act& x, const memory::desc& src) {
  const Layer& L = c.layer;
  const Loaded& m = b.model();
  const int64_t out = c.info.out_shape[0];
  Weighted w;
  w.x = x;
  w.weight = &m.tensor(weight_key(L.name));
  w.src = src;
  w.dst = b.output_desc(c);
  w.bias = memory::desc({out}, dt::f32, tag::x);
  w.attr = user_scratchpad();
  w.weight_scales = c.int8 ? m.tensor(weight_scale_key(L.name)).f32() : nullptr;
  if (c.int8) {  // the int32 sum times s_in * s_w[c], onto the output's grid (or float)
    for (int64_t k = 0; k < out; ++k) w.output_scales.push_back(w.x.scale * w.weight_scales[k] / (c.out_int8 ? c.out_scale : 1.0f));
    w.attr.set_output_scales(1 << 1, w.output_scales);
  }
  w.attr.set_post_ops(c.post_ops);
  w.weight_type = c.int8 ? dt::s8 : dt::f32;
  return w;
}

memory packed_bias(Builder& b, const OpContext& c, const Weighted& w) {
  const Layer& L = c.layer;
  const Loaded& m = b.model();
  const Tensor& bias = m.tensor(bias_key(L.name));
  if (!c.int8) return m.constant(bias_key(L.name), bias, w.bias, w.bias);
  // int8: oneDNN adds the bias to the int32 sum before the output scales, so it goes in the
  // sum's units, b / (s_in * s_w[c]), rounded to an integer as the simulation does (scheme v2).
  // s_in is fixed per model, so this is made once.
  const float s_in = w.x.scale;
  const float* ws = w.weight_scales;
  const int64_t out = c.info.out_shape[0];
  const bool round = m.meta.quantization->bias_on_accumulator_grid();
  return m.derived(bias_key(L.name) + "/int8", w.bias, [&](float* dst) {
    for (int64_t k = 0; k < out; ++k) dst[k] = round ? accumulator_bias(bias.f32()[k], s_in, ws[k]) : bias.f32()[k] / (s_in * ws[k]);
  });
}

Act end_weighted(Builder& b, const OpContext& c, const Weighted& w, const dnnl::primitive& prim, const memory::desc& scratchpad, const memory& weights) {
  Act result{b.slot(w.dst), c.out_scale};
  std::vector<Arg> args;
  args.reserve(4);
  args.push_back({DNNL_ARG_SRC, w.x.slot, {}});
  args.push_back({DNNL_ARG_WEIGHTS, -1, weights});
  args.push_back({DNNL_ARG_DST, result.slot, {}});
  if (c.layer.bias) args.push_back({DNNL_ARG_BIAS, -1, packed_bias(b, c, w)});
  if (w.on_floats) args.push_back({DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, -1, w.channel_scales});
  b.add(prim, scratchpad, std::move(args));
  // On floats: onto the output's grid, rounded half to even and saturated (as the int8 kernels' last step).
  if (w.on_floats && c.out_int8 && !c.integer_floats_out) result.slot = b.reorder(result.slot, b.output_desc(c));
  return result;
}

}  // namespace shrink::rt::detail
