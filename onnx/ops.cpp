// One reader per ONNX op type: what each node becomes in the spec (docs/onnx.md).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "onnx/importer.h"

namespace shrink::onnx_import {

namespace {

// The attribute `name` of `n`, which must have the type ONNX gives it (protobuf reads a field of
// another type as 0: alpha = 2 stored as an INT would silently be 0).
const onnx::AttributeProto* find_attr(const onnx::NodeProto& n, const std::string& name, onnx::AttributeProto::AttributeType type) {
  for (const auto& a : n.attribute()) {
    if (a.name() != name) continue;
    if (a.type() != type)
      throw BadAttribute(fmt::format("attribute '{}' is stored as {}, where ONNX has it {}", name, onnx::AttributeProto::AttributeType_Name(a.type()),
                                     onnx::AttributeProto::AttributeType_Name(type)));
    return &a;
  }
  return nullptr;
}

}  // namespace

int64_t attr_int(const onnx::NodeProto& n, const std::string& name, int64_t fallback) {
  const auto* a = find_attr(n, name, onnx::AttributeProto::INT);
  return a ? a->i() : fallback;
}
double attr_float(const onnx::NodeProto& n, const std::string& name, float fallback) {
  const auto* a = find_attr(n, name, onnx::AttributeProto::FLOAT);
  return as_double(a ? a->f() : fallback);
}

double as_double(float v) { return std::stod(fmt::format("{}", v)); }
std::string attr_string(const onnx::NodeProto& n, const std::string& name, const std::string& fallback) {
  const auto* a = find_attr(n, name, onnx::AttributeProto::STRING);
  return a ? a->s() : fallback;
}
std::vector<int64_t> attr_ints(const onnx::NodeProto& n, const std::string& name, std::vector<int64_t> fallback) {
  const auto* a = find_attr(n, name, onnx::AttributeProto::INTS);
  return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : fallback;
}

const std::map<std::string, Importer::Handler>& Importer::handlers() {
  static const std::map<std::string, Handler> table = {
      {"Conv", &Importer::conv},
      {"Gemm", &Importer::gemm},
      {"MatMul", &Importer::matmul},
      {"Add", &Importer::arithmetic},
      {"Mul", &Importer::arithmetic},
      {"BatchNormalization", &Importer::batchnorm},
      {"Relu", &Importer::activation},
      {"Sigmoid", &Importer::activation},
      {"HardSwish", &Importer::activation},
      {"LeakyRelu", &Importer::activation},
      {"Tanh", &Importer::activation},
      {"Elu", &Importer::activation},
      {"Softplus", &Importer::activation},
      {"Mish", &Importer::activation},
      {"Max", &Importer::min_max},
      {"Min", &Importer::min_max},
      {"PRelu", &Importer::prelu},
      {"Greater", &Importer::greater},
      {"Erf", &Importer::erf},
      {"Gelu", &Importer::activation},
      {"Where", &Importer::where},
      {"Clip", &Importer::clip},
      {"HardSigmoid", &Importer::hardsigmoid},
      {"MaxPool", &Importer::pool},
      {"AveragePool", &Importer::pool},
      {"GlobalAveragePool", &Importer::global_pool},
      {"GlobalMaxPool", &Importer::global_pool},
      {"ReduceMean", &Importer::reduce},
      {"ReduceMax", &Importer::reduce},
      {"Flatten", &Importer::flatten},
      {"Reshape", &Importer::reshape},
      {"Shape", &Importer::shape},
      {"Gather", &Importer::gather},
      {"Unsqueeze", &Importer::squeeze},
      {"Expand", &Importer::expand},
      {"Squeeze", &Importer::squeeze},
      {"Concat", &Importer::concat},
      {"Cast", &Importer::cast},
      {"Constant", &Importer::constant},
      {"ConstantOfShape", &Importer::constant_of_shape},
      {"Identity", &Importer::identity},
      {"Dropout", &Importer::dropout},
      {"Transpose", &Importer::transpose},
      {"Slice", &Importer::slice},
      {"Split", &Importer::split},
      {"Softmax", &Importer::output_softmax},
      {"LogSoftmax", &Importer::output_softmax},
      {"Pad", &Importer::pad},
      {"Sub", &Importer::arithmetic},
      {"Div", &Importer::arithmetic},
  };
  return table;
}

// Conv: any kernel height and width, equal strides and dilations, any groups and padding (a Pad before it too).
void Importer::conv(const onnx::NodeProto& n) {
  const Value& x = padded_input(n, 0);
  const Constant& w = constant_input(n, 1);
  if (w.dims.size() != 4 || !w.is_float) unsupported(n, "only 2-D convolutions (a 4-D float weight) are supported");
  const std::vector<int64_t> kernel = attr_ints(n, "kernel_shape", {w.dims[2], w.dims[3]});
  const auto strides = attr_ints(n, "strides", {1, 1}), dilations = attr_ints(n, "dilations", {1, 1});
  if (kernel.size() != 2) unsupported(n, fmt::format("kernel {}: only 2-D kernels are supported", fmt::join(kernel, "x")));
  if (strides.size() != 2) unsupported(n, "only 2-D strides are supported");
  if (dilations.size() != 2 || dilations[0] != dilations[1]) unsupported(n, "only equal dilations along height and width are supported");
  if (kernel[0] < 1 || kernel[1] < 1 || strides[0] < 1 || strides[1] < 1 || dilations[0] < 1) unsupported(n, "kernel_shape, strides and dilations must be at least 1");
  if (kernel != std::vector<int64_t>{w.dims[2], w.dims[3]}) unsupported(n, fmt::format("kernel_shape {} differs from its weight's {}x{}", fmt::join(kernel, "x"), w.dims[2], w.dims[3]));
  Layer L = layer_of(LayerType::Conv2d);
  L.kernel = kernel[0], L.kernel_w = kernel[1], L.stride = strides[0], L.stride_w = strides[1], L.dilation = dilations[0];
  L.out = w.dims[0];
  const int64_t groups = attr_int(n, "group", 1), in_c = x.shape.empty() ? 0 : x.shape[0];
  if (groups < 1 || in_c % groups != 0 || L.out % groups != 0)
    unsupported(n, fmt::format("group {} must be at least 1 and divide its {} input and {} output channels", groups, in_c, L.out));
  if (groups > 1 && groups == in_c && L.out == in_c) L.depthwise = true;
  else L.groups = groups;
  std::vector<int64_t> pads = attr_ints(n, "pads", {0, 0, 0, 0});  // top, left, bottom, right
  const std::string auto_pad = attr_string(n, "auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && !auto_pad.empty() && pads != std::vector<int64_t>{0, 0, 0, 0})
    unsupported(n, fmt::format("auto_pad {} and pads together (ONNX allows one or the other)", auto_pad));
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    const int64_t padded[] = {x.pads.top + x.pads.bottom, x.pads.left + x.pads.right};  // a Pad before it (zero for a plain input)
    for (int d = 0; d < 2 && x.shape.size() == 3; ++d) {
      int64_t size = x.shape[1 + d] + padded[d], out = (size + strides[d] - 1) / strides[d];
      int64_t total = std::max<int64_t>(0, (out - 1) * strides[d] + (kernel[d] - 1) * L.dilation + 1 - size);
      pads[d] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pads[d + 2] = total - pads[d];
    }
  } else if (auto_pad != "NOTSET" && auto_pad != "VALID" && !auto_pad.empty()) {
    unsupported(n, fmt::format("auto_pad {} is not supported", auto_pad));
  }
  if (pads.size() != 4 || std::any_of(pads.begin(), pads.end(), [](int64_t p) { return p < 0; })) unsupported(n, "pads must be 4 values, none negative");
  pads[0] += x.pads.top, pads[1] += x.pads.left, pads[2] += x.pads.bottom, pads[3] += x.pads.right;  // zero for a plain input
  L.padding = pads[0], L.pad_left = pads[1], L.pad_bottom = pads[2], L.pad_right = pads[3];
  L.bias = has_input(n, 2);
  if (L.bias && (constant_input(n, 2).numel() != L.out || !constant_input(n, 2).is_float))
    unsupported(n, fmt::format("its bias must be {} floats", L.out));
  std::string name = add_layer(n, L, {x.layer});
  set_tensor(name + ".weight", w.dims, w.floats);
  if (L.bias) set_tensor(name + ".bias", {L.out}, constant_input(n, 2).floats);
}

// Gemm: y = alpha * A B' + beta * C with B a constant: a linear layer of weight alpha * B.
void Importer::gemm(const onnx::NodeProto& n) {
  const Value& a = linear_input(n);
  const Constant& b = constant_input(n, 1);
  if (attr_int(n, "transA", 0) != 0) unsupported(n, "transA = 1 is not supported");
  if (b.dims.size() != 2 || !b.is_float) unsupported(n, "B must be a 2-D float constant");
  if (a.shape.size() != 1) unsupported(n, fmt::format("input of shape {} per sample; a flattened input is expected", shape_string(a.shape)));
  const bool trans_b = attr_int(n, "transB", 0) != 0;
  const int64_t in = trans_b ? b.dims[1] : b.dims[0], out = trans_b ? b.dims[0] : b.dims[1];
  if (in != a.shape[0]) unsupported(n, fmt::format("B of shape {} for {} input features", shape_string(b.dims), a.shape[0]));
  const float alpha = static_cast<float>(attr_float(n, "alpha", 1.f)), beta = static_cast<float>(attr_float(n, "beta", 1.f));
  std::vector<float> w(static_cast<size_t>(in * out));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) w[o * in + i] = alpha * (trans_b ? b.floats[o * in + i] : b.floats[i * out + o]);
  Layer L = layer_of(LayerType::Linear);
  L.out = out;
  L.bias = has_input(n, 2);
  std::string name = add_layer(n, L, {a.layer});
  set_tensor(name + ".weight", {out, in}, linear_weight(a, std::move(w), out));
  if (!L.bias) return;
  const Constant& c = constant_input(n, 2);
  if ((c.numel() != out && c.numel() != 1) || !c.is_float) unsupported(n, fmt::format("C must be {} floats or one", out));
  std::vector<float> bias(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) bias[o] = beta * c.floats[c.numel() == 1 ? 0 : o];
  set_tensor(name + ".bias", {out}, std::move(bias));
}

