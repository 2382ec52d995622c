#include "jobs/tools.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "export/export.h"
#include "jobs/jobs.h"
#include "onnx/import.h"
#include "prune/prune.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"

namespace shrink {
namespace {

// The checkpoint's saved config read with every job's keys, the run's overrides over it.
DataConfig data_of(const CheckpointRun& run, const nlohmann::json& meta) {
  Keys keys;
  add_all_job_options(keys);
  return read_job_config(Config::layered(keys, meta.value("config", std::string()), run.checkpoint + " (saved config)", run.overrides)).data;
}

Data checkpoint_data(const CheckpointRun& run, const nlohmann::json& meta) {
  Data data = open_data(data_of(run, meta));
  check_data_fits(data, meta, run.checkpoint);
  return data;
}

void write_logits(SpecNet& model, const Data& data, const Augment& norm, const std::string& out) {
  torch::NoGradGuard no_grad;
  model->eval();
  std::ofstream file(out, std::ios::binary);
  for_each_batch(data.test, 512, norm, [&](const Batch& b) {
    auto logits = model->forward(b.x).contiguous();
    file.write(reinterpret_cast<const char*>(logits.data_ptr<float>()), logits.numel() * 4);
  });
  file.close();
  if (!file) throw UserError(fmt::format("--logits {}: cannot write", out));
}

}  // namespace

std::string eval_report(const CheckpointRun& run, const std::string& logits_out) {
  torch::set_num_threads(resolve_threads(run.threads));
  LoadedModel loaded = load_checkpoint(run.checkpoint);  // a quantized checkpoint runs its int8 simulation
  SpecNet model = loaded.model;
  Data data = checkpoint_data(run, loaded.meta);
  Augment norm = normalization_of(loaded.meta);
  EvalResult r = evaluate(model, data.test, norm, 512);
  if (!logits_out.empty()) write_logits(model, data, norm, logits_out);
  std::string out = fmt::format("{}: test accuracy {:.2f}% ({} examples), loss {:.4f}\n", run.checkpoint, 100 * r.accuracy, r.count, r.loss);
  for (size_t c = 0; c < r.count_per_class.size(); ++c)
    out += fmt::format("  class {}: {:.2f}% of {}\n", c, r.count_per_class[c] ? 100.0 * r.correct_per_class[c] / r.count_per_class[c] : 0.0,
                       r.count_per_class[c]);
  return out;
}

std::string sensitivity_report(const CheckpointRun& run, const std::vector<double>& sparsities) {
  torch::set_num_threads(resolve_threads(run.threads));
  return sensitivity_table(run.checkpoint, data_of(run, read_checkpoint_meta(run.checkpoint)), sparsities);
}

std::string export_report(const std::string& checkpoint, const std::string& out, const ExportOptions& options) {
  auto info = export_model(checkpoint, out, options);
  return fmt::format("{}: {} bytes, {} weights, {} tensors\n", out, info["bytes"].get<uint64_t>(), info["precision"].get<std::string>(),
                     info["tensors"].get<size_t>());
}

std::string data_info(const std::string& path) { return describe_data(path); }

std::string pruning_report(const std::string& checkpoint) { return prune_report(checkpoint); }

namespace {

// A spec string or preset; an ONNX file (read as import would); a checkpoint (its spec).
ModelSpec spec_of(const std::string& what, const std::vector<int64_t>& input, int64_t classes) {
  if (looks_like_onnx(what)) return import_onnx(what, input).spec;
  std::error_code not_a_path;  // spec text may be longer than a file name can be
  if (std::filesystem::is_regular_file(what, not_a_path)) return spec_from_meta(read_checkpoint_meta(what));
  return parse_spec(what, input.empty() ? std::vector<int64_t>{1, 16, 16} : input, classes);
}

}  // namespace

std::string model_info(const std::string& spec_text, const std::vector<int64_t>& input, int64_t classes) {
  ModelSpec spec = spec_of(spec_text, input, classes);
  auto info = analyze(spec);
  std::string out = fmt::format("{:<14} {:<11} {:<14} {:<14} {:>10} {:>12}\n", "layer", "type", "input", "output", "params", "MACs");
  int64_t params = 0, macs = 0;
  for (size_t i = 0; i < info.size(); ++i) {
    const Layer& L = spec.layers[i];
    out += fmt::format("{:<14} {:<11} {:<14} {:<14} {:>10} {:>12}\n", L.name, L.depthwise ? "dwconv" : layer_type_name(L.type),
                       shape_string(info[i].in_shape), shape_string(info[i].out_shape), info[i].params, info[i].macs);
    params += info[i].params;
    macs += info[i].macs;
  }
  out += fmt::format("{:<14} {:<11} {:<14} {:<14} {:>10} {:>12}\n", "total", "", shape_string(spec.input), "", params, macs);
  return out + "spec: " + spec.to_string() + "\n";
}

}  // namespace shrink
