// The per-channel float ops with parameters of their own: batchnorm that export could not fold into a conv or linear (one after an activation or an add):
// y = x * scale[c] + shift[c], export's weight and bias for it, in float (oneDNN's batch
// normalization with mean 0, variance 1 and no epsilon). In an int8 model it reads the
// dequantized input; the builder puts its output onto its point's grid when one follows.
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Act build_batchnorm(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  const Loaded& m = b.model();
  const Act x = b.as_float(c.inputs[0]);
  const int64_t channels = c.info.out_shape[0];
  const memory::desc& sd = b.desc(x.slot);
  const memory::desc stats({channels}, dt::f32, tag::x), scale_shift({2, channels}, dt::f32, tag::nc);
  const auto flags = dnnl::normalization_flags::use_global_stats | dnnl::normalization_flags::use_scale_shift;
  dnnl::batch_normalization_forward::desc d(dnnl::prop_kind::forward_inference, sd, 0.f, flags);
  dnnl::batch_normalization_forward::primitive_desc pd(d, user_scratchpad(), b.engine());
  const Tensor& scale = m.tensor(weight_key(L.name));
  const Tensor& shift = m.tensor(bias_key(L.name));
  memory mean = m.derived(L.name + "/zeros", stats, [&](float* v) { std::fill(v, v + channels, 0.f); });
  memory variance = m.derived(L.name + "/ones", stats, [&](float* v) { std::fill(v, v + channels, 1.f); });
  memory packed = m.derived(L.name + "/scale_shift", scale_shift, [&](float* v) {
    std::copy(scale.f32(), scale.f32() + channels, v);
    std::copy(shift.f32(), shift.f32() + channels, v + channels);
  });
  Act result{b.slot(sd), 0};
  b.add(dnnl::batch_normalization_forward(pd), pd.scratchpad_desc(),
        {{DNNL_ARG_SRC, x.slot, {}}, {DNNL_ARG_MEAN, -1, mean}, {DNNL_ARG_VARIANCE, -1, variance}, {DNNL_ARG_SCALE_SHIFT, -1, packed},
         {DNNL_ARG_DST, result.slot, {}}});
  return result;
}

// prelu: x for x > 0, else slope[c] * x (one slope for all channels, or one each), in float
// (oneDNN's prelu, the slopes broadcast over the batch and the image).
Act build_prelu(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  const Act x = b.as_float(c.inputs[0]);
  const memory::desc& sd = b.desc(x.slot);
  const Tensor& slope = b.model().tensor(weight_key(L.name));
  const int64_t count = L.per_channel ? c.info.out_shape[0] : 1;
  memory::dims dims(sd.dims().size(), 1);
  dims[1] = count;
  const memory::desc wd(dims, dt::f32, dims.size() == 4 ? tag::nchw : tag::nc);
  memory slopes = b.model().derived(L.name + "/slopes", wd, [&](float* v) { std::copy(slope.f32(), slope.f32() + count, v); });
  dnnl::prelu_forward::desc d(dnnl::prop_kind::forward_inference, sd, wd);
  dnnl::prelu_forward::primitive_desc pd(d, user_scratchpad(), b.engine());
  Act result{b.slot(sd), 0};
  b.add(dnnl::prelu_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, x.slot, {}}, {DNNL_ARG_WEIGHTS, -1, slopes}, {DNNL_ARG_DST, result.slot, {}}});
  return result;
}

}  // namespace shrink::rt::detail
