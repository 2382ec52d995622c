// maxpool, avgpool (padding counted in the average or not, as the layer says) and global average
// pooling, whose N,C,1,1 output is viewed as N,C unless it keeps its dims. Pooling keeps its
// input's type and grid (averages round onto it). The right and bottom padding come from the
// output size, so a ceil-mode pool's last window may pass the padding (spec/shapes.cpp refuses
// that for an average that counts the padding, which torch and oneDNN count differently).
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Act build_pool(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  const Act src = c.inputs[0];
  const int64_t n = b.batch();
  memory::desc sd = b.desc(src.slot);
  const auto& is = c.info.in_shape;
  const auto& out_shape = c.info.out_shape;
  bool global = L.type == LayerType::GlobalAvgPool;
  int64_t kh = global ? is[1] : L.kernel, kw = global ? is[2] : L.kernel, s = global ? 1 : L.stride, p = global ? 0 : L.padding;
  int64_t oh = global ? 1 : out_shape[1], ow = global ? 1 : out_shape[2];
  memory::desc dst_md({n, is[0], oh, ow}, sd.data_type(), tag::nhwc);
  auto alg = L.type == LayerType::MaxPool ? dnnl::algorithm::pooling_max
             : global || L.include_pad     ? dnnl::algorithm::pooling_avg_include_padding
                                           : dnnl::algorithm::pooling_avg_exclude_padding;
  dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, alg, sd, dst_md, {s, s}, {kh, kw}, {p, p},
                                {(oh - 1) * s + kh - is[1] - p, (ow - 1) * s + kw - is[2] - p});
  dnnl::pooling_forward::primitive_desc pd(d, user_scratchpad(), b.engine());
  Act pooled{b.slot(dst_md), src.scale};
  b.add(dnnl::pooling_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src.slot, {}}, {DNNL_ARG_DST, pooled.slot, {}}});
  if (global && !L.keep_dims) pooled.slot = b.alias(pooled.slot, memory::desc({n, is[0]}, sd.data_type(), tag::nc));
  return pooled;
}

}  // namespace shrink::rt::detail
