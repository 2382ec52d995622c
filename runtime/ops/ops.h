// The runtime's ops: one build function per layer kind, CTranslate2's op shape. An op reads the
// layer and its inputs from the OpContext, adds its step(s) to the Builder and returns its output;
// an activation also says which eltwise it is, so a producer can fuse it. op_for is the table: a
// switch over LayerType with no default, so a kind without a runtime op does not compile
// (-Werror=switch).
#pragma once
#include "runtime/plan.h"

#include <optional>

namespace shrink::rt::detail {

using BuildOp = Act (*)(Builder&, const OpContext&);
// Appends activation layer `L` as oneDNN eltwise post-ops for values on an int8 grid of `scale` (0: float).
using AppendActivation = void (*)(dnnl::post_ops& ops, const Layer& L, float scale);
struct RuntimeOp {
  BuildOp build;
  AppendActivation activation = nullptr;  // activations: what they run as, alone or as a producer's post-op
};
RuntimeOp op_for(LayerType type);

Act build_conv(Builder& b, const OpContext& c);        // ops/conv.cpp
// ops/conv.cpp: an int8 1x1 conv and the 3x3 depthwise conv that alone reads it, as one primitive
// when oneDNN has a fused kernel for them; null when it has none (each then runs alone).
std::optional<Act> build_conv_with_depthwise(Builder& b, const OpContext& conv, const OpContext& depthwise);
Act build_linear(Builder& b, const OpContext& c);      // ops/linear.cpp
Act build_add(Builder& b, const OpContext& c);         // ops/binary.cpp
Act build_mul(Builder& b, const OpContext& c);         // ops/binary.cpp
Act build_concat(Builder& b, const OpContext& c);      // ops/concat.cpp
Act build_pool(Builder& b, const OpContext& c);        // ops/pool.cpp: max, avg and global average
Act build_activation(Builder& b, const OpContext& c);  // ops/activation.cpp: an activation not fused
Act build_flatten(Builder& b, const OpContext& c);     // ops/flatten.cpp
Act build_unflatten(Builder& b, const OpContext& c);   // ops/flatten.cpp
Act build_prelu(Builder& b, const OpContext& c);       // ops/batchnorm.cpp
Act build_dropout(Builder& b, const OpContext& c);     // ops/dropout.cpp: the identity at inference
Act build_batchnorm(Builder& b, const OpContext& c);   // ops/batchnorm.cpp: one export could not fold
Act build_shuffle(Builder& b, const OpContext& c);     // ops/reorder_channels.cpp: channel shuffle
Act build_slice(Builder& b, const OpContext& c);       // ops/reorder_channels.cpp: some channels

// ops/activation.cpp
void append_relu(dnnl::post_ops& ops, const Layer& L, float scale);
void append_relu6(dnnl::post_ops& ops, const Layer& L, float scale);
void append_hardswish(dnnl::post_ops& ops, const Layer& L, float scale);
void append_leaky_relu(dnnl::post_ops& ops, const Layer& L, float scale);
void append_sigmoid(dnnl::post_ops& ops, const Layer& L, float scale);
void append_tanh(dnnl::post_ops& ops, const Layer& L, float scale);
void append_elu(dnnl::post_ops& ops, const Layer& L, float scale);
void append_softplus(dnnl::post_ops& ops, const Layer& L, float scale);
void append_mish(dnnl::post_ops& ops, const Layer& L, float scale);
void append_gelu(dnnl::post_ops& ops, const Layer& L, float scale);
void append_hardsigmoid(dnnl::post_ops& ops, const Layer& L, float scale);
// op_for(L.type).activation; a logic_error for a kind that is not an activation.
void append_activation(dnnl::post_ops& ops, const Layer& L, float scale);

}  // namespace shrink::rt::detail
