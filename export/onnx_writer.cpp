#include "export/onnx_writer.h"

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include <cstring>
#include <map>
#include <optional>

#include "common/error.h"
#include "common/file_io.h"
#include "export/onnx_graph.h"

namespace shrink {
namespace {

// A layer's output in the graph: its tensor's name, and for int8 graphs the grid it lies on
// (the output of a DequantizeLinear), if any.
struct Value {
  std::string tensor;
  std::optional<ActivationScale> grid;
};

class GraphWriter : OnnxGraph {
 public:
  GraphWriter(const ModelMeta& meta, const std::vector<ExportTensor>& tensors, const OnnxExportOptions& options, onnx::GraphProto& graph)
      : OnnxGraph(graph), meta_(meta), options_(options), spec_(parse_spec(meta.spec, meta.input, meta.classes)), info_(analyze(spec_)) {
    for (const ExportTensor& t : tensors) tensors_[t.name] = &t;
  }

  void write() {
    std::vector<Value> values(spec_.layers.size());
    Value input = model_input();
    for (size_t i = 0; i < spec_.layers.size(); ++i) {
      const Layer& L = spec_.layers[i];
      std::vector<Value> in;
      for (const std::string& name : L.inputs) in.push_back(name.empty() ? input : values[spec_.index_of(name)]);
      const bool last = i + 1 == spec_.layers.size();
      values[i] = on_grid(L, in, layer(L, in, last ? kOnnxOutput : L.name), last);
    }
    add_io(*g_.add_output(), kOnnxOutput, info_.back().out_shape);
    // Not the float output of an int8 layer inside its unit (before its clamp and QuantizeLinear):
    // a second reader there would stop ONNX Runtime from fusing the unit into an integer kernel.
    if (options_.expose_layers)
      for (size_t i = 0; i + 1 < spec_.layers.size(); ++i)
        if (values[i].grid || !runs_int8(spec_.layers[i]))
          add_io(*g_.add_output(), node("Identity", {values[i].tensor}, spec_.layers[i].name + ".exposed").output(0), info_[i].out_shape);
  }

 private:
  bool int8() const { return meta_.quantization.has_value(); }
  const ExportTensor& tensor(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw UserError(fmt::format("the model has no tensor {}", name));
    return *it->second;
  }

  // x onto `grid` and back: QuantizeLinear then DequantizeLinear, the pair ONNX Runtime's QDQ
  // fusions read. Always uint8: a signed grid's [-128, 127] is [0, 255] with zero point 128, the
  // same values and the same rounding (the zero point is added after it), and on x86 ONNX Runtime
  // fuses only uint8 activations (its int8-to-uint8 rewrite skips tensors read by several layers).
  std::string quantize_dequantize(const std::string& x, const ActivationScale& grid, const std::string& name) {
    std::string scale = floats(name + ".scale", {}, {static_cast<float>(grid.scale)});
    std::string zero = initializer(name + ".zero_point", onnx::TensorProto::UINT8, {}, std::vector<uint8_t>{grid.is_signed ? uint8_t{128} : uint8_t{0}});
    node("QuantizeLinear", {x, scale, zero}, name + ".quantized");
    return node("DequantizeLinear", {name + ".quantized", scale, zero}, name + ".dequantized").output(0);
  }

  // The raw input, normalized as the runtime does ((x - mean[c]) / std[c]), on the input's grid.
  Value model_input() {
    add_io(*g_.add_input(), kOnnxInput, meta_.input);
    std::string x = kOnnxInput;
    const Normalization& n = meta_.normalization;
    if (options_.normalization && !n.mean.empty()) {
      std::vector<int64_t> dims = meta_.input.size() == 3 ? std::vector<int64_t>{1, static_cast<int64_t>(n.mean.size()), 1, 1}
                                                          : std::vector<int64_t>{1, static_cast<int64_t>(n.mean.size())};
      node("Sub", {x, floats("input.mean", dims, n.mean)}, "input.centered");
      x = node("Div", {"input.centered", floats("input.std", dims, n.std)}, "input.normalized").output(0);
    }
    Value v{x, std::nullopt};
    if (int8())
      if (auto it = meta_.quantization->activations.find(kInputPoint); it != meta_.quantization->activations.end())
        v = {quantize_dequantize(x, it->second, kInputPoint), it->second};
    return v;
  }

