// A model as the runtime runs it (the metadata and tensors export writes to a .shrink file),
// written as ONNX instead: an fp32 graph, or an int8 graph of QuantizeLinear/DequantizeLinear
// pairs carrying exactly the scales of docs/quantization.md, so ONNX Runtime's integer kernels
// compute what the simulation and shrink-run compute (docs/onnx.md, "Export"). Torch-free.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model_meta.h"
#include "runtime/model_writer.h"

namespace shrink {

struct OnnxExportOptions {
  int64_t opset = 13;          // 11 to 17; int8 needs 13 (per-channel DequantizeLinear)
  bool normalization = true;   // (x - mean) / std as the graph's first nodes: ONNX users feed raw input
  // Every layer's output (on its grid, for int8) is also a graph output, LAYER.exposed: for finding
  // where two implementations depart. Int8 layers' float outputs inside their units are left out,
  // so ONNX Runtime still fuses them (relu, relu6 and the QuantizeLinear after them are exposed).
  bool expose_layers = false;
};

inline constexpr const char* kOnnxInput = "input";    // [batch, C, H, W] (or [batch, F]), float
inline constexpr const char* kOnnxOutput = "logits";  // [batch, classes], float

// The file's bytes; UserError for an opset out of range or int8 below opset 13.
std::string encode_onnx_model(const ModelMeta& meta, const std::vector<ExportTensor>& tensors, const OnnxExportOptions& options);
// Written atomically (a failed write keeps the previous file).
void write_onnx_model(const std::string& path, const ModelMeta& meta, const std::vector<ExportTensor>& tensors, const OnnxExportOptions& options);

}  // namespace shrink
