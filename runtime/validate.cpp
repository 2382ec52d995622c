// Model::load's checks, before anything uses the file: the metadata (ModelMeta::from_json: every
// field, the spec and the caps of docs/format.md) and the tensors (exactly the ones the layers
// need, each with its dtype and shape). A problem is one rt::Error naming the file.
#include <string>

#include "runtime/loaded.h"

namespace shrink::rt::detail {

void Loaded::read_metadata() {
  DescribedModel described;
  try {
    meta = ModelMeta::from_json(file.meta, &described);
  } catch (const ModelMetaError& e) {
    fail(e.what());
  }
  spec = std::move(described.spec);
  info = std::move(described.layers);
  activation_bytes = described.activation_bytes;
  if (meta.quantization) int8_layers.insert(meta.quantization->int8_layers.begin(), meta.quantization->int8_layers.end());
}

void Loaded::check_tensors() const {
  std::set<std::string> expected;
  auto need = [&](const std::string& name, format::DType dtype, const std::vector<int64_t>& dims) {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) fail("tensor " + name + " is missing");
    const Tensor& t = it->second;
    auto dims_text = [](const std::vector<int64_t>& d) {
      std::string s;
      for (int64_t v : d) s += (s.empty() ? "" : "x") + std::to_string(v);
      return s;
    };
    if (t.dtype != dtype) fail("tensor " + name + " has dtype " + std::to_string(static_cast<uint32_t>(t.dtype)) + ", expected " + std::to_string(static_cast<uint32_t>(dtype)));
    if (t.dims != dims) fail("tensor " + name + " has shape " + dims_text(t.dims) + ", the layer needs " + dims_text(dims));
    expected.insert(name);
    return &t;
  };
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    int64_t out = info[i].out_shape[0];
    if (L.type == LayerType::PReLU) need(weight_key(L.name), format::DType::F32, {L.per_channel ? out : 1});
    if (L.type == LayerType::BatchNorm) {  // one export could not fold: a scale and a shift per channel
      need(weight_key(L.name), format::DType::F32, {out});
      need(bias_key(L.name), format::DType::F32, {out});
    }
    if (!has_weights(L.type)) continue;
    bool q = int8_layers.count(L.name) > 0;
    need(weight_key(L.name), q ? format::DType::S8 : format::DType::F32, info[i].weight_shape);
    if (L.bias) need(bias_key(L.name), format::DType::F32, {out});
    if (q) {
      const Tensor* s = need(weight_scale_key(L.name), format::DType::F32, {out});
      for (int64_t c = 0; c < out; ++c)
        if (!usable_scale(s->f32()[c])) fail("weight scale " + std::to_string(c) + " of " + L.name + " is not a positive number");
    }
  }
  for (const auto& [name, t] : file.tensors)
    if (!expected.count(name)) fail("tensor " + name + " belongs to no layer of the model");
}

}  // namespace shrink::rt::detail
