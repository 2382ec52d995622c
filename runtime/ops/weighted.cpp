#include "runtime/ops/weighted.h"

#include "runtime/loaded.h"

namespace shrink::rt::detail {

Weighted begin_weighted(Builder& b, const OpContext& c) {
  Act x = c.int8 ? c.inputs[0] : b.as_float(c.inputs[0]);
  if (c.int8 && x.scale == 0) x = b.quantize(x, c.points[0], c.layer.name);
  return weighted_on(b, c, x, b.desc(x.slot));
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
  b.add(prim, scratchpad, std::move(args));
  return result;
}

}  // namespace shrink::rt::detail
