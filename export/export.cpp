#include "export/export.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <filesystem>

#include "common/error.h"
#include "export/onnx_writer.h"
#include "onnx/import.h"
#include "runtime/model_meta.h"
#include "runtime/model_writer.h"
#include "quantize/quantize.h"
#include "train/checkpoint.h"
#include "train/fold.h"

namespace shrink {
namespace {

ExportTensor f32_tensor(const std::string& name, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kFloat32).contiguous();
  ExportTensor e{name, format::DType::F32, c.sizes().vec(), {}};
  e.bytes.assign(reinterpret_cast<const uint8_t*>(c.data_ptr()), reinterpret_cast<const uint8_t*>(c.data_ptr()) + c.numel() * 4);
  return e;
}

ExportTensor s8_tensor(const std::string& name, const torch::Tensor& q) {
  auto c = q.to(torch::kInt8).contiguous();
  ExportTensor e{name, format::DType::S8, c.sizes().vec(), {}};
  e.bytes.assign(reinterpret_cast<const uint8_t*>(c.data_ptr()), reinterpret_cast<const uint8_t*>(c.data_ptr()) + c.numel());
  return e;
}

}  // namespace

nlohmann::json export_model(const std::string& checkpoint, const std::string& out, const ExportOptions& o) {
  if (o.precision != "auto" && o.precision != "fp32" && o.precision != "int8")
    throw UserError(fmt::format("--precision {}: expected fp32, int8 or auto", o.precision));
  if (o.storage != "auto" && o.storage != "dense" && o.storage != "sparse")
    throw UserError(fmt::format("--storage {}: expected dense, sparse or auto", o.storage));
  const bool onnx = o.format == "onnx" || (o.format == "auto" && looks_like_onnx(out));
  if (o.format != "auto" && o.format != "onnx" && o.format != "shrink") throw UserError(fmt::format("--format {}: expected shrink, onnx or auto", o.format));
  if (onnx && o.storage != "auto") throw UserError(fmt::format("--storage {}: ONNX files store dense tensors; --storage is for .shrink files", o.storage));
  if (!onnx && o.opset != 0) throw UserError("--opset: only for ONNX files (--format onnx or an .onnx name)");
  if (!onnx && !o.normalization) throw UserError("--no-normalization: only for ONNX files (a .shrink file's runtime always normalizes)");
  if (!onnx && o.expose_layers) throw UserError("--expose-layers: only for ONNX files");
  if (onnx && o.opset != 0 && (o.opset < 11 || o.opset > 17)) throw UserError(fmt::format("--opset {}: ONNX export writes opsets 11 to 17", o.opset));
  LoadedModel loaded = load_checkpoint(checkpoint);
  const nlohmann::json& meta = loaded.meta;
  SpecNet model = loaded.model;
  model->eval();
  auto* qnet = dynamic_cast<QuantNetImpl*>(model.get());
  std::string precision = o.precision == "auto" ? (qnet ? "int8" : "fp32") : o.precision;
  if (precision == "int8" && !qnet)
    throw UserError(fmt::format("{}: int8 export needs a quantized checkpoint (run shrink quantize first)", checkpoint));
  if (onnx && precision == "int8" && o.opset != 0 && o.opset < 13)
    throw UserError(fmt::format("--opset {}: an int8 model needs opset 13 or later (per-channel DequantizeLinear)", o.opset));
  FoldedModel folded = fold_batchnorm(model);
  const ModelSpec& spec = folded.model->spec();
  // The names given, else those the checkpoint carries (an imported model's).
  const auto class_names = o.class_names.empty() ? class_names_of(meta) : o.class_names;
  if (!class_names.empty() && static_cast<int64_t>(class_names.size()) != spec.classes)
    throw UserError(fmt::format("--class-names: {} names for {} classes", class_names.size(), spec.classes));

  std::vector<ExportTensor> tensors;
  std::vector<std::string> int8_layers;
  auto params = folded.model->named_parameters();
  torch::NoGradGuard no_grad;
  nlohmann::json scales = qnet ? qnet->scales() : nlohmann::json();
  for (const Layer& L : spec.layers) {
    if (L.type == LayerType::PReLU) tensors.push_back(f32_tensor(weight_key(L.name), params[L.name + ".weight"]));  // its slopes
    if (L.type == LayerType::BatchNorm) {  // not after a conv or linear: a scale and a shift per channel
      auto [scale, shift] = batchnorm_scale_shift(*folded.model, L.name);
      tensors.push_back(f32_tensor(weight_key(L.name), scale));
      tensors.push_back(f32_tensor(bias_key(L.name), shift));
    }
    if (!has_weights(L.type)) continue;
    auto w = params[L.name + ".weight"];
    bool as_int8 = precision == "int8" && qnet->is_quantized(static_cast<size_t>(model->spec().index_of(L.name)));
    if (as_int8) {
      // The simulation's scales and rounding (docs/quantization.md), so the runtime computes what QAT trained.
      auto s = torch::tensor(scales["weights"][L.name].get<std::vector<float>>());
      std::vector<int64_t> shape(w.dim(), 1);
      shape[0] = -1;
      auto q = torch::clamp(torch::round(w / s.view(shape)), -127, 127);
      tensors.push_back(s8_tensor(weight_key(L.name), q));
      tensors.push_back(f32_tensor(weight_scale_key(L.name), s));
      int8_layers.push_back(L.name);
    } else {
      tensors.push_back(f32_tensor(weight_key(L.name), w));
    }
    if (params.contains(L.name + ".bias")) tensors.push_back(f32_tensor(bias_key(L.name), params[L.name + ".bias"]));
  }
  for (const Layer& L : spec.layers)
    if (precision == "int8" && runs_int8(L.type) && !has_weights(L.type) && qnet->is_quantized(static_cast<size_t>(model->spec().index_of(L.name))))
      int8_layers.push_back(L.name);

  ModelMeta file_meta;
  file_meta.spec = spec.to_string();
  file_meta.input = spec.input;
  file_meta.classes = spec.classes;
  file_meta.precision = precision;
  file_meta.normalization = {meta.value("mean", std::vector<float>{}), meta.value("std", std::vector<float>{})};
  file_meta.class_names = class_names;
  file_meta.image_input = meta.value("image_input", false);
  const std::string config = meta.value("config", std::string());
  file_meta.provenance.checkpoint = checkpoint;
  file_meta.provenance.stage = meta.value("stage", "");
  if (o.provenance_accuracy) file_meta.provenance.test_accuracy = meta.value("test_accuracy", 0.0);
  file_meta.provenance.config_xxh3 = fmt::format("{:016x}", XXH3_64bits(config.data(), config.size()));
  if (precision == "int8") {
    Quantization q;
    for (auto& [point, v] : scales["activations"].items())  // points named after the layers folding kept
      q.activations[folded.renamed.count(point) ? folded.renamed.at(point) : point] = {v.at("scale").get<double>(), v.at("signed").get<bool>()};
    q.int8_layers = int8_layers;
    file_meta.quantization = q;
  }
  std::filesystem::path parent = std::filesystem::path(out).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  if (onnx)
    write_onnx_model(out, file_meta, tensors, {o.opset ? o.opset : 13, o.normalization, o.expose_layers});
  else
    write_model_file(out, file_meta.to_json(), tensors, o.storage);
  nlohmann::json info = {{"path", out},           {"bytes", std::filesystem::file_size(out)}, {"precision", precision},
                         {"tensors", tensors.size()}, {"format", onnx ? "onnx" : "shrink"}};
  return info;
}

}  // namespace shrink
