// mul: oneDNN's binary multiply, of equal shapes or of C,1,1 by C,H,W (squeeze-excite; oneDNN
// broadcasts only its second source, so that one goes second). In int8 both operands are on their
// points' grids and the product goes straight onto the output's:
// dst = (s_a / s_out * a) * (s_b * b), rounded and saturated into the output type.
#include <utility>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Act build_mul(Builder& b, const OpContext& c) {
  Act x = c.inputs[0], y = c.inputs[1];
  std::string x_point = c.points[0], y_point = c.points[1];
  if (c.int8) {
    if (x.scale == 0) x = b.quantize(x, x_point, c.layer.name);
    if (y.scale == 0) y = b.quantize(y, y_point, c.layer.name);
  } else {
    x = b.as_float(x), y = b.as_float(y);
  }
  const memory::dims out_dims = dims_of(c.info.out_shape, b.batch());
  if (b.desc(x.slot).dims() != out_dims) std::swap(x, y);  // the broadcast one second
  memory::desc dst_md = b.output_desc(c);
  auto attr = user_scratchpad();
  if (c.int8) {
    attr.set_scales(DNNL_ARG_SRC_0, 0, {x.scale / (c.out_int8 ? c.out_scale : 1.0f)});
    attr.set_scales(DNNL_ARG_SRC_1, 0, {y.scale});
  }
  dnnl::binary::desc d(dnnl::algorithm::binary_mul, b.desc(x.slot), b.desc(y.slot), dst_md);
  dnnl::binary::primitive_desc pd(d, attr, b.engine());
  Act result{b.slot(dst_md), c.out_scale};
  b.add(dnnl::binary(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC_0, x.slot, {}}, {DNNL_ARG_SRC_1, y.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
  return result;
}

}  // namespace shrink::rt::detail
