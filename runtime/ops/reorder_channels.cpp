// shuffle and slice: they only move channels, so each is one oneDNN reorder between views of the
// NHWC (or NC) buffers, in the input's data type and on its grid (int8 values stay as they are).
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

namespace {

// The input in its plain layout (a reorder first when a producer left another one).
int plain_input(Builder& b, const Act& x) {
  const memory::desc& d = b.desc(x.slot);
  const memory::desc plain(d.dims(), d.data_type(), Builder::plain(d));
  return d == plain ? x.slot : b.reorder(x.slot, plain);
}

}  // namespace

// Channel shuffle with g groups: output channel j*g + i is input channel i*(C/g) + j. Both sides
// are viewed as N, g, C/g, H, W with the strides that say where each channel lies in NHWC.
Act build_shuffle(Builder& b, const OpContext& c) {
  const Act x = c.inputs[0];
  const int src = plain_input(b, x);
  const memory::desc d = b.desc(src);  // a copy: adding slots moves the plan's descriptors
  const memory::dim n = d.dims()[0], ch = d.dims()[1], h = d.dims()[2], w = d.dims()[3], g = c.layer.groups, per = ch / g;
  const memory::dims grouped{n, g, per, h, w};
  const memory::desc from(grouped, d.data_type(), memory::dims{h * w * ch, per, 1, w * ch, ch});
  const memory::desc to(grouped, d.data_type(), memory::dims{h * w * ch, 1, g, w * ch, ch});
  const int out = b.slot(d);
  const int from_view = b.alias(src, from), to_view = b.alias(out, to);
  dnnl::reorder::primitive_desc pd(b.engine(), from, b.engine(), to, user_scratchpad());
  b.add(dnnl::reorder(pd), pd.scratchpad_desc(), {{DNNL_ARG_FROM, from_view, {}}, {DNNL_ARG_TO, to_view, {}}});
  return Act{out, x.scale};
}

// Channels start .. end-1: a view of them, copied into a buffer of their own.
Act build_slice(Builder& b, const OpContext& c) {
  const Act x = c.inputs[0];
  const int src = plain_input(b, x);
  const memory::desc d = b.desc(src);  // a copy: adding slots moves the plan's descriptors
  memory::dims dims = d.dims(), offsets(dims.size(), 0);
  dims[1] = c.layer.end - c.layer.start;
  offsets[1] = c.layer.start;
  const int part = b.alias(src, d.submemory_desc(dims, offsets));
  return Act{b.reorder(part, memory::desc(dims, d.data_type(), Builder::plain(d))), x.scale};
}

}  // namespace shrink::rt::detail