// MatMul of a flattened input by a constant [in, out]: a linear layer without bias (an Add may give it one).
void Importer::matmul(const onnx::NodeProto& n) {
  const Value& a = linear_input(n);
  const Value& bv = input(n, 1);
  if (bv.kind != Value::Kind::Constant) unsupported(n, "only a product by a constant matrix is supported");
  const Constant& b = bv.constant;
  if (a.shape.size() != 1 || b.dims.size() != 2 || b.dims[0] != a.shape[0])
    unsupported(n, fmt::format("a product of {} per sample by {}; [features] by [features, outputs] is supported", shape_string(a.shape), shape_string(b.dims)));
  const int64_t in = b.dims[0], out = b.dims[1];
  std::vector<float> w(static_cast<size_t>(in * out));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) w[o * in + i] = b.floats[i * out + o];
  Layer L = layer_of(LayerType::Linear);
  L.out = out;
  L.bias = false;
  std::string name = add_layer(n, L, {a.layer});
  set_tensor(name + ".weight", {out, in}, linear_weight(a, std::move(w), out));
}

// Add of two computed tensors: a residual add. Of a computed tensor and a constant: the bias of
// the conv or linear (without one) that computed it, when nothing else reads that output.
void Importer::add(const onnx::NodeProto& n) {
  if (gelu_step(n)) return;
  const Value& a = input(n, 0);
  const Value& b = input(n, 1);
  if (a.kind == Value::Kind::Layer && b.kind == Value::Kind::Layer) {
    add_layer(n, layer_of(LayerType::Add), {a.layer, b.layer});
    return;
  }
  const bool a_is_layer = a.kind == Value::Kind::Layer;
  const Value& x = a_is_layer ? a : b;
  const Value& c = a_is_layer ? b : a;
  const int producer = x.kind == Value::Kind::Layer && !x.layer.empty() ? index_of_layer(x.layer) : -1;
  // One value per channel, shaped to broadcast along channels: [C] or [1,C] for features,
  // [C,1,1] or [1,C,1,1] for images ([C] would run along an image's width).
  std::vector<int64_t> dims = c.constant.dims;
  if (!dims.empty() && dims[0] == 1 && dims.size() == x.shape.size() + 1) dims.erase(dims.begin());
  std::vector<int64_t> per_channel(x.shape.size(), 1);
  if (!per_channel.empty()) per_channel[0] = x.shape[0];
  if (c.kind != Value::Kind::Constant || producer < 0 || !has_weights(spec_.layers[producer].type) || spec_.layers[producer].bias ||
      readers(x.layer) != 1 || dims != per_channel || !c.constant.is_float)
    unsupported(n, "only an add of two computed tensors, or of a per-channel bias to the only output of a Conv, Gemm or MatMul without one, is supported");
  Layer& L = spec_.layers[producer];
  L.bias = true;
  set_tensor(L.name + ".bias", {x.shape[0]}, c.constant.floats);
  values_[n.output(0)] = x;
}

