// The model file's metadata (docs/format.md) as one typed struct, and the names of the tensors a
// layer owns: the exporter writes them, the runtime checks and reads them, compare and the tests'
// model maker use them, so every key is spelled here once. No torch.
//
// to_json() writes the keys export has always written (nlohmann::json keeps keys sorted, so the
// text is the same byte for byte). from_json() is the runtime's check of the metadata: every field
// the runtime reads, with its type and range, and the model it describes (spec, shapes, the size
// caps of runtime/format.h); a problem is a ModelMetaError naming the field.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "spec/spec.h"

namespace shrink {

// Metadata that does not describe a model the runtime can run. The message names the field at
// fault; the runtime prefixes the file's name.
struct ModelMetaError : UserError {
  using UserError::UserError;
};

// Tensor names (docs/format.md: "Tensors").
inline std::string weight_key(const std::string& layer) { return layer + ".weight"; }
inline std::string bias_key(const std::string& layer) { return layer + ".bias"; }
inline std::string weight_scale_key(const std::string& layer) { return layer + ".weight_scale"; }  // int8 layers
// Whether a tensor holds an int8 layer's weight scales (compare leaves those out of its parameter counts).
bool is_weight_scale_key(const std::string& tensor);

// A quantization scale the runtime accepts (activation or weight): positive, finite, not absurd.
inline bool usable_scale(double s) { return s > 1e-30 && s < 1e30; }
inline constexpr const char* kModelFormat = "shrink-model";               // the value of "format"
inline constexpr const char* kQuantizationScheme = "docs/quantization.md v2";
// v1 (files written before v2) kept the bias in float and fused every activation into int8 units.
inline constexpr const char* kQuantizationSchemeV1 = "docs/quantization.md v1";
inline constexpr const char* kInputPoint = "input";                       // the activation point of the model's input

// The grid of one activation point: value = scale * q, q in s8 (signed) or u8.
struct ActivationScale {
  double scale = 0;
  bool is_signed = false;
};

// An int8 layer's bias in units of its int32 accumulator, b / (s_in * s_w[c]), rounded half to
// even and held inside the int32 range (scheme v2). The runtime adds it to the integer sum, the
// ONNX export stores it as the int32 bias ONNX Runtime's integer kernels take, and the simulation
// fake-quantizes the bias onto the same grid.
inline float accumulator_bias(float b, float s_in, float s_w) {
  return std::nearbyint(std::clamp(b / (s_in * s_w), -2147483648.0f, 2147483520.0f));  // the largest floats in int32's range
}

// Applied by the runtime to raw inputs: (x - mean[c]) / std[c]. Both empty: none.
struct Normalization {
  std::vector<float> mean, std;
};

struct Quantization {
  std::map<std::string, ActivationScale> activations;  // "input" or a layer name -> its grid
  std::vector<std::string> int8_layers;                // conv, linear and add layers run in int8, in the order written
  std::string scheme = kQuantizationScheme;
  // Since v2, a bias is rounded onto the int32 accumulator's grid (what ONNX Runtime's integer kernels need).
  bool bias_on_accumulator_grid() const { return scheme != kQuantizationSchemeV1; }
};

// Where the weights came from. Informational: the runtime never reads it, and from_json takes
// what is well-formed and ignores the rest (as the runtime always has).
struct Provenance {
  std::string checkpoint;                  // the checkpoint exported (or what made the weights)
  std::optional<std::string> stage;        // the job that wrote that checkpoint
  std::optional<double> test_accuracy;     // its test accuracy then
  std::optional<std::string> config_xxh3;  // xxh3-64 of its resolved config, 16 hex digits
  std::optional<uint64_t> seed;            // models with random weights (tests/runtime/model_maker.cpp)
};

// What valid metadata describes, worked out while checking it.
struct DescribedModel {
  ModelSpec spec;
  std::vector<LayerInfo> layers;  // spec.layers' shapes
  uint64_t activation_bytes = 0;  // per example, every layer's output (and the input) as f32
};

struct ModelMeta {
  std::string spec;  // canonical ModelSpec text, batchnorm folded
  std::vector<int64_t> input;
  int64_t classes = 0;
  std::string precision = "fp32";  // fp32 | int8
  Normalization normalization;
  std::vector<std::string> class_names;  // informational, like provenance
  // Informational too: the model was trained on 8-bit images scaled to [0,1], so an image file
  // becomes its input by decoding, converting to input[0] channels (1: grayscale, 3: RGB),
  // resizing to input[1] x input[2] (bilinear, as Pillow), dividing by 255 and normalizing.
  bool image_input = false;
  Provenance provenance;
  std::optional<Quantization> quantization;  // int8 models (from_json reads it only for them)

  nlohmann::json to_json() const;
  // Checks `meta` as the runtime does (docs/format.md, "What the runtime checks"); a problem is a
  // ModelMetaError. A JSON value of an unexpected type may also throw nlohmann::json::exception.
  static ModelMeta from_json(const nlohmann::json& meta, DescribedModel* described = nullptr);
};

// The message for a batchnorm left in a model file (the runtime runs only folded ones).

}  // namespace shrink
