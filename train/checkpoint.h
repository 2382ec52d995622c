// Checkpoints: a torch archive holding the model's parameters and buffers, the optimizer state
// and a JSON metadata record (spec, input shape, normalization, resolved config, progress).
// Written to a temporary name, synced and renamed, so a crash never leaves half a checkpoint; a
// write that fails (no space, a file-size limit) is a UserError naming the file, and the
// previous checkpoint is kept.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "datasets/loader.h"
#include "train/model.h"

namespace shrink {

struct Data;

// Metadata fields: "spec" (canonical text), "input", "classes", "mean", "std", "config" (INI),
// "epoch" (epochs completed), "best_metric", "test_accuracy", plus whatever a stage adds.
// Named state saved beside the model: an objective's adapters ("objective"), pruning masks ("masks").
using CheckpointExtras = std::map<std::string, torch::nn::Module*>;
void save_checkpoint(const std::string& path, SpecNet& model, torch::optim::Optimizer* optimizer, const nlohmann::json& meta,
                     const CheckpointExtras& extras = {});
// Loads extra state `name` into `module` (whose parameters and buffers must match by name);
// false when the checkpoint has none.
bool load_extra_state(const std::string& path, const std::string& name, torch::nn::Module& module);
nlohmann::json read_checkpoint_meta(const std::string& path);
// Copies a checkpoint's saved model state into `model` by name, keeping the model's tensor
// layouts (the trainer's job.init and --resume). Saved entries the model lacks are ignored (a
// quantized checkpoint's scales, loaded into its float model); returns how many of the model's entries the checkpoint lacks (a float checkpoint
// loaded into the quantized simulation lacks its scales). The checkpoint's spec must be the
// model's (a UserError otherwise); `meta` receives its metadata.
int64_t load_weights_into(const std::string& path, SpecNetImpl& model, nlohmann::json* meta = nullptr);

// What a checkpoint holds: a float model, or the quantization-aware simulation of one (written by
// `shrink quantize`; its metadata has "quantization", the simulation's settings).
enum class ModelKind { Float, QuantAware };

struct LoadedModel {
  SpecNet model{nullptr};  // the float SpecNet, or the simulation (a SpecNetImpl that quantize/ defines)
  nlohmann::json meta;     // the checkpoint's metadata
  ModelKind kind = ModelKind::Float;
  bool quantized() const { return kind == ModelKind::QuantAware; }
};

// The one checkpoint loader: builds the model the checkpoint holds, as what it is, and loads all
// of its state (a UserError names the file when part of it is missing or the file is damaged).
LoadedModel load_checkpoint(const std::string& path);

// Builds the quantization-aware simulation of a spec from its checkpointed settings. The
// simulation lives in quantize/, above train/, which registers its builder here (a program that
// does not link it cannot load quantized checkpoints, and says so).
using QuantAwareBuilder = std::function<std::shared_ptr<SpecNetImpl>(const ModelSpec& spec, const nlohmann::json& settings)>;
void register_quant_aware_builder(QuantAwareBuilder builder);
void load_optimizer_state(const std::string& path, torch::optim::Optimizer& optimizer);
ModelSpec spec_from_meta(const nlohmann::json& meta);
// The input normalization a checkpoint's model was trained with (empty mean: none).
Augment normalization_of(const nlohmann::json& meta);

// A checkpoint's class names (its metadata's "class_names"; empty when it has none).
std::vector<std::string> class_names_of(const nlohmann::json& meta);

// The data's class names against a model's (either empty: nothing to compare). Other names, or
// the same in another order, would train or score against labels that mean other classes: a
// UserError naming the first label where they differ.
void check_class_names(const std::vector<std::string>& data_names, const std::vector<std::string>& model_names, const std::string& model);
// The data a checkpoint's model is scored or trained on: examples of its input shape, its number
// of classes and, where both name them, its classes in its order; else a UserError naming `model`.
void check_data_fits(const Data& data, const nlohmann::json& meta, const std::string& model);

}  // namespace shrink
