// The runtime's ops: one build function per layer kind, CTranslate2's op shape. An op reads the
// layer and its inputs from the OpContext, adds its step(s) to the Builder and returns its output.
// op_for is the table: a switch over LayerType with no default, so a kind without a runtime op
// does not compile (-Werror=switch).
#pragma once
#include "runtime/plan.h"

namespace shrink::rt::detail {

using BuildOp = Act (*)(Builder&, const OpContext&);
BuildOp op_for(LayerType type);

Act build_conv(Builder& b, const OpContext& c);        // ops/conv.cpp
Act build_linear(Builder& b, const OpContext& c);      // ops/linear.cpp
Act build_add(Builder& b, const OpContext& c);         // ops/add.cpp
Act build_pool(Builder& b, const OpContext& c);        // ops/pool.cpp: max, avg and global average
Act build_activation(Builder& b, const OpContext& c);  // ops/activation.cpp: a ReLU or ReLU6 not fused
Act build_flatten(Builder& b, const OpContext& c);     // ops/flatten.cpp
Act build_dropout(Builder& b, const OpContext& c);     // ops/dropout.cpp: the identity at inference
Act build_batchnorm(Builder& b, const OpContext& c);   // ops/batchnorm.cpp: refused (the load refuses it first)

// An activation kind as oneDNN's eltwise, for values on a grid of `scale` (0: float): what a
// standalone activation runs and what a producer appends as its post-op. ops/activation.cpp.
struct Eltwise {
  dnnl::algorithm algorithm;
  float alpha, beta;
};
Eltwise activation_eltwise(LayerType type, float scale);

}  // namespace shrink::rt::detail
