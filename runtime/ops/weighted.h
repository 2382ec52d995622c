// What conv and linear share (ops/weighted.cpp): the input on its int8 grid, per-channel output
// scales and the fused activation in the primitive's attributes, and the bias, which an int8
// layer takes in the int32 sum's units. The op in between declares its primitive.
// On a CPU without VNNI, oneDNN 2.6's int8 kernels do not compute exact int32 sums (u8 x s8 pairs
// saturate at 16 bits, and an s8 input's weights are halved), so there an int8 layer runs as a
// float primitive on the integer values instead ("on floats"): the same sums, exact in float while
// no partial sum can pass 2^24, then the same float steps onto the output's grid. A layer whose
// sums could pass it runs oneDNN's reference int8 kernel (exact, slow).
#pragma once
#include "runtime/model_file.h"
#include "runtime/plan.h"

#include <set>
#include <string>
#include <vector>

namespace shrink::rt::detail {

struct Weighted {
  Act x;                           // the input (on its point's grid for an int8 layer)
  memory::desc src, dst, bias;     // bias: [out] f32 (used when the layer has one)
  const Tensor* weight = nullptr;  // the file's weights
  const float* weight_scales = nullptr;  // per output channel, int8 layers
  dt weight_type = dt::f32;        // the file's: s8 for int8 layers
  std::vector<float> output_scales;  // int8 layers: per output channel, s_in * s_w[c] (/ s_out onto an int8 output)
  dnnl::primitive_attr attr;       // user scratchpad, output scales (int8), the fused activation
  bool on_floats = false;          // an int8 layer run as a float primitive on the integer values
  memory channel_scales;           // on floats: output_scales, the operand of its first post-op (a multiply)
  bool reference = false;          // an int8 layer that must run oneDNN's reference kernel (see above)
  dt packed_type() const { return on_floats ? dt::f32 : weight_type; }  // the weights as the primitive reads them
};

Weighted begin_weighted(Builder& b, const OpContext& c);
// The same for a layer whose input `x` (of descriptor `src`) is never formed: a depthwise conv
// computed inside the 1x1 conv before it (ops/conv.cpp).
Weighted weighted_on(Builder& b, const OpContext& c, const Act& x, const memory::desc& src);
// The int8 convs and linears that run on floats (Loaded::on_floats, chosen once at load).
std::set<std::string> layers_on_floats(const Loaded& m);
// The layer's bias as its primitive takes it (in the int32 sum's units for an int8 layer).
memory packed_bias(Builder& b, const OpContext& c, const Weighted& w);
// Steps `pd` on to oneDNN's reference implementation when `w` asks for it (a layer whose int8
// sums only that kernel computes exactly on this CPU). The operation descriptor `pd` was made from
// must still be alive: oneDNN's iterator reads it (stepping after it was gone crashed).
template <typename PrimitiveDesc>
void to_reference(PrimitiveDesc& pd, const Weighted& w) {
  if (!w.reference) return;
  while (std::string(pd.impl_info_str()).rfind("ref", 0) != 0)
    if (!pd.next_impl()) throw Error("no reference kernel for an int8 layer");
}
// Adds the layer's step: `prim` reading x, `weights` (the constant the op packed for it) and the
// bias, writing a new output slot, which it returns.
Act end_weighted(Builder& b, const OpContext& c, const Weighted& w, const dnnl::primitive& prim, const memory::desc& scratchpad, const memory& weights);

}  // namespace shrink::rt::detail