// Mul of two computed tensors (SiLU, squeeze-excite). x * hardsigmoid(x) with torch's constants
// is hardswish (how torch exports it before opset 14): one layer.
void Importer::mul(const onnx::NodeProto& n) {
  if (gelu_step(n)) return;
  // An Expanded operand is its C,1,1 tensor, which the mul broadcasts over the other's C,H,W.
  auto operand = [&](int k) -> const Value& { return input(n, k).kind == Value::Kind::Expanded ? input(n, k) : layer_input(n, k); };
  const Value& a = operand(0);
  const Value& b = operand(1);
  for (const auto* pair : {&a, &b})
    if (pair->kind == Value::Kind::Expanded && (pair == &a ? b : a).shape != pair->image)
      unsupported(n, fmt::format("an Expand to {} times a tensor of shape {}", shape_string(pair->image), shape_string((pair == &a ? b : a).shape)));
  for (const auto* pair : {&a, &b}) {
    const Value& gate = *pair;
    const Value& other = pair == &a ? b : a;
    int g = gate.layer.empty() ? -1 : index_of_layer(gate.layer);
    if (g < 0) continue;
    Layer& G = spec_.layers[g];
    if (G.type == LayerType::HardSigmoid && G.inputs[0] == other.layer && std::abs(G.alpha - 1.0 / 6) < 1e-6 && G.beta == 0.5 &&
        readers(G.name) == 1) {  // nothing else reads the hardsigmoid: it becomes the hardswish
      return retype(n, g, LayerType::HardSwish, G.inputs[0]);
    }
    // x * tanh(softplus(x)), torch's Mish below opset 18: the tanh becomes the mish, reading x;
    // the softplus, read by nothing then, is dropped with the dead layers at the end.
    const int s = G.type == LayerType::Tanh && readers(G.name) == 1 ? index_of_layer(G.inputs[0]) : -1;
    if (s >= 0 && spec_.layers[s].type == LayerType::Softplus && spec_.layers[s].inputs[0] == other.layer && readers(spec_.layers[s].name) == 1)
      return retype(n, g, LayerType::Mish, other.layer);
  }
  add_layer(n, layer_of(LayerType::Mul), {a.layer, b.layer});
}

