// linear: oneDNN's inner product. Its weights are [out, features], or [out, C, H, W] when it
// reads an image.
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"
#include "runtime/ops/weighted.h"

namespace shrink::rt::detail {

Act build_linear(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  Weighted w = begin_weighted(b, c);
  memory::dims wd{c.info.out_shape[0]};
  auto in_dims = w.src.dims();
  wd.insert(wd.end(), in_dims.begin() + 1, in_dims.end());
  memory::desc w_any(wd, w.packed_type(), tag::any), w_user(wd, w.weight_type, wd.size() == 4 ? tag::oihw : tag::oi);
  dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, w.src, w_any, L.bias ? w.bias : memory::desc(), w.dst);
  dnnl::inner_product_forward::primitive_desc pd(d, w.attr, b.engine());
  to_reference(pd, w);
  memory weights = b.model().constant(weight_key(L.name), *w.weight, w_user, pd.weights_desc());
  return end_weighted(b, c, w, dnnl::inner_product_forward(pd), pd.scratchpad_desc(), weights);
}

}  // namespace shrink::rt::detail
