// The canonical text form of a ModelSpec: explicit names and arguments, parses back to the same spec.
#include <fmt/format.h>

#include "spec/spec.h"

namespace shrink {

std::string ModelSpec::to_string() const {
  std::string out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& L = layers[i];
    std::string previous = i == 0 ? "" : layers[i - 1].name;
    std::vector<std::string> args;
    switch (L.type) {
      case LayerType::Conv2d:
        if (!L.depthwise) args.push_back(std::to_string(L.out));
        args.push_back(fmt::format("k={}", L.kernel));
        args.push_back(fmt::format("s={}", L.stride));
        args.push_back(fmt::format("p={}", L.padding));
        if (!L.depthwise) args.push_back(fmt::format("g={}", L.groups));
        args.push_back(fmt::format("bias={}", L.bias ? 1 : 0));
        break;
      case LayerType::Linear:
        args.push_back(std::to_string(L.out));
        args.push_back(fmt::format("bias={}", L.bias ? 1 : 0));
        break;
      case LayerType::MaxPool:
      case LayerType::AvgPool:
        args.push_back(fmt::format("k={}", L.kernel));
        args.push_back(fmt::format("s={}", L.stride));
        args.push_back(fmt::format("p={}", L.padding));
        break;
      case LayerType::Dropout: args.push_back(fmt::format("p={}", L.dropout)); break;
      case LayerType::Add:
        for (const auto& in : L.inputs) args.push_back(in.empty() ? "input" : in);
        break;
      case LayerType::BatchNorm:
      case LayerType::ReLU:
      case LayerType::ReLU6:
      case LayerType::GlobalAvgPool:
      case LayerType::Flatten: break;
    }
    if (L.type != LayerType::Add && L.inputs[0] != previous) args.push_back("from=" + (L.inputs[0].empty() ? std::string("input") : L.inputs[0]));
    std::string op = L.depthwise ? "dwconv" : layer_type_name(L.type);
    out += (i ? " " : "") + L.name + "=" + op;
    if (!args.empty()) out += "(" + fmt::format("{}", fmt::join(args, ",")) + ")";
  }
  return out;
}

}  // namespace shrink
