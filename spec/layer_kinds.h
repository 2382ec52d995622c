// The one list of layer kinds, with each kind's traits.
//
// Every concern that depends on the kind (spec: parse, print, shape and MACs; the torch module;
// int8 simulation; the runtime op; structured surgery; batchnorm folding) is a switch over
// LayerType with no `default:`, and the build turns -Wswitch into an error: a kind added here
// that misses a concern does not compile. docs/architecture.md lists the places.
#pragma once
#include <cstdint>
#include <iterator>

namespace shrink {

// How a kind's output channels relate to its inputs' (structured pruning follows these).
enum class Channels {
  Own,      // sets its own output channels (conv, linear): removing one of them is a choice
  Follow,   // output channel c is input channel c (batchnorm, activations, pooling, dwconv)
  Tie,      // all inputs and the output share channels (add)
  Flatten,  // output features c*H*W .. (c+1)*H*W-1 come from input channel c
  Concat,   // the output's channels are its inputs' channels, one input after the other
  Reorder,  // the output's channels are some of its input's, in an order of their own (shuffle, slice): kept whole
};

// Trait flags.
enum : unsigned {
  kWeights = 1u << 0,     // has a weight tensor (O,I,...) and optional bias: prunable, foldable, per-channel int8
  kActivation = 1u << 1,  // an elementwise activation that can run as its producer's post-op
  kFusesActivation = 1u << 2,  // takes the activation that follows it as a post-op
  kInt8 = 1u << 3,        // can run in int8 (simulated in QAT, executed by the runtime)
  kNonNegative = 1u << 4, // its output is never negative (an unsigned int8 grid suits it)
  kMerges = 1u << 5,      // reads two or more layers, named as its arguments (add(a, b), concat(a, b, c))
  kClamp = 1u << 6,       // an activation that only clamps (relu, relu6): an int8 unit's requantization
                          // applies it, so it fuses into int8 units too (ONNX Runtime drops it before a
                          // QuantizeLinear the same way); others run after an int8 unit's own output point
  kMovesValues = 1u << 7, // outputs some of its input's values unchanged (a max, a copy): the runtime passes
                          // integer-valued floats on through it (runtime/plan.cpp)
  kView = 1u << 8,        // LibTorch may return a view of its input: an in-place activation after it would
                          // write into its input (train/model.cpp)
};

//  X(enum name,  op in spec text, traits,                             channels, parameters)
// parameters: Params when the kind has trainable parameters (a torch module), else NoParams.
#define SHRINK_LAYER_KINDS(X)                                                  \
  X(Conv2d, "conv", kWeights | kFusesActivation | kInt8, Own, Params)          \
  X(Linear, "linear", kWeights | kFusesActivation | kInt8, Own, Params)        \
  X(BatchNorm, "bn", 0, Follow, Params)                                        \
  X(ReLU, "relu", kActivation | kNonNegative | kClamp, Follow, NoParams)       \
  X(ReLU6, "relu6", kActivation | kNonNegative | kClamp, Follow, NoParams)     \
  X(HardSwish, "hardswish", kActivation, Follow, NoParams)                     \
  X(LeakyReLU, "leaky_relu", kActivation, Follow, NoParams)                    \
  X(Tanh, "tanh", kActivation, Follow, NoParams)                               \
  X(Elu, "elu", kActivation, Follow, NoParams)                                 \
  X(Softplus, "softplus", kActivation | kNonNegative, Follow, NoParams)        \
  X(Mish, "mish", kActivation, Follow, NoParams)                               \
  X(Gelu, "gelu", kActivation, Follow, NoParams)                               \
  X(PReLU, "prelu", 0, Follow, Params)                                         \
  X(Sigmoid, "sigmoid", kActivation | kNonNegative, Follow, NoParams)          \
  X(HardSigmoid, "hardsigmoid", kActivation | kNonNegative, Follow, NoParams)  \
  X(MaxPool, "maxpool", kMovesValues, Follow, NoParams)                        \
  X(AvgPool, "avgpool", 0, Follow, NoParams)                                   \
  X(GlobalAvgPool, "gap", 0, Follow, NoParams)                                 \
  X(GlobalMaxPool, "gmp", kMovesValues, Follow, NoParams)                      \
  X(Flatten, "flatten", kView, Flatten, NoParams)                              \
  X(Unflatten, "unflatten", kView, Follow, NoParams)                           \
  X(Dropout, "dropout", kView, Follow, NoParams)                               \
  X(Add, "add", kFusesActivation | kInt8 | kMerges, Tie, NoParams)            \
  X(Mul, "mul", kInt8 | kMerges, Tie, NoParams)                                \
  X(Concat, "concat", kInt8 | kMerges, Concat, NoParams)                      \
  X(Shuffle, "shuffle", kMovesValues | kView, Reorder, NoParams)               \
  X(Slice, "slice", kMovesValues | kView, Reorder, NoParams)

// `case LayerType::K:` for every kind without parameters, for the switches whose concern only
// kinds with parameters have (torch modules, cutting or masking parameters): such a switch lists
// the kinds with parameters one by one and ends with
//   SHRINK_CASES_WITHOUT_PARAMETERS return ...;
// A new kind with parameters is then a missing case there (-Werror=switch), and a new kind
// without them is covered by its row above.
#define SHRINK_CASE_IF_NoParams(kind) case LayerType::kind:
#define SHRINK_CASE_IF_Params(kind)
#define SHRINK_CASE_WITHOUT_PARAMETERS(kind, op, traits, channels, parameters) SHRINK_CASE_IF_##parameters(kind)
#define SHRINK_CASES_WITHOUT_PARAMETERS SHRINK_LAYER_KINDS(SHRINK_CASE_WITHOUT_PARAMETERS)

enum class LayerType {
#define SHRINK_KIND_ENUM(kind, op, traits, channels, parameters) kind,
  SHRINK_LAYER_KINDS(SHRINK_KIND_ENUM)
#undef SHRINK_KIND_ENUM
};

struct LayerTraits {
  LayerType type;
  const char* op;  // the kind's name in spec text
  unsigned flags;
  Channels channels;
};

inline constexpr LayerTraits kLayerTraits[] = {
#define SHRINK_KIND_TRAITS(kind, op, traits, channels, parameters) {LayerType::kind, op, traits, Channels::channels},
    SHRINK_LAYER_KINDS(SHRINK_KIND_TRAITS)
#undef SHRINK_KIND_TRAITS
};
inline constexpr int kLayerTypeCount = static_cast<int>(std::size(kLayerTraits));
// Tables indexed by LayerType elsewhere static_assert their size against kLayerTypeCount.
constexpr bool traits_in_enum_order() {
  for (int i = 0; i < kLayerTypeCount; ++i)
    if (static_cast<int>(kLayerTraits[i].type) != i) return false;
  return true;
}
static_assert(traits_in_enum_order(), "kLayerTraits[t] describes LayerType t");

constexpr const LayerTraits& traits(LayerType t) { return kLayerTraits[static_cast<int>(t)]; }
constexpr bool has_weights(LayerType t) { return traits(t).flags & kWeights; }
constexpr bool is_activation(LayerType t) { return traits(t).flags & kActivation; }
constexpr bool fuses_activation(LayerType t) { return traits(t).flags & kFusesActivation; }
constexpr bool runs_int8(LayerType t) { return traits(t).flags & kInt8; }
constexpr bool never_negative(LayerType t) { return traits(t).flags & kNonNegative; }
constexpr bool merges_inputs(LayerType t) { return traits(t).flags & kMerges; }
constexpr bool only_clamps(LayerType t) { return traits(t).flags & kClamp; }
constexpr bool moves_values(LayerType t) { return traits(t).flags & kMovesValues; }
constexpr bool may_be_a_view(LayerType t) { return traits(t).flags & kView; }

}  // namespace shrink
