// ModelSpec: the one model representation that flows from config to trainer, exporter and runtime.
// Plain data, no torch types. Text form (see docs/models.md):
//   conv(16) bn relu maxpool(2) conv(32) bn relu gap linear(classes)
// Each token is [name=]op[(args)]; a layer reads the previous layer's output unless it says
// from=NAME; add(NAME) adds the previous output and NAME's.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/shape.h"
#include "spec/layer_kinds.h"

namespace shrink {

// A conv's zero padding on each side of the image.
struct Pads {
  int64_t top, left, bottom, right;
  bool symmetric() const { return top == bottom && left == right; }
};

struct Layer {
  std::string name;
  LayerType type = LayerType::ReLU;
  std::vector<std::string> inputs;  // names of the layers it reads; "" is the model input
  int64_t out = 0;                  // conv output channels, linear output features
  int64_t kernel = 1, stride = 1, padding = 0, groups = 1, dilation = 1;
  // Conv and pools: the kernel's width and the stride along the width when they differ from
  // `kernel` and `stride` (Inception's 1x7, a spectrogram's 2x1 pooling); -1: the same.
  int64_t kernel_w = -1, stride_w = -1;
  // A conv's padding on one side when it differs from `padding` (ONNX's asymmetric pads); -1: `padding`.
  int64_t pad_top = -1, pad_left = -1, pad_bottom = -1, pad_right = -1;
  int64_t padding_w = -1;           // pools: the padding left and right when it differs from `padding` (top and bottom)
  bool depthwise = false;           // conv with groups = in channels = out channels
  bool bias = true;
  bool ceil = false;                // pools: the output size rounds up (torch's ceil_mode)
  bool include_pad = true;          // avgpool: padding counts in the average (torch's count_include_pad)
  bool keep_dims = false;           // gap, gmp: the output is C,1,1 instead of C
  bool per_channel = false;         // prelu: one slope per channel (else one for all, torch's default)
  double dropout = 0.5;
  double eps = 1e-5;                // batchnorm: added to the variance
  double alpha = 1.0 / 6, beta = 0.5;  // hardsigmoid: clip(alpha * x + beta, 0, 1), torch's by default; leaky_relu: the negative slope; elu: alpha * (exp(x) - 1) for x <= 0
  int64_t start = 0, end = 0;       // slice: channels start .. end-1 of its input

  int64_t kernel_width() const { return kernel_w < 0 ? kernel : kernel_w; }
  int64_t stride_width() const { return stride_w < 0 ? stride : stride_w; }
  // A pool's window along height [0] and width [1] (its padding is the same at both ends of an axis).
  struct Window {
    std::array<int64_t, 2> kernel, stride, padding;
  };
  Window window() const { return {{kernel, kernel_width()}, {stride, stride_width()}, {padding, padding_w < 0 ? padding : padding_w}}; }
  Pads pads() const {
    const int64_t across = padding_w < 0 ? padding : padding_w;  // a pool's left and right
    auto side = [&](int64_t p, int64_t fallback) { return p < 0 ? fallback : p; };
    return {side(pad_top, padding), side(pad_left, across), side(pad_bottom, padding), side(pad_right, across)};
  }
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

// Parses a spec string or a preset (preset_names(): usps_teacher, usps_student, lenet5,
// mlp_300_100, resnet20, resnet18, mobilenet_v2). A preset is the whole spec and may carry
// key=value arguments, e.g. mobilenet_v2(width=0.5) or resnet18(width=0.5). `classes` replaces the
// word `classes` in arguments. Checks shapes; errors are UserError naming the column and token at
// fault.
ModelSpec parse_spec(const std::string& text, const std::vector<int64_t>& input, int64_t classes);
std::vector<std::string> preset_names();
// The spec text of a preset, or "" when `name` is none.
std::string preset_text(const std::string& name);
// Shapes, params and MACs per layer, in spec order. Throws UserError on shapes that do not fit.
std::vector<LayerInfo> analyze(const ModelSpec& spec);
// How many windows a max or average pool `L` takes along a side of `size` (torch's rule: ceil mode
// rounds the count up, but the last window must start inside the image or its first padding).
int64_t pool_windows(const Layer& L, int64_t size, int d);
struct ModelCost {
  int64_t params = 0, macs = 0;
};
ModelCost total_cost(const ModelSpec& spec);
inline std::string layer_type_name(LayerType t) { return traits(t).op; }
// "conv, linear, add, mul and concat": the kinds that run in int8, for messages.
std::string int8_kinds();

}  // namespace shrink
