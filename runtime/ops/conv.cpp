// conv2d (grouped, depthwise, dilated, asymmetrically padded too): oneDNN's direct convolution,
// weights packed in its layout.
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"
#include "runtime/ops/weighted.h"

namespace shrink::rt::detail {

Act build_conv(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  Weighted w = begin_weighted(b, c);
  int64_t in_c = c.info.in_shape[0], out_c = c.info.out_shape[0], groups = L.depthwise ? in_c : L.groups, k = L.kernel;
  memory::dims wd = groups == 1 ? memory::dims{out_c, in_c, k, k} : memory::dims{groups, out_c / groups, in_c / groups, k, k};
  memory::desc w_any(wd, w.weight_type, tag::any), w_user(wd, w.weight_type, groups == 1 ? tag::oihw : tag::goihw);
  const Pads P = L.pads();
  const int64_t gaps = L.dilation - 1;  // oneDNN counts the zeros between taps; 0: not dilated
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, w.src, w_any,
                                    L.bias ? w.bias : memory::desc(), w.dst, {L.stride, L.stride}, {gaps, gaps}, {P.top, P.left},
                                    {P.bottom, P.right});
  dnnl::convolution_forward::primitive_desc pd(d, w.attr, b.engine());
  memory weights = b.model().constant(weight_key(L.name), *w.weight, w_user, pd.weights_desc());
  return end_weighted(b, c, w, dnnl::convolution_forward(pd), pd.scratchpad_desc(), weights);
}

}  // namespace shrink::rt::detail
