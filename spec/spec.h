// ModelSpec: the one model representation that flows from config to trainer, exporter and runtime.
// Plain data, no torch types. Text form (see docs/models.md):
//   conv(16) bn relu maxpool(2) conv(32) bn relu gap linear(classes)
// Each token is [name=]op[(args)]; a layer reads the previous layer's output unless it says
// from=NAME; add(NAME) adds the previous output and NAME's.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/shape.h"
#include "spec/layer_kinds.h"

namespace shrink {

struct Layer {
  std::string name;
  LayerType type = LayerType::ReLU;
  std::vector<std::string> inputs;  // names of the layers it reads; "" is the model input
  int64_t out = 0;                  // conv output channels, linear output features
  int64_t kernel = 1, stride = 1, padding = 0, groups = 1;
  bool depthwise = false;           // conv with groups = in channels = out channels
  bool bias = true;
  double dropout = 0.5;
};

struct ModelSpec {
  std::vector<int64_t> input;  // per-sample input shape C,H,W
  int64_t classes = 0;
  std::vector<Layer> layers;
  // The canonical text form: explicit names and arguments; parses back to the same spec.
  std::string to_string() const;
  const Layer& layer(const std::string& name) const;  // throws UserError when missing
  int index_of(const std::string& name) const;        // -1 when missing
};

// What a layer sees and produces, for one sample, with its size and cost.
struct LayerInfo {
  std::vector<int64_t> in_shape, out_shape;
  std::vector<int64_t> weight_shape;  // conv: O,I/groups,K,K; linear: O,inputs; else empty
  int64_t params = 0;
  int64_t macs = 0;
};

// Parses a spec string or a preset name (usps_teacher, usps_student, lenet5, mlp_300_100,
// resnet20). `classes` replaces the word `classes` in arguments. Checks shapes; errors are
// UserError naming the column and token at fault.
ModelSpec parse_spec(const std::string& text, const std::vector<int64_t>& input, int64_t classes);
std::vector<std::string> preset_names();
// The spec text of a preset, or "" when `name` is none.
std::string preset_text(const std::string& name);
// Shapes, params and MACs per layer, in spec order. Throws UserError on shapes that do not fit.
std::vector<LayerInfo> analyze(const ModelSpec& spec);
struct ModelCost {
  int64_t params = 0, macs = 0;
};
ModelCost total_cost(const ModelSpec& spec);
inline std::string layer_type_name(LayerType t) { return traits(t).op; }

}  // namespace shrink
