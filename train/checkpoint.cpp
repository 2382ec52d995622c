#include "train/checkpoint.h"

#include <fmt/format.h>

#include <filesystem>
#include <sstream>

#include "common/error.h"
#include "common/shape.h"
#include "common/file_io.h"
#include "datasets/data.h"
#include "train/zip_check.h"

namespace shrink {
namespace {

constexpr int kCheckpointVersion = 1;

// `whole`: the whole file is read (weights, optimizer state), so each entry's checksum is checked
// first; the metadata alone is read without.
torch::serialize::InputArchive open_archive(const std::string& path, bool whole = true) {
  if (!std::filesystem::is_regular_file(path)) throw UserError(fmt::format("checkpoint {}: no such file", path));
  if (whole)
    if (const std::string damage = zip_damage(path); !damage.empty()) throw UserError(fmt::format("checkpoint {}: corrupt: {}", path, damage));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw UserError(fmt::format("checkpoint {}: not a readable shrink checkpoint (truncated or corrupt?)", path));
  }
  return archive;
}

}  // namespace

void save_checkpoint(const std::string& path, SpecNet& model, torch::optim::Optimizer* optimizer, const nlohmann::json& meta,
                     const CheckpointExtras& extras) {
  torch::serialize::OutputArchive archive, model_archive, optim_archive;
  nlohmann::json m = meta;
  m["format"] = "shrink-checkpoint";
  m["version"] = kCheckpointVersion;
  m["spec"] = model->spec().to_string();
  m["input"] = model->spec().input;
  m["classes"] = model->spec().classes;
  m.update(model->describe());
  archive.write("meta", c10::IValue(m.dump()));
  model->save(model_archive);
  archive.write("model", model_archive);
  for (const auto& [name, module] : extras) {
    if (!module) continue;
    torch::serialize::OutputArchive extra_archive;
    module->save(extra_archive);
    archive.write("extra." + name, extra_archive);
  }
  if (optimizer) {
    optimizer->save(optim_archive);
    archive.write("optimizer", optim_archive);
  }
  // Serialized in memory, then written whole, synced and renamed (common/file_io.h): a kill
  // leaves the previous checkpoint or this one, a failed write (no space) the previous one.
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomic(path, bytes.str());
}

namespace {

nlohmann::json meta_of(torch::serialize::InputArchive& archive, const std::string& path) {
  c10::IValue value;
  if (!archive.try_read("meta", value) || !value.isString()) throw UserError(fmt::format("checkpoint {}: has no shrink metadata", path));
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(value.toStringRef());
  } catch (const nlohmann::json::exception&) {
    throw UserError(fmt::format("checkpoint {}: metadata is not valid JSON", path));
  }
  if (meta.value("format", "") != "shrink-checkpoint") throw UserError(fmt::format("checkpoint {}: not a shrink checkpoint", path));
  if (meta.value("version", 0) > kCheckpointVersion)
    throw UserError(fmt::format("checkpoint {}: version {} is newer than this shrink reads ({})", path, meta.value("version", 0), kCheckpointVersion));
  return meta;
}

}  // namespace

nlohmann::json read_checkpoint_meta(const std::string& path) {
  auto archive = open_archive(path, false);
  return meta_of(archive, path);
}

ModelSpec spec_from_meta(const nlohmann::json& meta) {
  return parse_spec(meta.at("spec").get<std::string>(), meta.at("input").get<std::vector<int64_t>>(), meta.at("classes").get<int64_t>());
}

namespace {

// Copies every parameter and buffer the archive has into the module, by name, keeping the
// module's tensor layouts; returns how many the module has that the archive lacks.
int64_t load_present(torch::nn::Module& module, torch::serialize::InputArchive& archive) {
  torch::NoGradGuard no_grad;
  int64_t missing = 0;
  auto load = [&](const std::string& key, torch::Tensor& t, bool buffer) {
    torch::Tensor saved;
    if (!archive.try_read(key, saved, buffer)) return void(++missing);
    if (saved.sizes() != t.sizes()) throw c10::Error({__func__, __FILE__, __LINE__}, key + ": shape differs");
    t.copy_(saved);
  };
  for (auto& p : module.named_parameters(false)) load(p.key(), p.value(), false);
  for (auto& b : module.named_buffers(false)) load(b.key(), b.value(), true);
  for (auto& child : module.named_children()) {
    torch::serialize::InputArchive child_archive;
    if (archive.try_read(child.key(), child_archive)) missing += load_present(*child.value(), child_archive);
    else missing += static_cast<int64_t>(child.value()->parameters().size() + child.value()->buffers().size());
  }
  return missing;
}

}  // namespace

