#include "tests/runtime/model_maker.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <random>

#include "runtime/format.h"
#include "runtime/model_meta.h"
#include "spec/spec.h"

namespace shrink::test {

ExportTensor* ModelParts::find(const std::string& name) {
  for (auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {

ExportTensor f32_tensor(const std::string& name, std::vector<int64_t> dims, const std::vector<float>& v) {
  ExportTensor t{name, format::DType::F32, std::move(dims), {}};
  t.bytes.resize(v.size() * 4);
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

// Batchnorm folded into the conv or linear before it, as the exporter writes models (train/fold.cpp).
ModelSpec folded(const ModelSpec& spec) {
  ModelSpec out = spec;
  out.layers.clear();
  std::map<std::string, std::string> renamed;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    Layer L = spec.layers[i];
    for (auto& in : L.inputs)
      if (renamed.count(in)) in = renamed[in];
    bool fold = has_weights(L.type) && i + 1 < spec.layers.size() &&
                spec.layers[i + 1].type == LayerType::BatchNorm && spec.layers[i + 1].inputs == std::vector<std::string>{spec.layers[i].name};
    if (fold) {
      L.bias = true;
      renamed[spec.layers[i + 1].name] = L.name;
      ++i;
    }
    out.layers.push_back(L);
  }
  return parse_spec(out.to_string(), spec.input, spec.classes);
}

// Whether a layer's output is never negative (its activation point is then u8): after a kind that
// never is (the kNonNegative trait), and after what keeps its input's values (pooling, flatten,
// dropout) when that input is.
bool unsigned_output(LayerType type, bool input_unsigned) {
  if (never_negative(type)) return true;
  switch (type) {
    case LayerType::MaxPool:
    case LayerType::AvgPool:
    case LayerType::GlobalAvgPool:
    case LayerType::GlobalMaxPool:
    case LayerType::Flatten:
    case LayerType::Unflatten:
    case LayerType::Dropout:
    case LayerType::Shuffle:
    case LayerType::Slice: return input_unsigned;
    case LayerType::Conv2d:
    case LayerType::Linear:
    case LayerType::BatchNorm:
    case LayerType::ReLU:
    case LayerType::ReLU6:
    case LayerType::HardSwish:
    case LayerType::LeakyReLU:
    case LayerType::Tanh:
    case LayerType::Elu:
    case LayerType::Softplus:
    case LayerType::Mish:
    case LayerType::Gelu:
    case LayerType::PReLU:
    case LayerType::Sigmoid:
    case LayerType::HardSigmoid:
    case LayerType::Add:
    case LayerType::Mul:
    case LayerType::Concat: return false;  // (ReLU, ReLU6, sigmoid, hardsigmoid: never negative, above)
  }
  return false;
}

}  // namespace

ModelParts model_parts(const std::string& text, const std::vector<int64_t>& input, int64_t classes, const MakeOptions& o) {
  ModelSpec spec = folded(parse_spec(text, input, classes));
  auto info = analyze(spec);
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  std::uniform_real_distribution<double> coin(0, 1);
  ModelParts parts;
  ModelMeta meta;
  Quantization quantization;
  std::vector<bool> is_unsigned(spec.layers.size(), false);
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    int in_index = L.inputs[0].empty() ? -1 : spec.index_of(L.inputs[0]);
    is_unsigned[i] = unsigned_output(L.type, in_index >= 0 && is_unsigned[in_index]);
    const bool clamp_next = i + 1 < spec.layers.size() && has_weights(L.type) && spec.layers[i + 1].inputs[0] == L.name &&
                            (spec.layers[i + 1].type == LayerType::ReLU || spec.layers[i + 1].type == LayerType::ReLU6);
    if (o.int8 && i + 1 < spec.layers.size() && (o.point_before_clamp || !clamp_next)) quantization.activations[L.name] = {0.05, !is_unsigned[i]};
    if (o.int8 && runs_int8(L.type) && !has_weights(L.type)) quantization.int8_layers.push_back(L.name);  // add, mul, concat
    int64_t out = info[i].out_shape[0];
    if (L.type == LayerType::PReLU) {  // slopes of both signs
      std::vector<float> slope(static_cast<size_t>(info[i].weight_shape[0]));
      for (float& s : slope) s = 0.5f * unit(rng);
      parts.tensors.push_back(f32_tensor(weight_key(L.name), info[i].weight_shape, slope));
    }
    if (L.type == LayerType::BatchNorm) {  // one that could not be folded: a scale and a shift per channel
      std::vector<float> scale(out), shift(out);
      for (int64_t c = 0; c < out; ++c) scale[c] = 1 + 0.5f * unit(rng), shift[c] = 0.1f * unit(rng);
      parts.tensors.push_back(f32_tensor(weight_key(L.name), {out}, scale));
      parts.tensors.push_back(f32_tensor(bias_key(L.name), {out}, shift));
    }
    if (!has_weights(L.type)) continue;
    const std::vector<int64_t>& dims = info[i].weight_shape;
    int64_t fan_in = std::accumulate(dims.begin() + 1, dims.end(), int64_t(1), std::multiplies<int64_t>());
    float bound = std::sqrt(6.0f / static_cast<float>(fan_in));
    std::vector<float> w(static_cast<size_t>(out * fan_in));
    for (auto& v : w) v = coin(rng) < o.sparsity ? 0.f : bound * unit(rng);
    if (o.int8) {
      std::vector<float> scales(out);
      ExportTensor q{weight_key(L.name), format::DType::S8, dims, std::vector<uint8_t>(w.size())};
      for (int64_t c = 0; c < out; ++c) {
        float m = 0;
        for (int64_t k = 0; k < fan_in; ++k) m = std::max(m, std::fabs(w[c * fan_in + k]));
        scales[c] = std::max(m, 1e-6f) / 127;
        for (int64_t k = 0; k < fan_in; ++k)
          q.bytes[c * fan_in + k] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(std::round(w[c * fan_in + k] / scales[c]), -127.f, 127.f)));
      }
      parts.tensors.push_back(q);
      parts.tensors.push_back(f32_tensor(weight_scale_key(L.name), {out}, scales));
      quantization.int8_layers.push_back(L.name);
    } else {
      parts.tensors.push_back(f32_tensor(weight_key(L.name), dims, w));
    }
    if (L.bias) {
      std::vector<float> b(out);
      for (auto& v : b) v = 0.1f * unit(rng);
      parts.tensors.push_back(f32_tensor(bias_key(L.name), {out}, b));
    }
  }
  if (o.normalization && spec.input.size() == 3)
    for (int64_t c = 0; c < spec.input[0]; ++c)
      meta.normalization.mean.push_back(0.5f + 0.1f * unit(rng)), meta.normalization.std.push_back(0.25f + 0.05f * unit(rng));
  meta.spec = spec.to_string();
  meta.input = spec.input;
  meta.classes = spec.classes;
  meta.precision = o.int8 ? "int8" : "fp32";
  meta.provenance.checkpoint = "random weights (tests/runtime/model_maker.cpp)";
  meta.provenance.seed = o.seed;
  if (o.int8) {
    quantization.activations[kInputPoint] = {4.0 / 127, true};
    meta.quantization = quantization;
  }
  parts.meta = meta.to_json();
  return parts;
}

