// Checkpoint -> .shrink model file: batchnorm folded, int8 weights with per-channel scales (and
// the activation scales) for quantized checkpoints, pruned tensors stored sparsely. Or the same
// model as an ONNX file (export/onnx_writer.h).
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace shrink {

struct ExportOptions {
  std::string precision = "auto";  // fp32 | int8 | auto (int8 when the checkpoint is quantized)
  std::string storage = "auto";    // dense | sparse | auto (.shrink files only)
  std::vector<std::string> class_names;
  std::string format = "auto";     // shrink | onnx | auto (from the extension: .onnx is ONNX)
  int64_t opset = 0;               // ONNX only: 11 to 17 (0: 13)
  bool normalization = true;       // ONNX only: the normalization as the graph's first nodes
  bool expose_layers = false;      // ONNX only: every layer's output also a graph output (LAYER.exposed)
  // The checkpoint's test accuracy in the file's provenance. The accuracy-budget search leaves it
  // out of the files it measures, so that not even their size depends on the test set.
  bool provenance_accuracy = true;
};

// Returns what it wrote: path, bytes, precision, tensors and their storage.
nlohmann::json export_model(const std::string& checkpoint, const std::string& out, const ExportOptions& options);

}  // namespace shrink
