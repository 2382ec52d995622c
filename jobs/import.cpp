#include "jobs/import.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "onnx/import.h"
#include "runtime/format.h"
#include "runtime/model_file.h"
#include "runtime/model_meta.h"
#include "train/checkpoint.h"

namespace shrink {
namespace {

std::vector<std::string> read_class_names(const std::string& path) {
  std::ifstream f(path);
  if (!std::filesystem::is_regular_file(path) || !f) throw UserError(fmt::format("--class-names {}: cannot open (not a file?)", path));
  std::vector<std::string> names;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) names.push_back(line);
  if (names.empty()) throw UserError(fmt::format("--class-names {}: no names in it (one a line)", path));
  return names;
}

// A fresh `classes`-wide classifier in place of the model's last layer, which must be a linear one.
ModelSpec with_new_head(ModelSpec spec, int64_t classes) {
  Layer& head = spec.layers.back();
  if (head.type != LayerType::Linear)
    throw UserError(fmt::format("--classes {}: the model ends with a {} ({}), not a linear classifier that could be replaced", classes,
                                layer_type_name(head.type), head.name));
  head.out = classes;
  return parse_spec(spec.to_string(), spec.input, classes);
}

// An fp32 .shrink file as import_onnx would give it: the spec the file runs (batchnorm folded) and
// its weights. An int8 file has lost its float weights (and its int8 semantics are not a float
// model's), so it is refused.
ImportedModel read_model_file(const std::string& path, const std::vector<int64_t>& input, bool* image_input) {
  rt::ModelFile file;
  ModelMeta meta;
  DescribedModel described;
  try {
    file = rt::read_model_file(path);
    meta = ModelMeta::from_json(file.meta, &described);
  } catch (const ModelMetaError& e) {
    throw UserError(fmt::format("{}: {}", path, e.what()));
  } catch (const rt::Error& e) {
    throw UserError(e.what());  // names the file
  }
  if (meta.precision != "fp32")
    throw UserError(fmt::format("{}: an {} model file holds no float weights to import: import an fp32 export, or use the checkpoint it "
                                "was exported from", path, meta.precision));
  if (!input.empty() && input != meta.input)
    throw UserError(fmt::format("--input {}: {} takes examples of shape {}", shape_string(input), path, shape_string(meta.input)));
  ImportedModel m;
  m.spec = described.spec;
  m.producer = "shrink model file, format " + std::to_string(file.major) + "." + std::to_string(file.minor);
  for (const auto& [name, t] : file.tensors) {
    if (t.dtype != format::DType::F32) throw UserError(fmt::format("{}: tensor {} is not float32 in an fp32 model file", path, name));
    m.tensors[name] = {t.dims, std::vector<float>(t.f32(), t.f32() + t.numel())};
  }
  // A batchnorm no conv or linear could take is stored as its scale and shift (weight, bias): with
  // mean 0 and variance 1 - eps, a batchnorm computes exactly that.
  for (const Layer& L : m.spec.layers) {
    if (L.type != LayerType::BatchNorm || !m.tensors.count(weight_key(L.name))) continue;
    const std::vector<int64_t> channels = m.tensors[weight_key(L.name)].shape;
    const size_t n = static_cast<size_t>(channels.at(0));
    m.tensors[L.name + ".running_mean"] = {channels, std::vector<float>(n, 0.0f)};
    m.tensors[L.name + ".running_var"] = {channels, std::vector<float>(n, static_cast<float>(1 - L.eps))};
  }
  m.mean = meta.normalization.mean;
  m.std = meta.normalization.std;
  m.class_names = meta.class_names;
  *image_input = *image_input || meta.image_input;  // --image-input, or the file's own
  return m;
}

}  // namespace

bool import_once(const std::string& file, const std::string& checkpoint, const std::string& who) {
  if (std::filesystem::exists(checkpoint)) return false;
  ImportRequest request;
  request.file = file;
  request.out = checkpoint;
  try {
    import_model(request);
  } catch (const UserError& e) {
    throw UserError(who + " " + e.what());  // the message starts with the file's name
  }
  return true;
}