void Importer::batchnorm(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  only_first_output_used(n);  // training-mode exports add running statistics as outputs
  Layer L = layer_of(LayerType::BatchNorm);
  L.eps = attr_float(n, "epsilon", 1e-5f);
  std::string name = add_layer(n, L, {x.layer});
  const char* parts[] = {".weight", ".bias", ".running_mean", ".running_var"};
  for (int k = 0; k < 4; ++k) {
    const Constant& c = constant_input(n, k + 1);
    if (c.numel() != x.shape[0] || !c.is_float) unsupported(n, fmt::format("input {} has {} values for {} channels", k + 1, c.numel(), x.shape[0]));
    set_tensor(name + parts[k], {x.shape[0]}, c.floats);
  }
}

void Importer::activation(const onnx::NodeProto& n) {
  const std::string& op = n.op_type();
  static const std::map<std::string, LayerType> kinds = {{"Relu", LayerType::ReLU},           {"Sigmoid", LayerType::Sigmoid},
                                                         {"HardSwish", LayerType::HardSwish}, {"LeakyRelu", LayerType::LeakyReLU},
                                                         {"Tanh", LayerType::Tanh},           {"Elu", LayerType::Elu},
                                                         {"Softplus", LayerType::Softplus},   {"Mish", LayerType::Mish},
                                                         {"Gelu", LayerType::Gelu}};
  Layer L = layer_of(kinds.at(op));
  if (L.type == LayerType::LeakyReLU) L.alpha = attr_float(n, "alpha", 0.01f);  // ONNX's defaults, as torch's
  if (L.type == LayerType::Elu) L.alpha = attr_float(n, "alpha", 1.f);
  if (L.type == LayerType::Gelu && attr_string(n, "approximate", "none") != "none")
    unsupported(n, fmt::format("approximate '{}': only the exact GELU (approximate 'none', torch's default) is supported", attr_string(n, "approximate", "")));
  add_layer(n, L, {layer_input(n, 0).layer});
}

