#include "runtime/ops/ops.h"

#include <stdexcept>

namespace shrink::rt::detail {

RuntimeOp op_for(LayerType type) {
  switch (type) {
    case LayerType::Conv2d: return {build_conv};
    case LayerType::Linear: return {build_linear};
    case LayerType::BatchNorm: return {build_batchnorm};
    case LayerType::PReLU: return {build_prelu};
    case LayerType::ReLU: return {build_activation, append_relu};
    case LayerType::ReLU6: return {build_activation, append_relu6};
    case LayerType::HardSwish: return {build_activation, append_hardswish};
    case LayerType::LeakyReLU: return {build_activation, append_leaky_relu};
    case LayerType::Tanh: return {build_activation, append_tanh};
    case LayerType::Elu: return {build_activation, append_elu};
    case LayerType::Softplus: return {build_activation, append_softplus};
    case LayerType::Mish: return {build_activation, append_mish};
    case LayerType::Gelu: return {build_activation, append_gelu};
    case LayerType::Sigmoid: return {build_activation, append_sigmoid};
    case LayerType::HardSigmoid: return {build_activation, append_hardsigmoid};
    case LayerType::MaxPool:
    case LayerType::AvgPool:
    case LayerType::GlobalAvgPool:
    case LayerType::GlobalMaxPool: return {build_pool};
    case LayerType::Flatten: return {build_flatten};
    case LayerType::Unflatten: return {build_unflatten};
    case LayerType::Dropout: return {build_dropout};
    case LayerType::Add: return {build_add};
    case LayerType::Mul: return {build_mul};
    case LayerType::Concat: return {build_concat};
    case LayerType::Shuffle: return {build_shuffle};
    case LayerType::Slice: return {build_slice};
  }
  throw std::logic_error("op_for: a LayerType outside the list");
}

}  // namespace shrink::rt::detail