std::string import_model(const ImportRequest& r) {
  bool image_input = r.image_input;
  const bool model_file = format::is_model_file(r.file);
  ImportedModel imported = model_file ? read_model_file(r.file, r.input, &image_input) : import_onnx(r.file, r.input);
  ModelSpec spec = imported.spec;
  const int64_t own_classes = spec.classes;
  const bool new_head = r.classes > 0 && r.classes != own_classes;
  if (new_head) spec = with_new_head(spec, r.classes);
  const int64_t channels = spec.input.size() == 3 ? spec.input[0] : 1;
  for (const auto* v : {&r.mean, &r.std})
    if (!v->empty() && static_cast<int64_t>(v->size()) != channels)
      throw UserError(fmt::format("--mean/--std: {} values for {} input channels", v->size(), channels));
  if (r.mean.size() != r.std.size()) throw UserError("--mean and --std must be given together");
  std::vector<double> mean = r.mean, stdev = r.std;
  const bool graph_normalizes = !imported.mean.empty() || !imported.std.empty();
  if (graph_normalizes) {  // (x - mean) / std as the graph's first nodes (a model shrink exported), or in the model file's metadata
    if (!r.mean.empty()) throw UserError(fmt::format("{}: the {} normalizes its input itself; drop --mean/--std", r.file, model_file ? "model" : "graph"));
    mean.assign(channels, 0.0);
    stdev.assign(channels, 1.0);
    if (!imported.mean.empty()) mean.assign(imported.mean.begin(), imported.mean.end());
    if (!imported.std.empty()) stdev.assign(imported.std.begin(), imported.std.end());
    if (mean.size() == 1 && stdev.size() > 1) mean.assign(stdev.size(), mean[0]);  // per-feature on one side only
    if (stdev.size() == 1 && mean.size() > 1) stdev.assign(mean.size(), stdev[0]);
  }
  if (r.input_scale != 1.0) {  // (S x - m) / s = (x - m / S) / (s / S)
    if (mean.empty()) mean.assign(channels, 0.0), stdev.assign(channels, 1.0);
    for (double& v : mean) v /= r.input_scale;
    for (double& v : stdev) v /= r.input_scale;
  }
  // The file's own names (a model shrink exported) name its own classes, not a fresh head's.
  std::vector<std::string> class_names = !r.class_names.empty() ? read_class_names(r.class_names) : new_head ? std::vector<std::string>{} : imported.class_names;
  if (!class_names.empty() && static_cast<int64_t>(class_names.size()) != spec.classes)
    throw UserError(fmt::format("--class-names {}: {} names for {} classes", r.class_names, class_names.size(), spec.classes));

  if (r.image_input && (spec.input.size() != 3 || (spec.input[0] != 1 && spec.input[0] != 3)))
    throw UserError(fmt::format("--image-input: the model's input is {}, not images of 1 or 3 channels (C,H,W)", shape_string(spec.input)));

  torch::manual_seed(r.seed);
  SpecNet model(spec);
  const std::string& head = spec.layers.back().name;
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters(), buffers = model->named_buffers();
  for (const auto& [key, t] : imported.tensors) {
    if (new_head && key.rfind(head + ".", 0) == 0) continue;  // the fresh classifier keeps its initialization
    torch::Tensor* dst = params.find(key) ? params.find(key) : buffers.find(key);
    if (!dst) throw std::logic_error("import: no tensor " + key + " in the model built from the spec");
    auto src = torch::from_blob(const_cast<float*>(t.values.data()), t.shape, torch::kFloat32);
    if (src.sizes() != dst->sizes())
      throw UserError(fmt::format("{}: tensor {} has shape {} but the layer needs {}", r.file, key, shape_string(t.shape), shape_string(dst->sizes().vec())));
    dst->copy_(src);
  }
  for (const auto& p : params)  // a weight left at its random initialization would be a silent wrong answer
    if (!imported.tensors.count(p.key()) && !(new_head && p.key().rfind(head + ".", 0) == 0))
      throw UserError(fmt::format("{}: no values for {} in it", r.file, p.key()));
  nlohmann::json meta = {{"spec", spec.to_string()}, {"input", spec.input}, {"classes", spec.classes}, {"epoch", 0},
                         {"mean", mean},             {"std", stdev},       {"class_names", class_names},   {"image_input", image_input},
                         {"imported", {{"file", r.file}, {"producer", imported.producer}, {"new_head", new_head}}}};
  if (!model_file) meta["imported"]["opset"] = imported.opset;
  model->eval();
  save_checkpoint(r.out, model, nullptr, meta);
  auto cost = total_cost(spec);
  const std::string source = model_file ? imported.producer : fmt::format("opset {}, {}", imported.opset, imported.producer);
  std::string out = fmt::format("imported {} ({}): {} layers, {} params, {} MACs, input {}, {} classes\n", r.file, source, spec.layers.size(),
                                cost.params, cost.macs, shape_string(spec.input), spec.classes);
  if (!imported.output_softmax.empty())
    out += fmt::format("the model's final {} is left out: the checkpoint gives logits (shrink-run's probabilities, and the top class, are the same)\n",
                       imported.output_softmax);
  if (imported.input_channels_last)
    out += "the file reads N,H,W,C (channels last) and transposes it first: the checkpoint, shrink-run and the exports read N,C,H,W\n";
  if (new_head) out += fmt::format("replaced the {}-class classifier {} with a fresh {}-class one (train it: transfer learning)\n", own_classes, head, spec.classes);
  const std::string scaled = r.input_scale != 1.0 ? fmt::format(", for inputs {} times smaller than the file's", r.input_scale) : "";
  if (graph_normalizes) {
    out += fmt::format("normalization from the {}{}: mean {} std {}\n", model_file ? "file" : "graph", scaled, fmt::join(mean, ","), fmt::join(stdev, ","));
    if (r.input_scale == 1.0 && std::all_of(stdev.begin(), stdev.end(), [](double s) { return s >= 64; }))
      out += fmt::format("the graph divides its input by about {:.4g}: a model trained on pixel values 0..255? shrink's images (and shrink-run's) "
                         "are 0..1: import it with --input-scale 255 if so\n",
                         stdev[0]);
  } else if (r.input_scale != 1.0) {
    out += fmt::format("normalization{}: mean {} std {}\n", scaled, fmt::join(mean, ","), fmt::join(stdev, ","));
  } else if (r.mean.empty())
    out += "no --mean/--std given: the model is taken to read its inputs unnormalized\n";
  const auto has = [&](LayerType t) { return std::any_of(spec.layers.begin(), spec.layers.end(), [&](const Layer& L) { return L.type == t; }); };
  if (model_file && has(LayerType::Conv2d))
    out += "batchnorm is folded into the convs in a model file: fine-tuning without it needs a low learning rate\n";
  else if (has(LayerType::Conv2d) && !has(LayerType::BatchNorm))
    out += std::string("no batchnorm: an eval-mode export folds it into the convs, and fine-tuning without it needs a low learning rate") +
           (imported.producer.rfind("pytorch", 0) == 0 ? "; export with training=TrainingMode.TRAINING and do_constant_folding=False to keep it\n" : "\n");
  return out + fmt::format("wrote {}\nspec: {}\n", r.out, spec.to_string());
}

}  // namespace shrink
