// relu and relu6. Most run fused as their producer's post-op (plan.cpp decides, with
// activation_eltwise); one whose producer cannot take it (a pool, a second reader) runs alone.
// On an int8 grid of scale s, values are q = x / s: ReLU6 clips at 6 / s there.
#include <stdexcept>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Eltwise relu_eltwise(float) { return {dnnl::algorithm::eltwise_relu, 0.f, 0.f}; }
Eltwise relu6_eltwise(float scale) { return {dnnl::algorithm::eltwise_clip, 0.f, scale > 0 ? 6.0f / scale : 6.0f}; }

Eltwise activation_eltwise(LayerType type, float scale) {
  EltwiseOf eltwise = op_for(type).eltwise;
  if (!eltwise) throw std::logic_error(std::string("activation_eltwise: ") + layer_type_name(type) + " is not an activation");
  return eltwise(scale);
}

Act build_activation(Builder& b, const OpContext& c) {
  const Act src = c.inputs[0];
  memory::desc sd = b.desc(src.slot);
  Eltwise e = activation_eltwise(c.layer.type, src.scale);
  dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference, e.algorithm, sd, e.alpha, e.beta);
  dnnl::eltwise_forward::primitive_desc pd(d, user_scratchpad(), b.engine());
  Act result{b.slot(sd), src.scale};
  b.add(dnnl::eltwise_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
  return result;
}

}  // namespace shrink::rt::detail