  bool runs_int8(const Layer& L) const {
    const auto& layers = meta_.quantization->int8_layers;
    return int8() && std::find(layers.begin(), layers.end(), L.name) != layers.end();
  }

  // Weight and bias of a conv or linear: float initializers, or for an int8 layer the int8
  // weights (per output channel, axis 0) and the int32 bias on the accumulator's grid, each
  // behind a DequantizeLinear.
  std::vector<std::string> parameters(const Layer& L, const Value& x) {
    const ExportTensor& w = tensor(weight_key(L.name));
    std::vector<std::string> out;
    if (!runs_int8(L)) {
      initializer(weight_key(L.name), onnx::TensorProto::FLOAT, w.dims, w.bytes.data(), w.bytes.size());
      out.push_back(weight_key(L.name));
      if (L.bias) out.push_back(initializer_of_f32(bias_key(L.name)));
      return out;
    }
    if (!x.grid) throw std::logic_error(fmt::format("int8 layer {} reads a tensor on no int8 grid", L.name));
    const int64_t channels = w.dims[0];
    const std::vector<float> ws = f32_values(weight_scale_key(L.name));
    initializer(L.name + ".weight_quantized", onnx::TensorProto::INT8, w.dims, w.bytes.data(), w.bytes.size());
    floats(L.name + ".weight_scale", {channels}, ws);
    initializer(L.name + ".weight_zero_point", onnx::TensorProto::INT8, {channels}, std::vector<int8_t>(channels, 0));
    attr(node("DequantizeLinear", {L.name + ".weight_quantized", L.name + ".weight_scale", L.name + ".weight_zero_point"}, weight_key(L.name)), "axis",
         int64_t{0});
    out.push_back(weight_key(L.name));
    if (L.bias) {
      const std::vector<float> b = f32_values(bias_key(L.name));
      const float s_in = static_cast<float>(x.grid->scale);
      std::vector<int32_t> q(channels);
      std::vector<float> step(channels);
      for (int64_t c = 0; c < channels; ++c) {
        q[c] = static_cast<int32_t>(accumulator_bias(b[c], s_in, ws[c]));
        step[c] = s_in * ws[c];
      }
      initializer(L.name + ".bias_quantized", onnx::TensorProto::INT32, {channels}, q);
      floats(L.name + ".bias_scale", {channels}, step);
      initializer(L.name + ".bias_zero_point", onnx::TensorProto::INT32, {channels}, std::vector<int32_t>(channels, 0));
      attr(node("DequantizeLinear", {L.name + ".bias_quantized", L.name + ".bias_scale", L.name + ".bias_zero_point"}, bias_key(L.name)), "axis",
           int64_t{0});
      out.push_back(bias_key(L.name));
    }
    return out;
  }
  std::vector<float> f32_values(const std::string& name) const {
    const ExportTensor& t = tensor(name);
    std::vector<float> v(t.bytes.size() / 4);
    std::memcpy(v.data(), t.bytes.data(), v.size() * 4);
    return v;
  }
  std::string initializer_of_f32(const std::string& name) {
    const ExportTensor& t = tensor(name);
    initializer(name, onnx::TensorProto::FLOAT, t.dims, t.bytes.data(), t.bytes.size());
    return name;
  }

  // A pool without ceil mode: the windows a ceil-mode pool adds are padding at the end instead.
  // ONNX's shape inference (onnx 1.12, which ONNX Runtime 1.30 runs while loading) keeps a last
  // window that starts in the padding, which torch, ONNX Runtime's kernels and shrink drop: the
  // file would declare one shape and compute another. Padded explicitly, every reader counts the
  // same windows, and they hold the same values: a max ignores padding, and an average past the
  // padding excludes it (the spec refuses include_pad=1 there).
  onnx::NodeProto& pool(const char* op, const Layer& L, const LayerInfo& info, const std::string& x, const std::string& out) {
    const Layer::Window w = L.window();  // a pool pads top and bottom alike, left and right alike
    auto end_pad = [&](int d) { return std::max(w.padding[d], (info.out_shape[1 + d] - 1) * w.stride[d] + w.kernel[d] - info.in_shape[1 + d] - w.padding[d]); };
    auto& n = node(op, {x}, out);
    attr(n, "kernel_shape", std::vector<int64_t>(w.kernel.begin(), w.kernel.end()));
    attr(n, "strides", std::vector<int64_t>(w.stride.begin(), w.stride.end()));
    attr(n, "pads", std::vector<int64_t>{w.padding[0], w.padding[1], end_pad(0), end_pad(1)});
    return n;
  }

