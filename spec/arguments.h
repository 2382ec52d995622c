// Each layer kind's arguments in spec text, in canonical order: the one place that says what a
// kind takes. The parser visits them to fill a Layer, the printer to write one, and a key
// collector to learn which keys a kind accepts (docs/models.md lists them for users).
#pragma once
#include "spec/spec.h"

namespace shrink::spec_text {

enum : unsigned {
  kPositional = 1u << 0,  // may be given without key=, in visiting order
  kBare = 1u << 1,        // the printer writes the value alone (conv(16), not conv(out=16))
  kRequired = 1u << 2,    // no default: a layer without it is an error
  kQuiet = 1u << 3,       // the printer leaves it out while it has its default (rarely used arguments)
};

// Most inputs a concat names (a DenseNet-201 block joins 49).
inline constexpr int kMaxMergeInputs = 256;

// A Visitor has:
//   integer(key, int64_t& field, int64_t fallback, unsigned how, const char* missing)
//   real(key, double& field, double fallback, double lo, double hi, unsigned how)   (lo <= value < hi)
//   flag(key, bool& field, bool fallback, unsigned how)
//   inputs(Layer&, int most)   (the layers a merging kind reads: add's a and b, concat's up to `most`)
// `fallback` is evaluated when visited, so it may depend on arguments visited before it.
template <class Visitor>
void visit_arguments(Layer& L, Visitor& v) {
  switch (L.type) {
    case LayerType::Conv2d:
      if (!L.depthwise) v.integer("out", L.out, 0, kPositional | kBare | kRequired, "conv needs its number of output channels, e.g. conv(16)");
      v.integer("k", L.kernel, 3, kPositional, nullptr);
      v.integer("kw", L.kernel_w, -1, kQuiet, nullptr);
      v.integer("s", L.stride, 1, 0, nullptr);
      v.integer("sw", L.stride_w, -1, kQuiet, nullptr);
      v.integer("d", L.dilation, 1, kQuiet, nullptr);
      v.integer("p", L.padding, L.dilation * (L.kernel / 2), 0, nullptr);
      if (!L.depthwise) v.integer("g", L.groups, 1, 0, nullptr);
      v.flag("bias", L.bias, true, 0);
      v.integer("pt", L.pad_top, -1, kQuiet, nullptr);
      v.integer("pl", L.pad_left, -1, kQuiet, nullptr);
      v.integer("pb", L.pad_bottom, -1, kQuiet, nullptr);
      v.integer("pr", L.pad_right, -1, kQuiet, nullptr);
      return;
    case LayerType::Linear:
      v.integer("out", L.out, 0, kPositional | kBare | kRequired, "linear needs its number of outputs, e.g. linear(10)");
      v.flag("bias", L.bias, true, 0);
      return;
    case LayerType::MaxPool:
    case LayerType::AvgPool:
      v.integer("k", L.kernel, 2, kPositional, nullptr);
      v.integer("s", L.stride, L.kernel, kPositional, nullptr);
      v.integer("p", L.padding, 0, 0, nullptr);
      v.integer("kw", L.kernel_w, -1, kQuiet, nullptr);
      v.integer("sw", L.stride_w, -1, kQuiet, nullptr);
      v.integer("pw", L.padding_w, -1, kQuiet, nullptr);
      v.flag("ceil", L.ceil, false, kQuiet);
      if (L.type == LayerType::AvgPool) v.flag("include_pad", L.include_pad, true, kQuiet);
      return;
    case LayerType::GlobalAvgPool:
    case LayerType::GlobalMaxPool: v.flag("keep", L.keep_dims, false, kQuiet); return;
    case LayerType::Dropout: v.real("p", L.dropout, 0.5, 0, 1, kPositional); return;
    case LayerType::BatchNorm: v.real("eps", L.eps, 1e-5, 1e-12, 1, kQuiet); return;
    case LayerType::LeakyReLU: v.real("alpha", L.alpha, 0.01, 0, 1e6, kPositional); return;
    case LayerType::Elu: v.real("alpha", L.alpha, 1.0, 0, 1e6, kPositional); return;
    case LayerType::PReLU: v.flag("per_channel", L.per_channel, false, kQuiet); return;
    case LayerType::HardSigmoid:
      v.real("alpha", L.alpha, 1.0 / 6, 1e-6, 1e6, 0);
      v.real("beta", L.beta, 0.5, -1e6, 1e6, 0);
      return;
    case LayerType::Add:
    case LayerType::Mul: v.inputs(L, 2); return;
    case LayerType::Concat: v.inputs(L, kMaxMergeInputs); return;
    case LayerType::Shuffle: v.integer("g", L.groups, 0, kPositional | kBare | kRequired, "shuffle needs its number of groups, e.g. shuffle(2)"); return;
    case LayerType::Slice:
      v.integer("start", L.start, 0, kPositional | kBare | kRequired, "slice needs its first and end channel, e.g. slice(0, 16)");
      v.integer("end", L.end, 0, kPositional | kBare | kRequired, "slice needs its first and end channel, e.g. slice(0, 16)");
      return;
    case LayerType::ReLU:
    case LayerType::ReLU6:
    case LayerType::HardSwish:
    case LayerType::Sigmoid:
    case LayerType::Tanh:
    case LayerType::Softplus:
    case LayerType::Mish:
    case LayerType::Gelu:
    case LayerType::Flatten:
    case LayerType::Unflatten: return;  // no arguments
  }
}

}  // namespace shrink::spec_text
