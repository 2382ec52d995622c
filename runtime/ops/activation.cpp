// The activations: relu, relu6, leaky_relu, hardswish, sigmoid, tanh, elu, softplus, mish, gelu, hardsigmoid. Most run fused as their
// producer's post-ops (plan.cpp decides); one whose producer cannot take it (a pool, a second
// reader) runs alone. On an int8 grid of scale s, values are q = x / s. ReLU is the same there;
// ReLU6 clips at 6 / s; the others are not scale-invariant, so they run as a chain: to x (times
// s), the function, back to the grid (over s). Alone on an int8 input, all but ReLU run on the
// dequantized values instead.
#include <stdexcept>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

void append_relu(dnnl::post_ops& ops, const Layer&, float) { ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f); }

void append_relu6(dnnl::post_ops& ops, const Layer&, float scale) {
  ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, scale > 0 ? 6.0f / scale : 6.0f);
}

namespace {

// A function that is not scale-invariant, on values of an int8 grid of `scale` (0: float).
void append_on_grid(dnnl::post_ops& ops, float scale, dnnl::algorithm function, float alpha = 0.f) {
  if (scale > 0) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, scale, 0.f);
  ops.append_eltwise(scale > 0 ? 1.0f / scale : 1.f, function, alpha, 0.f);
}

}  // namespace

void append_hardswish(dnnl::post_ops& ops, const Layer&, float scale) {
  append_on_grid(ops, scale, dnnl::algorithm::eltwise_hardswish);  // oneDNN 2.x: x * relu6(x + 3) / 6
}

// x for x > 0, else alpha * x: scale-invariant, so the same on a grid.
void append_leaky_relu(dnnl::post_ops& ops, const Layer& L, float) {
  ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, static_cast<float>(L.alpha), 0.f);
}

void append_sigmoid(dnnl::post_ops& ops, const Layer&, float scale) { append_on_grid(ops, scale, dnnl::algorithm::eltwise_logistic); }
void append_tanh(dnnl::post_ops& ops, const Layer&, float scale) { append_on_grid(ops, scale, dnnl::algorithm::eltwise_tanh); }
void append_softplus(dnnl::post_ops& ops, const Layer&, float scale) { append_on_grid(ops, scale, dnnl::algorithm::eltwise_soft_relu); }
void append_mish(dnnl::post_ops& ops, const Layer&, float scale) { append_on_grid(ops, scale, dnnl::algorithm::eltwise_mish); }
void append_gelu(dnnl::post_ops& ops, const Layer&, float scale) { append_on_grid(ops, scale, dnnl::algorithm::eltwise_gelu_erf); }
void append_elu(dnnl::post_ops& ops, const Layer& L, float scale) {
  append_on_grid(ops, scale, dnnl::algorithm::eltwise_elu, static_cast<float>(L.alpha));
}

// clip(alpha * x + beta, 0, 1): oneDNN 2.6 has no hardsigmoid, so a linear and a clip.
void append_hardsigmoid(dnnl::post_ops& ops, const Layer& L, float scale) {
  const float to_x = scale > 0 ? scale : 1.f;
  ops.append_eltwise(1.f, dnnl::algorithm::eltwise_linear, static_cast<float>(L.alpha) * to_x, static_cast<float>(L.beta));
  ops.append_eltwise(scale > 0 ? 1.0f / scale : 1.f, dnnl::algorithm::eltwise_clip, 0.f, 1.f);
}

void append_activation(dnnl::post_ops& ops, const Layer& L, float scale) {
  AppendActivation append = op_for(L.type).activation;
  if (!append) throw std::logic_error(std::string("append_activation: ") + layer_type_name(L.type) + " is not an activation");
  append(ops, L, scale);
}

// Alone: one eltwise primitive per link of the chain, the first into a new slot, the rest in place.
Act build_activation(Builder& b, const OpContext& c) {
  Act src = c.inputs[0];
  dnnl::post_ops chain;
  append_activation(chain, c.layer, src.scale);
  // On an int8 grid only ReLU runs in place: oneDNN 2.6's int8 eltwise has no clip, and a chain
  // is not scale-invariant. The rest runs on the dequantized floats (plan.cpp puts the result
  // back on its point's grid).
  if (src.scale > 0 && c.layer.type != LayerType::ReLU) {
    src = b.as_float(src);
    chain = dnnl::post_ops();
    append_activation(chain, c.layer, 0);
  }
  memory::desc sd = b.desc(src.slot);
  Act result{b.slot(sd), src.scale};
  for (int k = 0; k < chain.len(); ++k) {
    float scale = 1, alpha = 0, beta = 0;
    dnnl::algorithm algorithm;
    chain.get_params_eltwise(k, scale, algorithm, alpha, beta);  // scale is 1: float values, or a scale-invariant one
    dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference, algorithm, sd, alpha, beta);
    dnnl::eltwise_forward::primitive_desc pd(d, user_scratchpad(), b.engine());
    b.add(dnnl::eltwise_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, k == 0 ? src.slot : result.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
  }
  return result;
}

}  // namespace shrink::rt::detail
