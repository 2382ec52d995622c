// libFuzzer target: arbitrary bytes through the whole runtime — the file parser, Model::from_memory
// (every validation of docs/format.md and the plan compiled for batch 1) and, for models small
// enough to run quickly, one predict on a batch of 2. Each input must be accepted or refused with
// rt::Error; any other exception, crash, leak or out-of-bounds access is a finding (built with
// AddressSanitizer and UBSan by tests/fuzz/run).
//
// The custom mutator gets the fuzzer past the checksums: most mutations edit the metadata, the
// tensor table or the data in place (or the model's JSON and tensors, re-encoded by the writer)
// and rewrite the four checksums; some stay raw byte mutations, checksums left wrong.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/model_file.h"
#include "runtime/model_meta.h"
#include "shrink/runtime.hpp"
#include "tests/runtime/model_maker.h"
#include "spec/spec.h"

using namespace shrink;

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

constexpr int64_t kMaxPredictMacs = 4'000'000;  // per example; bigger models are loaded but not run

using Rng = std::minstd_rand;

// A random JSON value of a random type (numbers at the edges included).
nlohmann::json random_value(Rng& rng) {
  switch (rng() % 12) {
    case 0: return nullptr;
    case 1: return bool(rng() % 2);
    case 2: return 0;
    case 3: return -1;
    case 4: return int64_t(rng() % 64);
    case 5: return int64_t(1) << (rng() % 63);
    case 6: return 1e300;
    case 7: return -0.5;
    case 8: return std::ldexp(1.0, -int(rng() % 140));
    case 9: return "x";
    case 10: return nlohmann::json::array({1, 2});
    default: return nlohmann::json::object();
  }
}

// Every node of `j`, depth first.
void nodes(nlohmann::json& j, std::vector<nlohmann::json*>& out) {
  out.push_back(&j);
  if (j.is_structured())
    for (auto& child : j) nodes(child, out);
}

// Edits one token or number of a spec string.
std::string mutate_spec(const std::string& spec, Rng& rng) {
  std::vector<std::string> tokens;
  for (size_t at = 0; at < spec.size();) {
    size_t sp = spec.find(' ', at);
    if (sp == std::string::npos) sp = spec.size();
    tokens.push_back(spec.substr(at, sp - at));
    at = sp + 1;
  }
  if (tokens.empty()) return spec;
  static const char* extra[] = {"relu", "relu6", "gap", "flatten", "dropout(0.5)", "maxpool(2)", "avgpool(3,s=2,p=1)", "bn", "conv(4)",
                                "linear(3)", "dwconv(k=3)", "add(conv1)", "conv(4,k=1,s=2,p=0)", "conv(8,g=2)"};
  size_t i = rng() % tokens.size();
  switch (rng() % 5) {
    case 0: tokens.erase(tokens.begin() + static_cast<long>(i)); break;
    case 1: tokens.insert(tokens.begin() + static_cast<long>(i), tokens[i]); break;
    case 2: tokens.insert(tokens.begin() + static_cast<long>(i), extra[rng() % (sizeof(extra) / sizeof(extra[0]))]); break;
    case 3: std::swap(tokens[i], tokens[rng() % tokens.size()]); break;
    default: {  // a number inside the token
      std::string& t = tokens[i];
      size_t d = t.find_first_of("0123456789");
      if (d == std::string::npos) break;
      size_t e = t.find_first_not_of("0123456789", d);
      static const char* numbers[] = {"0", "1", "2", "3", "7", "16", "64", "1000", "16777216", "99999999999"};
      t = t.substr(0, d) + numbers[rng() % 10] + (e == std::string::npos ? "" : t.substr(e));
    }
  }
  std::string out;
  for (const auto& t : tokens) out += (out.empty() ? "" : " ") + t;
  return out;
}

