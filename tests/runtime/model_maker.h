// Valid .shrink files with random weights for any ModelSpec, written by the torch-free writer
// (runtime/model_writer.h): what the runtime tests, the fuzzer's seed corpus and the load
// measurements use instead of a trained, exported model. No torch.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model_writer.h"

namespace shrink::test {

struct MakeOptions {
  bool int8 = false;             // every conv/linear (and add) in int8, with activation scales for every point
  double sparsity = 0;           // fraction of weights set to zero
  bool normalization = false;    // a mean and std per input channel
  std::string storage = "dense"; // dense, sparse or auto
  uint64_t seed = 1;
  // false: as the exporter writes int8 models (scheme v2), no point between a conv or linear and
  // the ReLU or ReLU6 after it (which then runs as the layer's post-op)
  bool point_before_clamp = true;
};

// The metadata and tensors of a model, for tests that damage one piece before encoding.
struct ModelParts {
  nlohmann::json meta;
  std::vector<ExportTensor> tensors;
  ExportTensor* find(const std::string& name);
};

ModelParts model_parts(const std::string& spec, const std::vector<int64_t>& input, int64_t classes, const MakeOptions& o = {});
std::vector<uint8_t> encode(const ModelParts& parts, const std::string& storage = "dense");
std::vector<uint8_t> make_model(const std::string& spec, const std::vector<int64_t>& input, int64_t classes, const MakeOptions& o = {});

// Rewrites the four checksums of an encoded file after an edit (sections taken from its header,
// clamped to the file), so a damaged file gets past them to the check under test.
void fix_checksums(uint8_t* data, size_t size);

// Deterministic inputs: n examples of `per` floats in [0, 1).
std::vector<float> random_inputs(int64_t n, int64_t per, uint64_t seed);

}  // namespace shrink::test
