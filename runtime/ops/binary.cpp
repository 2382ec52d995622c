// add (the residual sum) and mul (SiLU, squeeze-excite): oneDNN's binary primitive. In int8 both
// operands are on their points' grids (a float one is quantized at its point first) and the result
// goes straight onto the output's grid, rounded and saturated into the output type:
//   add: dst = s_a / s_out * a + s_b / s_out * b
//   mul: dst = (s_a / s_out * a) * (s_b * b)
// mul also takes C,1,1 by C,H,W; oneDNN broadcasts only its second source, so that one goes second.
#include <utility>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {
namespace {

Act binary(Builder& b, const OpContext& c, dnnl::algorithm algorithm) {
  Act x = c.inputs[0], y = c.inputs[1];
  if (c.int8) {
    if (x.scale == 0) x = b.quantize(x, c.points[0], c.layer.name);
    if (y.scale == 0) y = b.quantize(y, c.points[1], c.layer.name);
  } else {
    x = b.as_float(x), y = b.as_float(y);
  }
  if (b.desc(x.slot).dims() != dims_of(c.info.out_shape, b.batch())) std::swap(x, y);  // the broadcast one second
  memory::desc dst_md = b.output_desc(c);
  auto attr = user_scratchpad();
  attr.set_post_ops(c.post_ops);
  if (c.int8) {
    const float so = c.out_int8 ? c.out_scale : 1.0f;
    attr.set_scales(DNNL_ARG_SRC_0, 0, {x.scale / so});
    attr.set_scales(DNNL_ARG_SRC_1, 0, {algorithm == dnnl::algorithm::binary_add ? y.scale / so : y.scale});
  }
  dnnl::binary::desc d(algorithm, b.desc(x.slot), b.desc(y.slot), dst_md);
  dnnl::binary::primitive_desc pd(d, attr, b.engine());
  Act result{b.slot(dst_md), c.out_scale};
  b.add(dnnl::binary(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC_0, x.slot, {}}, {DNNL_ARG_SRC_1, y.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
  return result;
}

}  // namespace

Act build_add(Builder& b, const OpContext& c) { return binary(b, c, dnnl::algorithm::binary_add); }
Act build_mul(Builder& b, const OpContext& c) { return binary(b, c, dnnl::algorithm::binary_mul); }

}  // namespace shrink::rt::detail
