// Reading a model trained elsewhere: an fp32 ONNX file (opsets 11 to 23) as a ModelSpec and its
// weights. Torch-free: the protobuf classes of Debian's libonnx-dev. Every node becomes a layer
// kind of spec/layer_kinds.h, or a UserError naming the node, its op type, what is unsupported and
// the ops that are (docs/onnx.md lists them and the graph patterns recognised).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "spec/spec.h"

namespace shrink {

struct ImportedTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct ImportedModel {
  ModelSpec spec;  // input = the file's per-sample shape; classes = the output's width
  // By the names a SpecNet gives them: "<layer>.weight", ".bias", ".running_mean", ".running_var".
  std::map<std::string, ImportedTensor> tensors;
  int64_t opset = 0;
  std::string producer;  // e.g. "pytorch 1.13.1"
  // The normalization the graph applies to its input before any layer ((x - mean) / std, as a
  // model exported by shrink has it), one value per input channel; empty when it has none.
  std::vector<float> mean, std;
  std::vector<std::string> class_names;  // from the metadata of a model shrink exported
  // "Softmax" or "LogSoftmax" when the graph ended in one, left out: the model gives logits.
  std::string output_softmax;
  // The file's input is N,H,W,C (TensorFlow's layout, as tf2onnx writes Keras models) and the
  // graph transposes it first: the spec reads N,C,H,W, and the transposes are left out.
  bool input_channels_last = false;
};

// `input`: the per-sample shape C,H,W (or F) when the file leaves it open (or to check it).
ImportedModel import_onnx(const std::string& path, const std::vector<int64_t>& input = {});
// The ONNX op types import_onnx reads, sorted.
std::vector<std::string> supported_onnx_ops();
// Whether a path names an ONNX file (its extension is .onnx, any case), not a checkpoint or spec text.
bool looks_like_onnx(const std::string& path);

}  // namespace shrink
