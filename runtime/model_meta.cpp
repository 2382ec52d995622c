#include "runtime/model_meta.h"

#include <fmt/format.h>

#include <cmath>
#include <unordered_map>

#include "runtime/format.h"

namespace shrink {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& what) { throw ModelMetaError(what); }

const json& field(const json& meta, const char* key) {
  auto it = meta.find(key);
  if (it == meta.end()) fail(std::string("metadata is incomplete: no \"") + key + "\"");
  return *it;
}

// "input": [C,H,W] or [features], each dimension and their product within the runtime's caps.
std::vector<int64_t> read_input(const json& input) {
  if (!input.is_array() || (input.size() != 1 && input.size() != 3)) fail("metadata: \"input\" must be [C,H,W] or [features]");
  std::vector<int64_t> shape;
  uint64_t elements = 1;
  for (const auto& d : input) {
    if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > (int64_t(1) << 24)) fail("metadata: \"input\" has a bad dimension " + d.dump());
    shape.push_back(d.get<int64_t>());
    elements *= static_cast<uint64_t>(shape.back());
    if (elements > format::kMaxInputElements)
      fail("metadata: the input has more than " + std::to_string(format::kMaxInputElements) + " values per example (the runtime's limit)");
  }
  return shape;
}

// The spec parsed for the input and classes, within the caps on image sides and activations.
DescribedModel describe(const std::string& text, const std::vector<int64_t>& shape, int64_t classes) {
  DescribedModel d;
  try {
    d.spec = parse_spec(text, shape, classes);
    d.layers = analyze(d.spec);
  } catch (const std::exception& e) {  // the spec parser's UserError
    fail(std::string("model spec: ") + e.what());
  }
  const auto& layers = d.spec.layers;
  if (layers.empty()) fail("model spec has no layers");
  double act = 1;
  for (int64_t v : shape) act *= static_cast<double>(v);
  for (size_t i = 0; i < layers.size(); ++i) {
    double numel = 1;
    for (int64_t v : d.layers[i].out_shape) numel *= static_cast<double>(v);
    act += numel;
  }
  // oneDNN's kernels for very wide or tall images allocate far more than their activations.
  for (size_t i = 0; i <= layers.size(); ++i) {
    const auto& s = i < layers.size() ? d.layers[i].out_shape : shape;
    if (s.size() == 3 && (s[1] > format::kMaxImageSide || s[2] > format::kMaxImageSide))
      fail(fmt::format("{} is {}x{} pixels high or wide, more than the runtime's limit of {}", i < layers.size() ? "layer " + layers[i].name : "the input", s[1],
                       s[2], format::kMaxImageSide));
  }
  if (act * 4 > static_cast<double>(format::kMaxActivationBytesPerExample))
    fail(fmt::format("the model's activations need {:.0f} MiB per example, more than the runtime's limit of {} MiB", act * 4 / (1 << 20),
                     format::kMaxActivationBytesPerExample >> 20));
  d.activation_bytes = static_cast<uint64_t>(act * 4);
  return d;
}

// Normalization: both lists empty, or one mean and std per input channel (feature vectors: one
// for all features or one per feature); finite, std nonzero.
Normalization read_normalization(const json& meta, const std::vector<int64_t>& shape) {
  Normalization n;
  auto norm = meta.find("normalization");
  if (norm == meta.end() || norm->is_null()) return n;
  if (!norm->is_object()) fail("metadata: \"normalization\" is not an object");
  auto numbers = [&](const char* key) {
    std::vector<float> v;
    auto f = norm->find(key);
    if (f == norm->end() || f->is_null()) return v;
    if (!f->is_array()) fail(std::string("metadata: normalization \"") + key + "\" is not a list");
    for (const auto& x : *f) {
      if (!x.is_number() || !std::isfinite(x.get<double>()) || std::fabs(x.get<double>()) > 1e30)
        fail(std::string("metadata: normalization \"") + key + "\" has a value that is not a finite number");
      v.push_back(x.get<float>());
    }
    return v;
  };
  n.mean = numbers("mean");
  n.std = numbers("std");
  int64_t channels = shape.size() == 3 ? shape[0] : 1;
  bool fits = n.mean.size() == n.std.size() &&
              (n.mean.empty() || static_cast<int64_t>(n.mean.size()) == channels || (shape.size() == 1 && static_cast<int64_t>(n.mean.size()) == shape[0]));
  if (!fits) fail("normalization does not match the input channels");
  for (float s : n.std)
    if (s == 0 || !std::isfinite(s)) fail("normalization: a std is zero");
  return n;
}