// PRelu with a constant slope: one value for all, or one per channel shaped to broadcast along
// channels ([C,1,1] or [1,C,1,1] on an image, [C] or [1,C] on features).
void Importer::prelu(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  const Constant& slope = constant_input(n, 1);
  std::vector<int64_t> dims = slope.dims;
  while (!dims.empty() && dims.front() == 1 && dims.size() > x.shape.size()) dims.erase(dims.begin());
  std::vector<int64_t> per_channel(x.shape.size(), 1);
  if (!per_channel.empty()) per_channel[0] = x.shape[0];
  Layer L = layer_of(LayerType::PReLU);
  L.per_channel = slope.numel() != 1;
  if (!slope.is_float || (L.per_channel && dims != per_channel))
    unsupported(n, fmt::format("its slope must be one float, or one per channel shaped [{}]", fmt::join(per_channel, ",")));
  const std::string name = add_layer(n, L, {x.layer});
  set_tensor(name + ".weight", {slope.numel()}, slope.floats);
}

// torch's softplus threshold as its newer exporter writes it: Where(x > T, x, Softplus(x)). Above
// T = 15 the two branches agree within float rounding (softplus(x) - x < e^-15), so it is the softplus.
void Importer::greater(const onnx::NodeProto& n) {
  Value v = layer_input(n, 0);
  const Constant& t = constant_input(n, 1);
  if (std::isnan(t.scalar())) unsupported(n, "only a comparison with a scalar (torch's softplus threshold) is supported");
  v.kind = Value::Kind::Above;
  v.constant = t;
  set_output(n, std::move(v));
}

void Importer::where(const onnx::NodeProto& n) {
  const Value &above = input(n, 0), &x = layer_input(n, 1), &softplus = layer_input(n, 2);
  const int i = index_of_layer(softplus.layer);
  const float threshold = above.kind == Value::Kind::Above ? above.constant.scalar() : 0.f;
  if (above.kind != Value::Kind::Above || above.layer != x.layer || i < 0 || spec_.layers[i].type != LayerType::Softplus ||
      spec_.layers[i].inputs != std::vector<std::string>{x.layer} || !(threshold >= 15))
    unsupported(n, "only torch's softplus threshold, Where(x > T, x, Softplus(x)) with T at least 15, is supported");
  set_output(n, softplus);
}

