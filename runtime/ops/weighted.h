// What conv and linear share (ops/weighted.cpp): the input on its int8 grid, per-channel output
// scales and the fused activation in the primitive's attributes, and the bias, which an int8
// layer takes in the int32 sum's units. The op in between declares its primitive.
#pragma once
#include "runtime/model_file.h"
#include "runtime/plan.h"

#include <vector>

namespace shrink::rt::detail {

struct Weighted {
  Act x;                           // the input (on its point's grid for an int8 layer)
  memory::desc src, dst, bias;     // bias: [out] f32 (used when the layer has one)
  const Tensor* weight = nullptr;  // the file's weights
  const float* weight_scales = nullptr;  // per output channel, int8 layers
  dt weight_type = dt::f32;        // s8 for int8 layers
  std::vector<float> output_scales;  // int8 layers: per output channel, s_in * s_w[c] (/ s_out onto an int8 output)
  dnnl::primitive_attr attr;       // user scratchpad, output scales (int8), the fused activation
};

Weighted begin_weighted(Builder& b, const OpContext& c);
// The same for a layer whose input `x` (of descriptor `src`) is never formed: a depthwise conv
// computed inside the 1x1 conv before it (ops/conv.cpp).
Weighted weighted_on(Builder& b, const OpContext& c, const Act& x, const memory::desc& src);
// The layer's bias as its primitive takes it (in the int32 sum's units for an int8 layer).
memory packed_bias(Builder& b, const OpContext& c, const Weighted& w);
// Adds the layer's step: `prim` reading x, `weights` (the constant the op packed for it) and the
// bias, writing a new output slot, which it returns.
Act end_weighted(Builder& b, const OpContext& c, const Weighted& w, const dnnl::primitive& prim, const memory::desc& scratchpad, const memory& weights);

}  // namespace shrink::rt::detail
