// conv2d (grouped, depthwise, dilated, asymmetrically padded too): oneDNN's direct convolution,
// weights packed in its layout.
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"
#include "runtime/ops/weighted.h"

namespace shrink::rt::detail {
namespace {

dnnl::convolution_forward::primitive_desc conv_pd(Builder& b, const Layer& L, const Weighted& w, const memory::desc& weights) {
  const Pads P = L.pads();
  const int64_t gaps = L.dilation - 1;  // oneDNN counts the zeros between taps; 0: not dilated
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, w.src, weights,
                                    L.bias ? w.bias : memory::desc(), w.dst, {L.stride, L.stride}, {gaps, gaps}, {P.top, P.left},
                                    {P.bottom, P.right});
  return dnnl::convolution_forward::primitive_desc(d, w.attr, b.engine());
}

// oneDNN's kernel for a network's first layer reads NCHW and writes channel blocks (nChw16c on
// AVX-512, nChw8c on AVX2). With one input channel NCHW is the NHWC input's bytes, and with as
// many output channels as a block the blocks are the NHWC output's bytes: then the float conv
// runs that kernel on the plan's own slots (the USPS student's first conv: 2.6x faster at batch
// 256 than oneDNN's NHWC kernel, 2x at batch 1). Returns whether `w` now describes that form.
bool first_layer_form(Builder& b, const Layer& L, const OpContext& c, Weighted& w, const memory::desc& weights) {
  const int64_t in_c = c.info.in_shape[0], out_c = c.info.out_shape[0];
  if (c.int8 || L.groups != 1 || L.depthwise || in_c != 1 || (out_c != 8 && out_c != 16)) return false;
  Weighted blocked = w;
  blocked.src = memory::desc(w.src.dims(), w.src.data_type(), tag::nchw);
  blocked.dst = memory::desc(w.dst.dims(), w.dst.data_type(), tag::any);
  const memory::desc chosen = conv_pd(b, L, blocked, weights).dst_desc();
  if (chosen != memory::desc(w.dst.dims(), w.dst.data_type(), out_c == 16 ? tag::nChw16c : tag::nChw8c)) return false;
  blocked.x.slot = b.alias(w.x.slot, blocked.src);
  blocked.dst = chosen;
  w = blocked;
  return true;
}

}  // namespace

Act build_conv(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  Weighted w = begin_weighted(b, c);
  int64_t in_c = c.info.in_shape[0], out_c = c.info.out_shape[0], groups = L.depthwise ? in_c : L.groups, k = L.kernel;
  memory::dims wd = groups == 1 ? memory::dims{out_c, in_c, k, k} : memory::dims{groups, out_c / groups, in_c / groups, k, k};
  memory::desc w_any(wd, w.weight_type, tag::any), w_user(wd, w.weight_type, groups == 1 ? tag::oihw : tag::goihw);
  const memory::desc nhwc_dst = w.dst;
  const bool blocked = first_layer_form(b, L, c, w, w_any);
  auto pd = conv_pd(b, L, w, w_any);
  memory weights = b.model().constant(weight_key(L.name), *w.weight, w_user, pd.weights_desc());
  Act out = end_weighted(b, c, w, dnnl::convolution_forward(pd), pd.scratchpad_desc(), weights);
  if (blocked) out.slot = b.alias(out.slot, nhwc_dst);  // the same bytes, as the next layer reads them
  return out;
}

}  // namespace shrink::rt::detail
