// Checkpoint -> .shrink model file: batchnorm folded, int8 weights with per-channel scales (and
// the activation scales) for quantized checkpoints, pruned tensors stored sparsely.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace shrink {

struct ExportOptions {
  std::string precision = "auto";  // fp32 | int8 | auto (int8 when the checkpoint is quantized)
  std::string storage = "auto";    // dense | sparse | auto
  std::vector<std::string> class_names;
};

// Returns what it wrote: path, bytes, precision, tensors and their storage.
nlohmann::json export_model(const std::string& checkpoint, const std::string& out, const ExportOptions& options);

}  // namespace shrink