  // The nodes of layer L reading `in`, ending in a tensor named `out`.
  std::string layer(const Layer& L, const std::vector<Value>& in, const std::string& out) {
    const std::string& x = in[0].tensor;
    const LayerInfo& info = info_[spec_.index_of(L.name)];
    const Pads p = L.pads();
    auto window = [&](onnx::NodeProto& n) -> onnx::NodeProto& {
      attr(n, "kernel_shape", std::vector<int64_t>{L.kernel, L.kernel_width()});
      attr(n, "strides", std::vector<int64_t>{L.stride, L.stride_width()});
      attr(n, "pads", std::vector<int64_t>{p.top, p.left, p.bottom, p.right});
      return n;
    };
    switch (L.type) {
      case LayerType::Conv2d: {
        std::vector<std::string> inputs{x};
        for (auto& t : parameters(L, in[0])) inputs.push_back(t);
        auto& n = window(node("Conv", inputs, out));
        attr(n, "dilations", std::vector<int64_t>{L.dilation, L.dilation});
        attr(n, "group", L.depthwise ? info.in_shape[0] : L.groups);
        return out;
      }
      case LayerType::Linear: {
        Value flat = in[0];
        if (info.in_shape.size() > 1) flat = on_grid_as(in[0], node("Flatten", {x}, L.name + ".flattened").output(0), L.name + ".flattened");
        std::vector<std::string> inputs{flat.tensor};
        for (auto& t : parameters(L, flat)) inputs.push_back(t);
        auto& n = node("Gemm", inputs, out);
        attr(n, "transB", int64_t{1});
        attr(n, "alpha", 1.f);
        attr(n, "beta", 1.f);  // ONNX Runtime's QGemm fusion reads beta and needs it to be 1
        return out;
      }
      case LayerType::BatchNorm: {  // one that no conv or linear folds: a scale and a shift per channel
        // As a BatchNormalization of mean 0, variance 1 and an epsilon too small to change it in
        // float: exactly x * scale + shift, and it imports back as a batchnorm.
        const int64_t c = info.in_shape[0];
        auto& n = node("BatchNormalization", {x, initializer_of_f32(weight_key(L.name)), initializer_of_f32(bias_key(L.name)),
                                              floats(L.name + ".mean", {c}, std::vector<float>(c, 0.f)), floats(L.name + ".var", {c}, std::vector<float>(c, 1.f))},
                       out);
        attr(n, "epsilon", 1e-9f);
        return out;
      }
      case LayerType::PReLU: {  // the slopes shaped to broadcast along channels: [C,1,1] on an image, [C] on features
        std::vector<float> slope = f32_values(weight_key(L.name));
        std::vector<int64_t> dims{static_cast<int64_t>(slope.size())};
        if (info.in_shape.size() == 3 && L.per_channel) dims.insert(dims.end(), {1, 1});
        return node("PRelu", {x, floats(L.name + ".slope", dims, slope)}, out).output(0);
      }
      case LayerType::ReLU: return node("Relu", {x}, out).output(0);
      case LayerType::ReLU6:
        return node("Clip", {x, floats(L.name + ".min", {}, {0.f}), floats(L.name + ".max", {}, {6.f})}, out).output(0);
      case LayerType::HardSwish:
        if (options_.opset >= 14) return node("HardSwish", {x}, out).output(0);
        hardsigmoid(x, 1.f / 6, 0.5f, L.name + ".gate");  // below opset 14: x * hardsigmoid(x), as torch exports it
        return node("Mul", {x, L.name + ".gate"}, out).output(0);
      case LayerType::Sigmoid: return node("Sigmoid", {x}, out).output(0);
      case LayerType::LeakyReLU:
        attr(node("LeakyRelu", {x}, out), "alpha", static_cast<float>(L.alpha));
        return out;
      case LayerType::Tanh: return node("Tanh", {x}, out).output(0);
      case LayerType::Elu:
        attr(node("Elu", {x}, out), "alpha", static_cast<float>(L.alpha));
        return out;
      case LayerType::Softplus: return node("Softplus", {x}, out).output(0);
      case LayerType::Mish: {  // opset 18 has Mish; below it x * tanh(softplus(x)), as torch writes it
        node("Softplus", {x}, L.name + ".softplus");
        node("Tanh", {L.name + ".softplus"}, L.name + ".tanh");
        return node("Mul", {x, L.name + ".tanh"}, out).output(0);
      }
      case LayerType::Gelu: {  // opset 20 has Gelu; below it x * (1 + erf(x / sqrt 2)) * 0.5, as torch writes it
        if (options_.opset >= 20) return node("Gelu", {x}, out).output(0);
        node("Div", {x, floats(L.name + ".sqrt2", {}, {static_cast<float>(std::sqrt(2.0))})}, L.name + ".scaled");
        node("Erf", {L.name + ".scaled"}, L.name + ".erf");
        node("Add", {L.name + ".erf", floats(L.name + ".one", {}, {1.f})}, L.name + ".erf1");
        node("Mul", {x, L.name + ".erf1"}, L.name + ".twice");
        return node("Mul", {L.name + ".twice", floats(L.name + ".half", {}, {0.5f})}, out).output(0);
      }
      case LayerType::HardSigmoid: return hardsigmoid(x, static_cast<float>(L.alpha), static_cast<float>(L.beta), out);
      case LayerType::MaxPool: return pool("MaxPool", L, info, x, out).output(0);
      case LayerType::AvgPool: {
        auto& n = pool("AveragePool", L, info, x, out);
        attr(n, "count_include_pad", int64_t{L.include_pad});
        return out;
      }
      case LayerType::GlobalAvgPool:
      case LayerType::GlobalMaxPool: {
        const char* op = L.type == LayerType::GlobalAvgPool ? "GlobalAveragePool" : "GlobalMaxPool";
        if (L.keep_dims) return node(op, {x}, out).output(0);
        // Onto the grid before flattening, so ONNX Runtime fuses the quantized pool.
        Value pooled = on_grid_as(in[0], node(op, {x}, L.name + ".pooled").output(0), L.name + ".pooled");
        return flatten(pooled.tensor, out);
      }
      case LayerType::Flatten: return flatten(x, out);
      case LayerType::Unflatten: return node("Reshape", {x, int64s(L.name + ".shape", {0, info.out_shape[0], 1, 1})}, out).output(0);
      case LayerType::Dropout: return node("Identity", {x}, out).output(0);
      case LayerType::Add: return node("Add", {x, in[1].tensor}, out).output(0);
      case LayerType::Mul: return node("Mul", {x, in[1].tensor}, out).output(0);
      case LayerType::Concat: {
        std::vector<std::string> inputs;
        for (const Value& v : in) inputs.push_back(v.tensor);
        attr(node("Concat", inputs, out), "axis", int64_t{1});
        return out;
      }
      case LayerType::Shuffle: return shuffle(L, info, in[0], out);
      case LayerType::Slice:
        return node("Slice", {x, int64s(L.name + ".starts", {L.start}), int64s(L.name + ".ends", {L.end}), int64s(L.name + ".axes", {1})}, out).output(0);
    }
    throw std::logic_error("unknown layer kind");
  }
  // A channel shuffle as torch exports one: Reshape to N, g, C/g, H, W, swap the two channel axes,
  // Reshape back (0: the batch, copied). Each step stays on the input's grid, so ONNX Runtime can
  // move int8 values through all three.
  std::string shuffle(const Layer& L, const LayerInfo& info, const Value& x, const std::string& out) {
    const int64_t c = info.in_shape[0], h = info.in_shape[1], w = info.in_shape[2];
    const std::string grouped = L.name + ".grouped", swapped = L.name + ".swapped";
    node("Reshape", {x.tensor, int64s(L.name + ".grouped_shape", {0, L.groups, c / L.groups, h, w})}, grouped);
    auto& t = node("Transpose", {on_grid_as(x, grouped, grouped).tensor}, swapped);
    attr(t, "perm", std::vector<int64_t>{0, 2, 1, 3, 4});
    return node("Reshape", {on_grid_as(x, swapped, swapped).tensor, int64s(L.name + ".shape", {0, c, h, w})}, out).output(0);
  }
  std::string hardsigmoid(const std::string& x, float alpha, float beta, const std::string& out) {
    auto& n = node("HardSigmoid", {x}, out);
    attr(n, "alpha", alpha);
    attr(n, "beta", beta);
    return out;
  }
  std::string flatten(const std::string& x, const std::string& out) {
    attr(node("Flatten", {x}, out), "axis", int64_t{1});
    return out;
  }

