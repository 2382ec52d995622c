// The graph walk: inputs and initializers become values, each node in order is read by its op's
// handler (onnx/ops.cpp), and the graph's output ends the spec.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "common/error.h"
#include "onnx/importer.h"

namespace shrink {
namespace onnx_import {

namespace {

// Whether the graph reads its input channels last (N,H,W,C, as tf2onnx writes Keras models): the
// input reaches a Transpose(0,3,1,2), read once at each step, through any Add, Sub, Mul or Div by a
// constant (Keras' Rescaling) before it.
bool reads_channels_last(const onnx::GraphProto& g, std::string tensor) {
  std::set<std::string> constants;
  for (const auto& t : g.initializer()) constants.insert(t.name());
  for (const auto& n : g.node())
    if (n.op_type() == "Constant") constants.insert(n.output().begin(), n.output().end());
  for (int step = 0; step < 8; ++step) {
    const onnx::NodeProto* reader = nullptr;
    int count = 0;
    for (const auto& n : g.node())
      for (const auto& name : n.input())
        if (name == tensor) reader = &n, ++count;
    if (count != 1 || reader->output_size() < 1) return false;
    const std::string& op = reader->op_type();
    if (op == "Transpose") return attr_ints(*reader, "perm") == std::vector<int64_t>{0, 3, 1, 2};
    const bool scales = op == "Add" || op == "Sub" || op == "Mul" || op == "Div";
    if (!scales || reader->input_size() != 2 || !constants.count(reader->input(reader->input(0) == tensor ? 1 : 0))) return false;
    tensor = reader->output(0);
  }
  return false;
}

// The per-sample shape of the graph's input (C,H,W: a channels-last file's H,W,C reordered), from
// the file, `given`, or both (they must agree).
std::vector<int64_t> input_shape(const onnx::ValueInfoProto& in, const std::vector<int64_t>& given, bool channels_last, const std::string& path) {
  const auto& type = in.type().tensor_type();
  if (type.elem_type() != onnx::TensorProto_DataType_FLOAT)
    throw UserError(fmt::format("{}: input '{}' is not float32 (import reads fp32 models)", path, in.name()));
  std::vector<int64_t> shape;
  bool known = type.has_shape() && type.shape().dim_size() >= 2;
  if (known)
    for (int k = 1; k < type.shape().dim_size(); ++k) {
      const auto& d = type.shape().dim(k);
      if (!d.has_dim_value() || d.dim_value() <= 0) known = false;
      else shape.push_back(d.dim_value());
    }
  if (!known && given.empty())
    throw UserError(fmt::format("{}: input '{}' has no fixed per-sample shape: give it with --input C,H,W", path, in.name()));
  if (known && channels_last) shape = {shape[2], shape[0], shape[1]};
  if (!given.empty() && known && given != shape)
    throw UserError(fmt::format("{}: --input {} but the file's input '{}' is {}", path, shape_string(given), in.name(), shape_string(shape)));
  return given.empty() ? shape : given;
}

}  // namespace

Importer::Importer(const onnx::ModelProto& model, const std::string& path, const std::vector<int64_t>& input) : model_(model), path_(path) {
  for (const auto& o : model.opset_import())
    if (o.domain().empty() || o.domain() == "ai.onnx") opset_ = o.version();
  // Opsets 18 to 23 changed, for the ops read here, where some arguments live (Reduce* axes and
  // Pad axes as inputs, Split's num_outputs, AveragePool's dilations) and added tensor types.
  if (opset_ < 11 || opset_ > 23)
    throw UserError(fmt::format("{}: opset {} is not supported (import reads opsets 11 to 23; re-export the model with one of them)", path, opset_));
  out_.opset = opset_;
  out_.producer = model.producer_name().empty()      ? "unknown producer"
                  : model.producer_version().empty() ? model.producer_name()
                                                     : model.producer_name() + " " + model.producer_version();
  for (const auto& prop : model.metadata_props())  // a model shrink exported names its classes
    if (prop.key() == "shrink.class_names") {
      auto names = nlohmann::json::parse(prop.value(), nullptr, false);
      if (names.is_array() && std::all_of(names.begin(), names.end(), [](const auto& v) { return v.is_string(); }))
        out_.class_names = names.get<std::vector<std::string>>();
    }
  const auto& g = model.graph();
  for (const auto& n : g.node())  // before the initializers, whose int8 types would be the first complaint
    if (n.op_type() == "QuantizeLinear" || n.op_type() == "DequantizeLinear" || n.op_type() == "QLinearConv" || n.op_type() == "QLinearMatMul")
      unsupported(n, "a quantized (QDQ) model; import reads fp32 models (import the fp32 model, then shrink quantize it)");
  for (const auto& t : g.initializer()) {
    Value v;
    v.kind = Value::Kind::Constant;
    v.constant = decode_tensor(t, fmt::format("{}: initializer '{}'", path, t.name()), path);
    values_[t.name()] = std::move(v);
  }
  std::vector<const onnx::ValueInfoProto*> inputs;
  for (const auto& in : g.input())
    if (!values_.count(in.name())) inputs.push_back(&in);  // older exporters list initializers as inputs too
  if (inputs.empty() && g.input_size() > 0)
    throw UserError(fmt::format("{}: the model's inputs are all initializers too (constants with a default); import reads models with one image or feature input", path));
  if (inputs.size() != 1) throw UserError(fmt::format("{}: the model has {} inputs; import reads models with one image or feature input", path, inputs.size()));
  Value in;
  const auto& file_input = inputs[0]->type().tensor_type();
  out_.input_channels_last = file_input.has_shape() && file_input.shape().dim_size() == 4 && reads_channels_last(g, inputs[0]->name());
  if (out_.input_channels_last) in.kind = Value::Kind::ChannelsLast;
  in.shape = input_shape(*inputs[0], input, out_.input_channels_last, path);
  if (const auto& t = inputs[0]->type().tensor_type(); t.has_shape() && t.shape().dim_size() > 0 && t.shape().dim(0).has_dim_value())
    file_batch_ = t.shape().dim(0).dim_value();
  values_[inputs[0]->name()] = in;
  spec_.input = in.shape;
  if (g.output_size() != 1) throw UserError(fmt::format("{}: the model has {} outputs; import reads models with one output (the logits)", path, g.output_size()));
  for (const auto& n : g.node())
    for (const auto& name : n.input()) ++uses_[name];
  ++uses_[g.output(0).name()];
}

ImportedModel Importer::run() {
  for (const auto& n : model_.graph().node()) {
    if (!n.domain().empty() && n.domain() != "ai.onnx") {
      const auto& fs = model_.functions();
      if (std::any_of(fs.begin(), fs.end(), [&](const auto& f) { return f.name() == n.op_type() && f.domain() == n.domain(); }))
        unsupported(n, fmt::format("calls the model's own function {}::{} (torch.onnx.export(dynamo=True) leaves functions without its optimize "
                                   "step); import reads standard operators: export with optimize=True",
                                   n.domain(), n.op_type()));
      unsupported(n, fmt::format("operators of domain '{}' are not supported", n.domain()));
    }
    auto h = handlers().find(n.op_type());
    if (h == handlers().end()) unsupported(n, "this operator is not supported");
    try {
      (this->*(h->second))(n);
    } catch (const BadAttribute& e) {
      unsupported(n, e.what());
    }
  }
  finish_output();
  return std::move(out_);
}

void Importer::unsupported(const onnx::NodeProto& n, const std::string& what) const {
  throw UserError(fmt::format("{}: node '{}' ({}): {}; supported ops: {}", path_, n.name(), n.op_type(), what, fmt::join(supported_onnx_ops(), " ")));
}

bool Importer::has_input(const onnx::NodeProto& n, int k) const { return k < n.input_size() && !n.input(k).empty(); }

const Value& Importer::input(const onnx::NodeProto& n, int k) const {
  if (!has_input(n, k)) unsupported(n, fmt::format("input {} is missing", k));
  auto it = values_.find(n.input(k));
  if (it == values_.end()) unsupported(n, fmt::format("input '{}' is not produced by an earlier node (graph not in order?)", n.input(k)));
  return it->second;
}

const Value& Importer::layer_input(const onnx::NodeProto& n, int k) const {
  const Value& v = input(n, k);
  if (v.kind == Value::Kind::Padded) unsupported(n, "reads the output of a Pad; only a zero Pad right before a Conv or AveragePool is supported");
  if (v.kind == Value::Kind::Grouped)
    unsupported(n, "reads a channel shuffle's intermediate tensor; only Reshape to [batch, g, C/g, H, W], Transpose(perm 0,2,1,3,4), Reshape back is supported");
  if (v.kind == Value::Kind::Expanded) unsupported(n, "reads an Expand's output; only a Mul (broadcasting a C,1,1 tensor over C,H,W) may read one");
  if (v.kind == Value::Kind::ChannelsLast || v.kind == Value::Kind::FlatChannelsLast)
    unsupported(n, "reads a channels-last (N,H,W,C) tensor; only a Transpose back to N,C,H,W, a Flatten or Reshape of it into a Gemm or MatMul, "
                   "a ReduceMean or ReduceMax over H,W, or the input's normalization may read one");
  if (v.kind != Value::Kind::Layer) unsupported(n, fmt::format("input '{}' is a constant where a computed tensor was expected", n.input(k)));
  return v;
}

const Value& Importer::padded_input(const onnx::NodeProto& n, int k) const {
  const Value& v = input(n, k);
  return v.kind == Value::Kind::Padded ? v : layer_input(n, k);
}

const Constant& Importer::constant_input(const onnx::NodeProto& n, int k) const {
  const Value& v = input(n, k);
  if (v.kind != Value::Kind::Constant) unsupported(n, fmt::format("input '{}' must be a constant (an initializer or a Constant node)", n.input(k)));
  return v.constant;
}

int Importer::uses(const std::string& tensor) const {
  auto it = uses_.find(tensor);
  return it == uses_.end() ? 0 : it->second;
}

int Importer::readers(const std::string& layer) const {
  int total = 0, names = 0;
  for (const auto& [name, v] : values_)
    if (v.kind == Value::Kind::Layer && v.layer == layer) total += uses(name), ++names;
  return total - (names - 1);
}

void Importer::only_first_output_used(const onnx::NodeProto& n) const {
  for (int k = 1; k < n.output_size(); ++k)
    if (!n.output(k).empty() && uses(n.output(k)) > 0) unsupported(n, fmt::format("its output {} ('{}') is used; only the first output is supported", k, n.output(k)));
}

void Importer::set_output(const onnx::NodeProto& n, Value v) {
  if (n.output_size() < 1) unsupported(n, "it has no output");
  values_[n.output(0)] = std::move(v);
}

std::string Importer::add_layer(const onnx::NodeProto& n, Layer L, const std::vector<std::string>& inputs, int output) {
  std::string op = L.depthwise ? "dwconv" : layer_type_name(L.type);
  L.name = op + std::to_string(++counters_[op]);
  L.inputs = inputs;
  spec_.layers.push_back(L);
  LayerInfo info;
  try {
    info = analyze(spec_).back();
  } catch (const UserError& e) {
    unsupported(n, e.what());
  }
  Value v;
  v.layer = L.name;
  v.shape = info.out_shape;
  if (output == 0) set_output(n, std::move(v));
  else values_[n.output(output)] = std::move(v);
  return L.name;
}

// Layer i, read by nothing else, made a layer of kind `type` reading `input` (a pattern the node ends:
// hardsigmoid times its input is a hardswish), named afresh; the node's output is it.
void Importer::retype(const onnx::NodeProto& n, int i, LayerType type, const std::string& input) {
  Layer& L = spec_.layers[i];
  const std::string old_op = layer_type_name(L.type), op = layer_type_name(type);
  if (L.name == old_op + std::to_string(counters_[old_op])) --counters_[old_op];  // its number is free again
  L.type = type;
  L.inputs = {input};
  L.name = op + std::to_string(++counters_[op]);
  Value v;
  v.layer = L.name;
  v.shape = analyze(spec_)[i].out_shape;  // its input's: these kinds keep the shape
  values_[n.output(0)] = std::move(v);
}

void Importer::set_tensor(const std::string& key, std::vector<int64_t> shape, std::vector<float> values) {
  out_.tensors[key] = ImportedTensor{std::move(shape), std::move(values)};
}

// The graph's output must be a layer's; a C,1,1 output is flattened; layers it does not read
// (dead branches) are dropped.
void Importer::finish_output() {
  const std::string& name = model_.graph().output(0).name();
  auto it = values_.find(name);
  if (it == values_.end() || it->second.kind != Value::Kind::Layer || it->second.layer.empty())
    throw UserError(fmt::format("{}: the output '{}' is not computed by a supported layer", path_, name));
  Value out = it->second;
  if (out.shape.size() == 3 && out.shape[1] == 1 && out.shape[2] == 1) {
    Layer f;
    f.type = LayerType::Flatten;
    f.name = "flatten" + std::to_string(++counters_["flatten"]);
    f.inputs = {out.layer};
    spec_.layers.push_back(f);
    out.layer = f.name;
    out.shape = {out.shape[0]};
  }
  if (out.shape.size() != 1) throw UserError(fmt::format("{}: the output has shape {} per sample; shrink needs [batch, classes]", path_, shape_string(out.shape)));
  std::set<std::string> needed{out.layer};
  std::vector<Layer> kept;
  for (auto L = spec_.layers.rbegin(); L != spec_.layers.rend(); ++L) {
    if (!needed.count(L->name)) continue;
    kept.insert(kept.begin(), *L);
    needed.insert(L->inputs.begin(), L->inputs.end());
  }
  for (auto t = out_.tensors.begin(); t != out_.tensors.end();) {
    const std::string layer = t->first.substr(0, t->first.find('.'));
    t = std::any_of(kept.begin(), kept.end(), [&](const Layer& L) { return L.name == layer; }) ? std::next(t) : out_.tensors.erase(t);
  }
  spec_.layers = kept;
  spec_.classes = out.shape[0];
  try {  // the canonical form, checked once more: a value ONNX allows may be outside shrink's ranges
    spec_ = parse_spec(spec_.to_string(), spec_.input, spec_.classes);
  } catch (const UserError& e) {
    throw UserError(fmt::format("{}: {}", path_, e.what()));
  }
}

}  // namespace onnx_import

ImportedModel import_onnx(const std::string& path, const std::vector<int64_t>& input) {
  std::ifstream f(path, std::ios::binary);
  if (!std::filesystem::is_regular_file(path) || !f) throw UserError(fmt::format("{}: cannot open (not a file?)", path));
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes) || !model.has_graph())
    throw UserError(fmt::format("{}: not an ONNX model (the file does not parse as one: truncated or another format?)", path));
  return onnx_import::Importer(model, path, input).run();
}

std::vector<std::string> supported_onnx_ops() {
  std::vector<std::string> ops;
  for (const auto& [op, handler] : onnx_import::Importer::handlers()) ops.push_back(op);
  return ops;
}

bool looks_like_onnx(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return ext == ".onnx";
}

}  // namespace shrink
