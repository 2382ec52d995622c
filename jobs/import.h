// `shrink import`: an ONNX model as a shrink checkpoint (onnx/import.h reads the graph), with the
// normalization and class names ONNX does not carry; from then on an ordinary model. An fp32
// .shrink file (what `shrink export` wrote) imports the same way: its batchnorm-folded spec and
// weights, with the normalization, class names and image_input it records.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace shrink {

struct ImportRequest {
  std::string file, out;                 // the ONNX or .shrink file; the checkpoint to write
  std::vector<int64_t> input;            // C,H,W when the file leaves it open (or to check it)
  int64_t classes = 0;                   // > 0 and different from the model's: a fresh classifier of this width
  std::vector<double> mean, std;         // per-channel input normalization the model was trained with
  std::string class_names;               // a file with one class name per line
  int64_t seed = 0;                      // initialization of a fresh classifier
  bool image_input = false;              // trained on 8-bit images scaled to [0,1] (docs/format.md, image_input)
  // The file's input is shrink's times this (255: a model trained on pixel values 0..255, where
  // shrink's image loaders and shrink-run give 0..1): the normalization is rescaled to match.
  double input_scale = 1.0;
};

// Writes the checkpoint; returns what it did (layers, params, a replaced head) for the user.
std::string import_model(const ImportRequest& request);

// `file` imported with the defaults into `checkpoint`, unless that exists (an earlier run's; name
// it by the file's hash). A problem is a UserError starting with `who` ("teacher FILE: ...").
// Returns whether it imported now.
bool import_once(const std::string& file, const std::string& checkpoint, const std::string& who);

}  // namespace shrink