std::vector<uint8_t> encode(const ModelParts& parts, const std::string& storage) { return encode_model_file(parts.meta, parts.tensors, storage); }

std::vector<uint8_t> make_model(const std::string& spec, const std::vector<int64_t>& input, int64_t classes, const MakeOptions& o) {
  return encode(model_parts(spec, input, classes, o), o.storage);
}

void fix_checksums(uint8_t* b, size_t size) {
  using namespace format;
  if (size < kHeaderSize) return;
  auto hash = [&](uint64_t off, uint64_t n) -> uint64_t {
    if (off > size) return 0;
    n = std::min<uint64_t>(n, size - off);
    return XXH3_64bits(b + off, n);
  };
  uint64_t count = get_u64(b + kTensorCountAt);
  put_u64(b + kMetaHashAt, hash(get_u64(b + kMetaOffsetAt), get_u64(b + kMetaSizeAt)));
  put_u64(b + kTableHashAt, hash(get_u64(b + kTableOffsetAt), count > size ? size : count * kEntrySize));
  put_u64(b + kDataHashAt, hash(get_u64(b + kDataOffsetAt), get_u64(b + kDataSizeAt)));
  put_u64(b + kHeaderHashAt, XXH3_64bits(b, kHeaderHashAt));
}

std::vector<float> random_inputs(int64_t n, int64_t per, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n * per));
  for (auto& v : x) v = u(rng);
  return x;
}

}  // namespace shrink::test