// An int8 model's activation scales (each point the input or a layer) and int8 layers (each a
// layer that runs in int8).
Quantization read_quantization(const json& meta, const ModelSpec& spec) {
  auto q = meta.find("quantization");
  if (q == meta.end() || !q->is_object()) fail("metadata is incomplete: an int8 model needs \"quantization\"");
  auto acts = q->find("activations");
  auto layers = q->find("int8_layers");
  if (acts == q->end() || !acts->is_object()) fail("metadata: quantization \"activations\" is missing or not an object");
  if (layers == q->end() || !layers->is_array()) fail("metadata: quantization \"int8_layers\" is missing or not a list");
  Quantization out;
  std::unordered_map<std::string, int> index;  // spec.index_of per name would be quadratic in a deep model
  for (size_t i = 0; i < spec.layers.size(); ++i) index[spec.layers[i].name] = static_cast<int>(i);
  for (const auto& [name, v] : acts->items()) {
    if (name != kInputPoint && !index.count(name)) fail("activation scale for " + name + ", which is not a layer of the model");
    if (!v.is_object() || !v.contains("scale") || !v.contains("signed") || !v.at("signed").is_boolean() || !v.at("scale").is_number())
      fail("activation scale of " + name + " must be {\"scale\": number, \"signed\": bool}");
    double s = v.at("scale").get<double>();
    if (!usable_scale(s)) fail("activation scale of " + name + " is not a positive number");
    out.activations[name] = {s, v.at("signed").get<bool>()};
  }
  for (const auto& name : *layers) {
    if (!name.is_string()) fail("metadata: quantization \"int8_layers\" has a non-string entry");
    const auto found = index.find(name.get<std::string>());
    const int at = found == index.end() ? -1 : found->second;
    if (at < 0) fail("int8 layer " + name.get<std::string>() + " is not a layer of the model");
    LayerType t = spec.layers[at].type;
    if (!runs_int8(t)) fail("int8 layer " + name.get<std::string>() + " is a " + layer_type_name(t) + " (only " + int8_kinds() + " run in int8)");
    out.int8_layers.push_back(name.get<std::string>());
  }
  if (auto scheme = q->find("scheme"); scheme != q->end() && scheme->is_string()) out.scheme = scheme->get<std::string>();
  if (out.scheme != kQuantizationScheme && out.scheme != kQuantizationSchemeV1)
    fail("metadata: quantization scheme '" + out.scheme + "' is not one this runtime knows (" + kQuantizationScheme + " or v1); a newer shrink wrote it");
  return out;
}

// The informational fields: taken when well-formed, else left empty (the runtime never read them).
void read_informational(const json& meta, ModelMeta& m) {
  if (auto names = meta.find("class_names"); names != meta.end() && names->is_array()) {
    std::vector<std::string> v;
    for (const auto& n : *names)
      if (n.is_string()) v.push_back(n.get<std::string>());
    if (v.size() == names->size()) m.class_names = std::move(v);
  }
  if (auto f = meta.find("image_input"); f != meta.end() && f->is_boolean()) m.image_input = f->get<bool>();
  auto p = meta.find("provenance");
  if (p == meta.end() || !p->is_object()) return;
  auto text = [&](const char* key) -> std::optional<std::string> {
    auto f = p->find(key);
    if (f == p->end() || !f->is_string()) return std::nullopt;
    return f->get<std::string>();
  };
  m.provenance.checkpoint = text("checkpoint").value_or("");
  m.provenance.stage = text("stage");
  m.provenance.config_xxh3 = text("config_xxh3");
  if (auto f = p->find("test_accuracy"); f != p->end() && f->is_number()) m.provenance.test_accuracy = f->get<double>();
  if (auto f = p->find("seed"); f != p->end() && f->is_number_unsigned()) m.provenance.seed = f->get<uint64_t>();
}

json provenance_json(const Provenance& p) {
  json j = {{"checkpoint", p.checkpoint}};
  if (p.stage) j["stage"] = *p.stage;
  if (p.test_accuracy) j["test_accuracy"] = *p.test_accuracy;
  if (p.config_xxh3) j["config_xxh3"] = *p.config_xxh3;
  if (p.seed) j["seed"] = *p.seed;
  return j;
}

}  // namespace

bool is_weight_scale_key(const std::string& tensor) {
  static const std::string suffix = weight_scale_key("");
  return tensor.size() > suffix.size() && tensor.compare(tensor.size() - suffix.size(), suffix.size(), suffix) == 0;
}


nlohmann::json ModelMeta::to_json() const {
  json j = {{"format", kModelFormat},
            {"spec", spec},
            {"input", input},
            {"classes", classes},
            {"precision", precision},
            {"normalization", {{"mean", normalization.mean}, {"std", normalization.std}}},
            {"class_names", class_names},
            {"image_input", image_input},
            {"provenance", provenance_json(provenance)}};
  if (quantization) {
    json acts = json::object();
    for (const auto& [point, s] : quantization->activations) acts[point] = {{"scale", s.scale}, {"signed", s.is_signed}};
    j["quantization"] = {{"activations", acts}, {"int8_layers", quantization->int8_layers}, {"scheme", quantization->scheme}};
  }
  return j;
}

// The order of the checks is the runtime's of old, so a file with several faults reports the same one.
ModelMeta ModelMeta::from_json(const nlohmann::json& meta, DescribedModel* described) {
  if (meta.value("format", json()) != kModelFormat) fail("metadata does not describe a shrink model");
  ModelMeta m;
  const auto& spec_text = field(meta, "spec");
  const auto& input = field(meta, "input");
  const auto& classes = field(meta, "classes");
  if (!spec_text.is_string()) fail("metadata: \"spec\" is not a string");
  m.input = read_input(input);
  if (!classes.is_number_integer() || classes.get<int64_t>() < 1 || classes.get<int64_t>() > format::kMaxClasses)
    fail("metadata: \"classes\" must be an integer from 1 to " + std::to_string(format::kMaxClasses));
  m.spec = spec_text.get<std::string>();
  m.classes = classes.get<int64_t>();
  DescribedModel d = describe(m.spec, m.input, m.classes);

  auto precision = meta.find("precision");
  if (precision != meta.end() && !precision->is_string()) fail("metadata: \"precision\" is not a string");
  m.precision = precision == meta.end() ? "fp32" : precision->get<std::string>();
  if (m.precision != "fp32" && m.precision != "int8") fail("unknown precision " + m.precision);
  m.normalization = read_normalization(meta, m.input);
  if (m.precision == "int8") m.quantization = read_quantization(meta, d.spec);
  read_informational(meta, m);
  if (described) *described = std::move(d);
  return m;
}

}  // namespace shrink
