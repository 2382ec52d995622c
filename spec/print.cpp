// The canonical text form of a ModelSpec: explicit names and arguments, parses back to the same spec.
#include <fmt/format.h>

#include "spec/arguments.h"
#include "spec/spec.h"

namespace shrink {
namespace {

// Writes a layer's arguments as spec text (spec/arguments.h visits them).
struct ArgumentWriter {
  std::vector<std::string>& args;
  void integer(const char* key, int64_t& field, int64_t fallback, unsigned how, const char*) {
    if ((how & spec_text::kQuiet) && field == fallback) return;
    args.push_back(how & spec_text::kBare ? std::to_string(field) : fmt::format("{}={}", key, field));
  }
  // fmt's shortest form that reads back as the same double.
  void real(const char* key, double& field, double fallback, double, double, unsigned how) {
    if ((how & spec_text::kQuiet) && field == fallback) return;
    args.push_back(fmt::format("{}={}", key, field));
  }
  void flag(const char* key, bool& field, bool fallback, unsigned how) {
    if ((how & spec_text::kQuiet) && field == fallback) return;
    args.push_back(fmt::format("{}={}", key, field ? 1 : 0));
  }
  void inputs(Layer& L, int) {
    for (const auto& in : L.inputs) args.push_back(in.empty() ? "input" : in);
  }
};

}  // namespace

std::string ModelSpec::to_string() const {
  std::string out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& L = layers[i];
    std::string previous = i == 0 ? "" : layers[i - 1].name;
    std::vector<std::string> args;
    ArgumentWriter writer{args};
    Layer copy = L;
    spec_text::visit_arguments(copy, writer);
    if (!merges_inputs(L.type) && L.inputs[0] != previous) args.push_back("from=" + (L.inputs[0].empty() ? std::string("input") : L.inputs[0]));
    std::string op = L.depthwise ? "dwconv" : layer_type_name(L.type);
    out += (i ? " " : "") + L.name + "=" + op;
    if (!args.empty()) out += "(" + fmt::format("{}", fmt::join(args, ",")) + ")";
  }
  return out;
}

std::string int8_kinds() {
  std::vector<std::string> names;
  for (const LayerTraits& t : kLayerTraits)
    if (runs_int8(t.type)) names.push_back(t.op);
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  return out;
}

}  // namespace shrink
