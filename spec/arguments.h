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
};

// A Visitor has:
//   integer(key, int64_t& field, int64_t fallback, unsigned how, const char* missing)
//   real(key, double& field)                      (dropout's p)
//   flag(key, bool& field)                        (bias)
//   inputs(Layer&)                                (add's a and b: the layers it adds)
// `fallback` is evaluated when visited, so it may depend on arguments visited before it.
template <class Visitor>
void visit_arguments(Layer& L, Visitor& v) {
  switch (L.type) {
    case LayerType::Conv2d:
      if (!L.depthwise) v.integer("out", L.out, 0, kPositional | kBare | kRequired, "conv needs its number of output channels, e.g. conv(16)");
      v.integer("k", L.kernel, 3, kPositional, nullptr);
      v.integer("s", L.stride, 1, 0, nullptr);
      v.integer("p", L.padding, L.kernel / 2, 0, nullptr);
      if (!L.depthwise) v.integer("g", L.groups, 1, 0, nullptr);
      v.flag("bias", L.bias);
      return;
    case LayerType::Linear:
      v.integer("out", L.out, 0, kPositional | kBare | kRequired, "linear needs its number of outputs, e.g. linear(10)");
      v.flag("bias", L.bias);
      return;
    case LayerType::MaxPool:
    case LayerType::AvgPool:
      v.integer("k", L.kernel, 2, kPositional, nullptr);
      v.integer("s", L.stride, L.kernel, kPositional, nullptr);
      v.integer("p", L.padding, 0, 0, nullptr);
      return;
    case LayerType::Dropout: v.real("p", L.dropout); return;
    case LayerType::Add: v.inputs(L); return;
    case LayerType::BatchNorm:
    case LayerType::ReLU:
    case LayerType::ReLU6:
    case LayerType::HardSwish:
    case LayerType::Sigmoid:
    case LayerType::GlobalAvgPool:
    case LayerType::Flatten: return;  // no arguments
  }
}

}  // namespace shrink::spec_text