namespace {

// The weights part of load_weights_into, on an archive already open.
int64_t load_from(torch::serialize::InputArchive& archive, const std::string& path, SpecNetImpl& model, nlohmann::json* meta_out) {
  nlohmann::json meta = meta_of(archive, path);
  std::string saved = spec_from_meta(meta).to_string(), wanted = model.spec().to_string();
  if (saved != wanted) throw UserError(fmt::format("checkpoint {}: holds the model {}, not {}", path, saved, wanted));
  if (meta_out) *meta_out = meta;
  torch::serialize::InputArchive model_archive;
  try {
    archive.read("model", model_archive);
    return load_present(model, model_archive);
  } catch (const c10::Error& e) {
    throw UserError(fmt::format("checkpoint {}: weights do not match its model spec (damaged file?)", path));
  }
}

}  // namespace

int64_t load_weights_into(const std::string& path, SpecNetImpl& model, nlohmann::json* meta_out) {
  auto archive = open_archive(path);
  return load_from(archive, path, model, meta_out);
}

Augment normalization_of(const nlohmann::json& meta) {
  Augment a;
  a.mean = meta.value("mean", std::vector<float>{});
  a.std = meta.value("std", std::vector<float>{});
  return a;
}

namespace {

QuantAwareBuilder& quant_aware_builder() {
  static QuantAwareBuilder builder;  // set by quantize/ before main (static initialization order safe)
  return builder;
}

}  // namespace

void register_quant_aware_builder(QuantAwareBuilder builder) { quant_aware_builder() = std::move(builder); }

LoadedModel load_checkpoint(const std::string& path) {
  auto archive = open_archive(path);
  LoadedModel out;
  out.meta = meta_of(archive, path);
  out.kind = out.meta.contains("quantization") ? ModelKind::QuantAware : ModelKind::Float;
  ModelSpec spec = spec_from_meta(out.meta);
  switch (out.kind) {
    case ModelKind::Float:
      out.model = SpecNet(spec);
      if (load_from(archive, path, *out.model, nullptr) > 0)
        throw UserError(fmt::format("checkpoint {}: some weights are missing (damaged file?)", path));
      break;
    case ModelKind::QuantAware:
      if (!quant_aware_builder())
        throw UserError(fmt::format("checkpoint {}: a quantized checkpoint, and this program was built without quantize/ to run it", path));
      out.model = SpecNet(quant_aware_builder()(spec, out.meta["quantization"]));
      if (load_from(archive, path, *out.model, nullptr) > 0)
        throw UserError(fmt::format("checkpoint {}: part of its quantization state is missing", path));
      break;
  }
  return out;
}

bool load_extra_state(const std::string& path, const std::string& name, torch::nn::Module& module) {
  auto archive = open_archive(path);
  torch::serialize::InputArchive extra_archive;
  if (!archive.try_read("extra." + name, extra_archive)) return false;
  try {
    module.load(extra_archive);
  } catch (const c10::Error& e) {
    throw UserError(fmt::format("checkpoint {}: its saved {} do not match this job (different layers?)", path, name));
  }
  return true;
}

void load_optimizer_state(const std::string& path, torch::optim::Optimizer& optimizer) {
  auto archive = open_archive(path);
  torch::serialize::InputArchive optim_archive;
  if (!archive.try_read("optimizer", optim_archive)) throw UserError(fmt::format("checkpoint {}: has no optimizer state to resume from", path));
  try {
    optimizer.load(optim_archive);
  } catch (const c10::Error& e) {
    throw UserError(fmt::format("checkpoint {}: optimizer state does not match (different optim.name?)", path));
  }
}

std::vector<std::string> class_names_of(const nlohmann::json& meta) { return meta.value("class_names", std::vector<std::string>{}); }

void check_class_names(const std::vector<std::string>& data_names, const std::vector<std::string>& model_names, const std::string& model) {
  if (data_names.empty() || model_names.empty()) return;
  for (size_t k = 0; k < std::max(data_names.size(), model_names.size()); ++k) {
    auto name = [&](const std::vector<std::string>& v) { return k < v.size() ? "'" + v[k] + "'" : std::string("nothing"); };
    if (k >= data_names.size() || k >= model_names.size() || data_names[k] != model_names[k])
      throw UserError(fmt::format("{} calls class {} {}, the data {}: its classes are not the data's, in the same order", model, k, name(model_names),
                                  name(data_names)));
  }
}

void check_data_fits(const Data& data, const nlohmann::json& meta, const std::string& model) {
  const auto input = meta.at("input").get<std::vector<int64_t>>();
  const auto classes = meta.at("classes").get<int64_t>();
  if (data.shape != input || data.classes != classes)
    throw UserError(fmt::format("{} takes examples of {} in {} classes; the data has examples of {} in {} classes", model, shape_string(input), classes,
                                shape_string(data.shape), data.classes));
  check_class_names(data.class_names, class_names_of(meta), model);
}

}  // namespace shrink
