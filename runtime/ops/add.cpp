// add (the residual sum): oneDNN's binary add. In int8 both operands are on their points' grids
// and the sum goes straight onto the output's: dst = s_a/s_out * a + s_b/s_out * b, rounded and
// saturated into the output type.
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Act build_add(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  Act x = c.inputs[0], y = c.inputs[1];
  if (!c.int8) {
    x = b.as_float(x), y = b.as_float(y);
  } else {
    if (x.scale == 0) x = b.quantize(x, c.points[0], L.name);
    if (y.scale == 0) y = b.quantize(y, c.points[1], L.name);
  }
  memory::desc dst_md = b.output_desc(c);
  auto attr = user_scratchpad();
  attr.set_post_ops(c.post_ops);
  if (c.int8) {
    float so = c.out_int8 ? c.out_scale : 1.0f;
    attr.set_scales(DNNL_ARG_SRC_0, 0, {x.scale / so});
    attr.set_scales(DNNL_ARG_SRC_1, 0, {y.scale / so});
  }
  dnnl::binary::desc d(dnnl::algorithm::binary_add, b.desc(x.slot), b.desc(y.slot), dst_md);
  dnnl::binary::primitive_desc pd(d, attr, b.engine());
  Act result{b.slot(dst_md), c.out_scale};
  b.add(dnnl::binary(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC_0, x.slot, {}}, {DNNL_ARG_SRC_1, y.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
  return result;
}

}  // namespace shrink::rt::detail
