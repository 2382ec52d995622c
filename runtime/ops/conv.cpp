// conv2d (grouped, depthwise, dilated, asymmetrically padded too): oneDNN's direct convolution,
// weights packed in its layout.
#include <string>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"
#include "runtime/ops/weighted.h"

namespace shrink::rt::detail {
namespace {

dnnl::convolution_forward::primitive_desc conv_pd(Builder& b, const Layer& L, const Weighted& w, const memory::desc& weights) {
  const Pads P = L.pads();
  const int64_t gaps = L.dilation - 1;  // oneDNN counts the zeros between taps; 0: not dilated
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, w.src, weights,
                                    L.bias ? w.bias : memory::desc(), w.dst, {L.stride, L.stride_width()}, {gaps, gaps}, {P.top, P.left},
                                    {P.bottom, P.right});
  dnnl::convolution_forward::primitive_desc pd(d, w.attr, b.engine());
  to_reference(pd, w);
  return pd;
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

memory::desc user_weights(const OpContext& c, dt type) {
  const Layer& L = c.layer;
  const int64_t in_c = c.info.in_shape[0], out_c = c.info.out_shape[0], groups = L.depthwise ? in_c : L.groups, kh = L.kernel,
                kw = L.kernel_width();
  return groups == 1 ? memory::desc({out_c, in_c, kh, kw}, type, tag::oihw)
                     : memory::desc({groups, out_c / groups, in_c / groups, kh, kw}, type, tag::goihw);
}

}  // namespace

// The depthwise conv runs as the 1x1 conv's post-op: oneDNN computes the 1x1's output a few rows
// at a time into its scratchpad, each tile consumed by the depthwise kernel while in cache, so the
// expanded tensor (the largest of a MobileNet block, 19 MB for the Fashion student's first block
// at batch 256) never goes to memory. Each value is rounded onto the intermediate's grid as when
// they run apart (the same bytes out: tests/runtime/test_load.cpp). oneDNN 2.6 has such kernels
// only for large intermediates; for small ones it offers ref_fused_convolution, the two kernels
// back to back, slower than running them apart (measured at batch 1), which is refused here.
std::optional<Act> build_conv_with_depthwise(Builder& b, const OpContext& c, const OpContext& dc) {
  const Layer &L = c.layer, &D = dc.layer;
  Weighted w = begin_weighted(b, c);
  const Weighted dw = weighted_on(b, dc, Act{-1, c.out_scale}, w.dst);
  dnnl::post_ops ops;  // the 1x1's activation, the depthwise conv, then its own (a copy of c.post_ops would share its handle)
  if (c.activation) append_activation(ops, *c.activation, c.out_scale);
  ops.append_dw(dw.weight_type, D.bias ? dt::f32 : dt::undef, dw.dst.data_type(), D.kernel, D.stride, D.pads().top, 1 << 1, dw.output_scales);
  if (dc.activation) append_activation(ops, *dc.activation, dc.out_scale);
  w.attr.set_post_ops(ops);
  const memory::desc w_any(user_weights(c, dt::s8).dims(), dt::s8, tag::any);
  dnnl::convolution_forward::primitive_desc pd;
  try {
    pd = conv_pd(b, L, w, w_any);
  } catch (const dnnl::error&) {  // no kernel for the pair on this CPU (oneDNN's lists differ by ISA)
    return std::nullopt;
  }
  if (std::string(pd.impl_info_str()).rfind("ref", 0) == 0 || pd.dst_desc() != dw.dst) return std::nullopt;
  const Loaded& m = b.model();
  const memory weights = m.constant(weight_key(L.name), *w.weight, user_weights(c, dt::s8), pd.weights_desc());
  const memory dw_weights = m.constant(weight_key(D.name), *dw.weight, user_weights(dc, dt::s8),
                                       pd.query_md(dnnl::query::exec_arg_md, DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS));
  Act result{b.slot(dw.dst), dc.out_scale};
  std::vector<Arg> args{{DNNL_ARG_SRC, w.x.slot, {}}, {DNNL_ARG_WEIGHTS, -1, weights}, {DNNL_ARG_DST, result.slot, {}},
                        {DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_WEIGHTS, -1, dw_weights}};
  if (L.bias) args.push_back({DNNL_ARG_BIAS, -1, packed_bias(b, c, w)});
  if (D.bias) args.push_back({DNNL_ARG_ATTR_POST_OP_DW | DNNL_ARG_BIAS, -1, packed_bias(b, dc, dw)});
  b.add(dnnl::convolution_forward(pd), pd.scratchpad_desc(), std::move(args));
  return result;
}

Act build_conv(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  Weighted w = begin_weighted(b, c);
  const memory::desc w_user = user_weights(c, w.weight_type), w_any(w_user.dims(), w.packed_type(), tag::any);
  const memory::desc nhwc_dst = w.dst;
  const bool blocked = first_layer_form(b, L, c, w, w_any);
  auto pd = conv_pd(b, L, w, w_any);
  memory weights = b.model().constant(weight_key(L.name), *w.weight, w_user, pd.weights_desc());
  Act out = end_weighted(b, c, w, dnnl::convolution_forward(pd), pd.scratchpad_desc(), weights);
  if (blocked) out.slot = b.alias(out.slot, nhwc_dst);  // the same bytes, as the next layer reads them
  return out;
}

}  // namespace shrink::rt::detail