  // A value computed from `from` that lies on from's grid (flattened, pooled): put back on it.
  Value on_grid_as(const Value& from, const std::string& tensor, const std::string& name) {
    if (!from.grid) return {tensor, std::nullopt};
    return {quantize_dequantize(tensor, *from.grid, name), from.grid};
  }

  // Layer L's output on its int8 grid: its own activation point's, or (layers that pick, move or
  // average values: docs/quantization.md) its input's. The logits stay float.
  Value on_grid(const Layer& L, const std::vector<Value>& in, const std::string& tensor, bool last) {
    if (!int8() || last) return {tensor, std::nullopt};
    const auto& points = meta_.quantization->activations;
    if (auto it = points.find(L.name); it != points.end()) return {quantize_dequantize(tensor, it->second, L.name), it->second};
    switch (L.type) {
      case LayerType::ReLU:
      case LayerType::ReLU6:
      case LayerType::MaxPool:
      case LayerType::AvgPool:
      case LayerType::GlobalAvgPool:
      case LayerType::GlobalMaxPool:
      case LayerType::Flatten:
      case LayerType::Unflatten:
      case LayerType::Dropout:
      case LayerType::Shuffle:
      case LayerType::Slice: return on_grid_as(in[0], tensor, L.name);
      case LayerType::Conv2d:
      case LayerType::Linear:
      case LayerType::BatchNorm:
      case LayerType::HardSwish:
      case LayerType::LeakyReLU:
      case LayerType::Tanh:
      case LayerType::Elu:
      case LayerType::Softplus:
      case LayerType::Mish:
      case LayerType::Gelu:
      case LayerType::PReLU:
      case LayerType::Sigmoid:
      case LayerType::HardSigmoid:
      case LayerType::Add:
      case LayerType::Mul:
      case LayerType::Concat: break;
    }
    return {tensor, std::nullopt};
  }