// torch's GELU below opset 20, x * 0.5 * (1 + erf(x / sqrt 2)) written as Div(x, sqrt 2), Erf, Add 1,
// Mul by x, Mul by 0.5: each step's output is a GeluPart, read by the next step alone (any other
// reader refuses it), and the last one is the gelu layer. False when `n` starts no step and
// continues none.
bool Importer::gelu_step(const onnx::NodeProto& n) {
  const std::string& op = n.op_type();
  auto is_scalar = [&](int k, double want) {
    return k < n.input_size() && input(n, k).kind == Value::Kind::Constant && std::abs(input(n, k).constant.scalar() - want) <= 1e-6 * want;
  };
  const int part = input(n, 0).kind == Value::Kind::GeluPart ? 0 : n.input_size() > 1 && input(n, 1).kind == Value::Kind::GeluPart ? 1 : -1;
  if (part < 0) {
    if (op != "Div" || input(n, 0).kind != Value::Kind::Layer || !is_scalar(1, std::sqrt(2.0))) return false;
    Value v = input(n, 0);
    v.kind = Value::Kind::GeluPart, v.gelu_steps = 1;
    set_output(n, std::move(v));
    return true;
  }
  Value v = input(n, part);
  const int other = 1 - part, step = v.gelu_steps++;
  const bool next = (op == "Erf" && step == 1) || (op == "Add" && step == 2 && is_scalar(other, 1.0)) ||
                    (op == "Mul" && step == 3 && input(n, other).kind == Value::Kind::Layer && input(n, other).layer == v.layer) ||
                    (op == "Mul" && step == 4 && is_scalar(other, 0.5));
  if (!next) unsupported(n, "reads part of a GELU other than as torch writes it, x * (1 + erf(x / sqrt 2)) * 0.5");
  if (v.gelu_steps < 5) set_output(n, std::move(v));
  else add_layer(n, layer_of(LayerType::Gelu), {v.layer});
  return true;
}

void Importer::erf(const onnx::NodeProto& n) {
  if (!gelu_step(n)) unsupported(n, "only as part of a GELU, x * (1 + erf(x / sqrt 2)) * 0.5 as torch writes it, is supported");
}

// Clip to [0, 6] is ReLU6, to [0, inf) ReLU; bounds from Constant inputs (attributes before opset 11).
void Importer::clip(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  auto bound = [&](int k, float fallback) {
    if (!has_input(n, k)) return fallback;
    const float v = constant_input(n, k).scalar();
    if (std::isnan(v)) unsupported(n, "its bounds must be scalars");
    return v;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const float lo = bound(1, -inf), hi = bound(2, inf);
  if (lo == 0 && hi == 6) add_layer(n, layer_of(LayerType::ReLU6), {x.layer});
  else if (lo == 0 && hi == inf) add_layer(n, layer_of(LayerType::ReLU), {x.layer});
  else unsupported(n, fmt::format("clip to [{}, {}]; only [0, 6] (ReLU6) and [0, inf) (ReLU) are supported", lo, hi));
}

// Max and Min of a computed tensor and one constant: Max(x, 0) is a relu, and Min(r, 6) of a relu
// r that nothing else reads makes it a relu6 (ReLU6 as Relu and Min, as some exporters write it).
void Importer::min_max(const onnx::NodeProto& n) {
  if (n.input_size() != 2) unsupported(n, "only of a computed tensor and one constant is supported");
  const int at = input(n, 0).kind == Value::Kind::Constant ? 1 : 0;  // the computed side
  const Value& x = layer_input(n, at);
  const float v = constant_input(n, 1 - at).scalar();
  if (n.op_type() == "Max" && v == 0) {
    add_layer(n, layer_of(LayerType::ReLU), {x.layer});
    return;
  }
  const int r = x.layer.empty() ? -1 : index_of_layer(x.layer);
  if (n.op_type() == "Min" && v == 6 && r >= 0 && spec_.layers[r].type == LayerType::ReLU && readers(x.layer) == 1)
    return retype(n, r, LayerType::ReLU6, spec_.layers[r].inputs[0]);
  unsupported(n, "only Max(x, 0) (a relu) and Min(relu(x), 6) (a relu6) are supported");
}

void Importer::hardsigmoid(const onnx::NodeProto& n) {
  Layer L = layer_of(LayerType::HardSigmoid);
  L.alpha = attr_float(n, "alpha", 0.2f), L.beta = attr_float(n, "beta", 0.5f);  // ONNX's defaults
  add_layer(n, L, {layer_input(n, 0).layer});
}

}  // namespace shrink::onnx_import