// A valid file's metadata or tensors edited as values, then encoded again by the writer.
size_t mutate_model(uint8_t* data, size_t size, size_t max_size, Rng& rng) {
  rt::ModelFile f;
  try {
    f = rt::parse_model_file(data, size, "seed");
  } catch (const rt::Error&) {
    return 0;
  }
  nlohmann::json meta = f.meta;
  std::vector<ExportTensor> tensors;
  for (const auto& [name, t] : f.tensors) tensors.push_back({name, t.dtype, t.dims, std::vector<uint8_t>(t.bytes.begin(), t.bytes.end())});
  int edits = 1 + static_cast<int>(rng() % 3);
  for (int k = 0; k < edits; ++k) {
    unsigned what = rng() % 10;
    if (what < 3 && meta.contains("spec") && meta["spec"].is_string()) {
      meta["spec"] = mutate_spec(meta["spec"].get<std::string>(), rng);
    } else if (what < 7 || tensors.empty()) {
      std::vector<nlohmann::json*> all;
      nodes(meta, all);
      nlohmann::json* target = all[rng() % all.size()];
      if (target == &meta) continue;
      if (rng() % 3 == 0 && target->is_number()) *target = target->get<double>() * (rng() % 2 ? -1 : 3);
      else *target = random_value(rng);
    } else {
      ExportTensor& t = tensors[rng() % tensors.size()];
      switch (rng() % 6) {
        case 0: t.dims[rng() % t.dims.size()] += 1; break;
        case 1: t.dtype = static_cast<format::DType>(1 + rng() % 4); break;
        case 2: t.name += "x"; break;
        case 3: tensors.erase(tensors.begin() + static_cast<long>(&t - tensors.data())); break;
        case 4:
          if (t.bytes.size() >= 4) {
            static const float specials[] = {0.f, -1.f, 1e30f, -0.f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()};
            float v = specials[rng() % 6];
            std::memcpy(t.bytes.data() + 4 * (rng() % (t.bytes.size() / 4)), &v, 4);
          }
          break;
        default: {  // reshape with the same element count
          if (t.dims.size() >= 2 && t.dims[0] % 2 == 0) t.dims[0] /= 2, t.dims[1] *= 2;
        }
      }
    }
  }
  std::vector<uint8_t> out;
  try {
    static const char* storage[] = {"dense", "sparse", "auto"};
    out = encode_model_file(meta, tensors, storage[rng() % 3]);
  } catch (const std::exception&) {
    return 0;
  }
  if (out.size() > max_size) return 0;
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

// A new model: the file's spec edited (layers added, removed, swapped, numbers changed), the input
// shape perhaps changed, and random weights made for it by the test model maker, so that valid
// models of many shapes reach the engine (int8 or not, sparse or not, normalized or not).
size_t regenerate(uint8_t* data, size_t size, size_t max_size, Rng& rng) {
  std::string spec = "conv(4) relu gap linear(classes)";
  std::vector<int64_t> input{1, 8, 8};
  int64_t classes = 3;
  try {  // the seed's spec, input and classes when they have the right types and sizes
    auto meta = rt::parse_model_file(data, size, "seed").meta;
    if (meta.contains("spec") && meta["spec"].is_string()) spec = meta["spec"].get<std::string>();
    std::vector<int64_t> shape;
    if (meta.contains("input") && meta["input"].is_array())
      for (const auto& d : meta["input"])
        if (d.is_number_integer() && d.get<int64_t>() >= 1 && d.get<int64_t>() <= 64) shape.push_back(d.get<int64_t>());
    if (shape.size() == 1 || shape.size() == 3) input = shape;
    if (meta.contains("classes") && meta["classes"].is_number_integer() && meta["classes"].get<int64_t>() >= 1 && meta["classes"].get<int64_t>() <= 64)
      classes = meta["classes"].get<int64_t>();
  } catch (const rt::Error&) {
  }
  int edits = 1 + static_cast<int>(rng() % 3);
  for (int k = 0; k < edits; ++k) spec = mutate_spec(spec, rng);
  if (rng() % 4 == 0) {
    static const std::vector<int64_t> shapes[] = {{1, 8, 8}, {2, 6, 6}, {3, 5, 7}, {1, 1, 1}, {4, 12, 12}, {1, 3, 16}, {10}, {1}};
    input = shapes[rng() % 8];
  }
  if (rng() % 8 == 0) classes = 1 + static_cast<int64_t>(rng() % 6);
  try {  // small enough for the file size limit and a quick run
    ModelCost cost = total_cost(parse_spec(spec, input, classes));
    if (cost.params > static_cast<int64_t>(max_size / 4) || cost.macs > 4 * kMaxPredictMacs) return 0;
  } catch (const std::exception&) {
    return 0;
  }
  test::MakeOptions o;
  o.int8 = rng() % 2;
  o.sparsity = (rng() % 3) * 0.4;
  o.normalization = rng() % 2;
  o.storage = rng() % 2 ? "dense" : "auto";
  o.seed = rng();
  std::vector<uint8_t> out;
  try {
    auto parts = test::model_parts(spec, input, classes, o);
    if (rng() % 4 == 0 && parts.meta.contains("quantization")) {  // some int8 layers back to float
      auto& layers = parts.meta["quantization"]["int8_layers"];
      if (!layers.empty()) {
        std::string name = layers[rng() % layers.size()];
        ExportTensor* w = parts.find(weight_key(name));
        if (w) {
          layers.erase(std::find(layers.begin(), layers.end(), name));
          std::vector<uint8_t> f32(w->bytes.size() * 4);
          for (size_t k = 0; k < w->bytes.size(); ++k) {
            float v = 0.01f * static_cast<int8_t>(w->bytes[k]);
            std::memcpy(f32.data() + 4 * k, &v, 4);
          }
          w->dtype = format::DType::F32;
          w->bytes = f32;
          parts.tensors.erase(std::remove_if(parts.tensors.begin(), parts.tensors.end(), [&](const ExportTensor& t) { return t.name == weight_scale_key(name); }),
                              parts.tensors.end());
        }
      }
    }
    out = test::encode(parts, o.storage);
  } catch (const std::exception&) {  // the edited spec does not parse or fit
    return 0;
  }
  if (out.size() > max_size) return 0;
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

// libFuzzer's byte mutations inside one section (metadata, table, data or header), size kept;
// a shorter metadata result is padded with spaces (still JSON).
size_t mutate_section(uint8_t* data, size_t size, Rng& rng) {
  using namespace format;
  if (size < kHeaderSize) return 0;
  uint64_t meta_off = get_u64(data + kMetaOffsetAt), meta_size = get_u64(data + kMetaSizeAt);
  uint64_t table_off = get_u64(data + kTableOffsetAt), table_size = get_u64(data + kTensorCountAt) * kEntrySize;
  uint64_t data_off = get_u64(data + kDataOffsetAt), data_size = get_u64(data + kDataSizeAt);
  struct Region {
    uint64_t off, len;
    uint8_t pad;
  } regions[] = {{meta_off, meta_size, ' '}, {meta_off, meta_size, ' '}, {table_off, table_size, 0}, {table_off, table_size, 0},
                 {data_off, data_size, 0},   {0, kHeaderHashAt, 0}};
  Region r = regions[rng() % 6];
  if (r.len == 0 || r.off > size || r.len > size - r.off) return 0;
  size_t n = LLVMFuzzerMutate(data + r.off, r.len, r.len);
  if (n < r.len) std::memset(data + r.off + n, r.pad, r.len - n);
  return size;
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Rng rng(seed);
  unsigned mode = rng() % 20;
  size_t out = 0;
  if (mode < 5) out = regenerate(data, size, max_size, rng);
  else if (mode < 10) out = mutate_model(data, size, max_size, rng);
  else if (mode < 16) out = mutate_section(data, size, rng);
  if (out == 0) {  // raw bytes; most keep their broken checksums, some are fixed
    out = LLVMFuzzerMutate(data, size, max_size);
    if (rng() % 2) test::fix_checksums(data, out);
    return out;
  }
  test::fix_checksums(data, out);
  return out;
}

namespace {

// How far inputs got, printed at exit (tests/fuzz/run shows it): parsed, loaded, predicted.
struct Reach {
  uint64_t inputs = 0, parsed = 0, loaded = 0, predicted = 0;
  ~Reach() {
    std::fprintf(stderr, "fuzz_model reach: %llu inputs, %llu parsed, %llu loaded as models, %llu predicted\n", (unsigned long long)inputs,
                 (unsigned long long)parsed, (unsigned long long)loaded, (unsigned long long)predicted);
  }
} reach;

}  // namespace

// oneDNN keeps up to 1,024 primitives of earlier models in a process-wide cache; across thousands of
// random models that alone passes the fuzzer's memory limit, so the fuzzer turns it off.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  dnnl::set_primitive_cache_capacity(0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ++reach.inputs;
  try {
    rt::parse_model_file(data, size, "fuzz");
  } catch (const rt::Error&) {
    return 0;
  }
  ++reach.parsed;
  try {
    auto m = rt::Model::from_memory(data, size, 1, "fuzz");
    ++reach.loaded;
    auto meta = nlohmann::json::parse(m.metadata_json());
    auto spec = parse_spec(meta["spec"].get<std::string>(), m.input_shape(), m.classes());
    if (total_cost(spec).macs > kMaxPredictMacs) return 0;
    int64_t per = 1;
    for (int64_t d : m.input_shape()) per *= d;
    std::vector<float> x(static_cast<size_t>(2 * per));
    for (size_t k = 0; k < x.size(); ++k) x[k] = static_cast<float>(data[k % size]) / 64.0f - 2.0f;
    auto y = m.predict(x.data(), 2);
    if (y.size() != static_cast<size_t>(2 * m.classes())) __builtin_trap();
    ++reach.predicted;
  } catch (const rt::Error&) {
  }
  return 0;
}