  const ModelMeta& meta_;
  const OnnxExportOptions& options_;
  ModelSpec spec_;
  std::vector<LayerInfo> info_;
  std::map<std::string, const ExportTensor*> tensors_;
};

void metadata(onnx::ModelProto& model, const std::string& key, const std::string& value) {
  auto* p = model.add_metadata_props();
  p->set_key(key);
  p->set_value(value);
}

}  // namespace

std::string encode_onnx_model(const ModelMeta& meta, const std::vector<ExportTensor>& tensors, const OnnxExportOptions& options) {
  if (options.opset < 11 || options.opset > 17) throw UserError(fmt::format("--opset {}: ONNX export writes opsets 11 to 17", options.opset));
  if (meta.quantization && options.opset < 13)
    throw UserError(fmt::format("--opset {}: an int8 model needs opset 13 or later (per-channel DequantizeLinear)", options.opset));
  onnx::ModelProto model;
  model.set_ir_version(options.opset <= 13 ? 7 : 8);  // the IR version of the ONNX releases that brought these opsets
  model.set_producer_name("shrink");
  model.add_opset_import()->set_version(options.opset);
  onnx::GraphProto& graph = *model.mutable_graph();
  graph.set_name("shrink");
  GraphWriter(meta, tensors, options, graph).write();
  // What ONNX has no field for: the class names, the normalization (and whether the graph applies
  // it), the model's spec and where the weights came from.
  nlohmann::json m = meta.to_json();
  metadata(model, "shrink.class_names", nlohmann::json(meta.class_names).dump());
  metadata(model, "shrink.normalization",
           nlohmann::json{{"mean", meta.normalization.mean}, {"std", meta.normalization.std}, {"in_graph", options.normalization}}.dump());
  metadata(model, "shrink.spec", meta.spec);
  metadata(model, "shrink.precision", meta.precision);
  if (m.contains("provenance")) metadata(model, "shrink.provenance", m["provenance"].dump());
  if (meta.quantization) metadata(model, "shrink.quantization_scheme", meta.quantization->scheme);
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw UserError("the ONNX model could not be serialized (over protobuf's 2 GB limit?)");
  return bytes;
}

void write_onnx_model(const std::string& path, const ModelMeta& meta, const std::vector<ExportTensor>& tensors, const OnnxExportOptions& options) {
  write_file_atomic(path, encode_onnx_model(meta, tensors, options));
}

}  // namespace shrink
