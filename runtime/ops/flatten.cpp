// flatten: torch flattens in C,H,W order, so an NHWC image is reordered to NCHW and viewed as
// N,(C*H*W); a feature vector passes through. unflatten: features F viewed as an F,1,1 image
// (the same bytes in NHWC).
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Act build_flatten(Builder& b, const OpContext& c) {
  const Act src = c.inputs[0];
  memory::desc sd = b.desc(src.slot);
  if (sd.dims().size() != 4) return src;
  int plain_nchw = b.reorder(src.slot, memory::desc(sd.dims(), sd.data_type(), tag::nchw));
  return Act{b.alias(plain_nchw, memory::desc({b.batch(), c.info.out_shape[0]}, sd.data_type(), tag::nc)), src.scale};
}

Act build_unflatten(Builder& b, const OpContext& c) {
  const Act src = c.inputs[0];
  return Act{b.alias(src.slot, memory::desc({b.batch(), c.info.out_shape[0], 1, 1}, b.desc(src.slot).data_type(), tag::nhwc)), src.scale};
}

}  // namespace shrink::rt::detail
