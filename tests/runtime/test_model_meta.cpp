// ModelMeta (runtime/model_meta.h): the metadata's round trip through JSON, its checks with the
// runtime's messages, and the tensor names.
#include "runtime/model_meta.h"
#include "shrink/runtime.hpp"
#include "shrink_runtime.h"
#include "tests/runtime/helpers.h"

using namespace shrink;
using namespace shrink::test;

namespace {

// The message of the ModelMetaError from_json raises ("" when it accepts the metadata).
std::string meta_error(const nlohmann::json& meta) {
  try {
    ModelMeta::from_json(meta);
  } catch (const ModelMetaError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

CATCH_TEST_CASE("ModelMeta reads what it writes, and writes the model maker's metadata byte for byte", "[rt_meta]") {
  for (bool int8 : {false, true}) {
    CATCH_INFO((int8 ? "int8" : "fp32"));
    MakeOptions o{int8, 0, true, "dense", 3};
    ModelParts parts = model_parts(kResidual, {2, 8, 8}, 5, o);
    DescribedModel described;
    ModelMeta meta = ModelMeta::from_json(parts.meta, &described);
    CATCH_CHECK(meta.to_json().dump() == parts.meta.dump());
    CATCH_CHECK(meta.input == std::vector<int64_t>{2, 8, 8});
    CATCH_CHECK(meta.classes == 5);
    CATCH_CHECK(meta.precision == (int8 ? "int8" : "fp32"));
    CATCH_CHECK(meta.normalization.mean.size() == 2);
    CATCH_CHECK(meta.provenance.seed == std::optional<uint64_t>(3));
    CATCH_CHECK_FALSE(meta.provenance.stage.has_value());
    CATCH_CHECK(described.spec.to_string() == meta.spec);
    CATCH_CHECK(described.layers.size() == described.spec.layers.size());
    CATCH_CHECK(described.activation_bytes > 0);
    CATCH_REQUIRE(meta.quantization.has_value() == int8);
    if (int8) {
      const Quantization& q = *meta.quantization;
      CATCH_CHECK(q.activations.at(kInputPoint).is_signed);
      CATCH_CHECK(q.activations.at(kInputPoint).scale == 4.0 / 127);
      CATCH_CHECK_FALSE(q.activations.at("relu1").is_signed);
      CATCH_CHECK(q.int8_layers == std::vector<std::string>{"conv1", "conv2", "conv3", "add1", "linear1"});
      CATCH_CHECK(q.scheme == kQuantizationScheme);
    }
  }
  // Every field export writes, through the struct and back.
  ModelMeta m;
  m.spec = "conv1=conv(4,k=3,s=1,p=1,g=1,bias=1) relu1=relu gap1=gap linear1=linear(3,bias=1)";
  m.input = {1, 6, 6};
  m.classes = 3;
  m.precision = "int8";
  m.normalization = {{0.25f}, {0.5f}};
  m.class_names = {"a", "b", "c"};
  m.image_input = true;
  m.provenance = {"runs/x/checkpoints/best.pt", std::string("train"), 0.875, std::string("0123456789abcdef"), std::nullopt};
  m.quantization = Quantization{{{"input", {0.03, true}}, {"relu1", {0.02, false}}}, {"conv1", "linear1"}, kQuantizationScheme};
  nlohmann::json j = m.to_json();
  CATCH_CHECK(j.dump() ==
              R"J({"class_names":["a","b","c"],"classes":3,"format":"shrink-model","image_input":true,"input":[1,6,6],"normalization":{"mean":[0.25],"std":[0.5]},)J"
              R"J("precision":"int8","provenance":{"checkpoint":"runs/x/checkpoints/best.pt","config_xxh3":"0123456789abcdef","stage":"train","test_accuracy":0.875},)J"
              R"J("quantization":{"activations":{"input":{"scale":0.03,"signed":true},"relu1":{"scale":0.02,"signed":false}},"int8_layers":["conv1","linear1"],)J"
              R"J("scheme":"docs/quantization.md v2"},"spec":"conv1=conv(4,k=3,s=1,p=1,g=1,bias=1) relu1=relu gap1=gap linear1=linear(3,bias=1)"})J");
  ModelMeta back = ModelMeta::from_json(j);
  CATCH_CHECK(back.to_json() == j);
  CATCH_CHECK(back.class_names == m.class_names);
  CATCH_CHECK(back.image_input);
  CATCH_CHECK(back.provenance.test_accuracy == std::optional<double>(0.875));
  CATCH_CHECK(back.provenance.config_xxh3 == m.provenance.config_xxh3);
}

CATCH_TEST_CASE("ModelMeta::from_json refuses a bad field with the message Model::load gives", "[rt_meta]") {
  ModelParts fp32 = model_parts(kResidual, {2, 8, 8}, 5, {false, 0, true, "dense", 4});
  ModelParts int8 = model_parts(kResidual, {2, 8, 8}, 5, {true, 0, false, "dense", 5});
  struct Case {
    nlohmann::json meta;
    const char* expect;
  };
  std::vector<Case> cases;
  auto edit = [&](const ModelParts& p, const std::function<void(nlohmann::json&)>& f, const char* expect) {
    nlohmann::json m = p.meta;
    f(m);
    cases.push_back({m, expect});
  };
  edit(fp32, [](auto& m) { m.erase("format"); }, "metadata does not describe a shrink model");
  edit(fp32, [](auto& m) { m.erase("input"); }, "metadata is incomplete: no \"input\"");
  edit(fp32, [](auto& m) { m["classes"] = "five"; }, "metadata: \"classes\" must be an integer from 1 to 16777216");
  edit(fp32, [](auto& m) { m["input"] = {2, 0, 8}; }, "metadata: \"input\" has a bad dimension 0");
  edit(fp32, [](auto& m) { m["precision"] = "fp16"; }, "unknown precision fp16");
  edit(fp32, [](auto& m) { m["normalization"]["std"][1] = 0; }, "normalization: a std is zero");
  edit(int8, [](auto& m) { m["quantization"]["int8_layers"].push_back("maxpool1"); }, "int8 layer maxpool1 is a maxpool (only conv, linear, add, mul and concat run in int8)");
  edit(int8, [](auto& m) { m["quantization"]["activations"]["relu1"]["scale"] = 0; }, "activation scale of relu1 is not a positive number");
  edit(int8, [](auto& m) { m.erase("quantization"); }, "metadata is incomplete: an int8 model needs \"quantization\"");
  for (const auto& c : cases) {
    CATCH_INFO(c.meta.dump());
    CATCH_CHECK(meta_error(c.meta) == c.expect);
    // The runtime says the same, after the file's name.
    ModelParts parts = c.meta.value("precision", "") == "int8" ? int8 : fp32;
    parts.meta = c.meta;
    auto bytes = encode(parts);
    std::string load;
    try {
      rt::Model::from_memory(bytes.data(), bytes.size(), 1, "m.shrink");
    } catch (const rt::Error& e) {
      load = e.what();
    }
    CATCH_CHECK(load == std::string("m.shrink: ") + c.expect);
  }
  // Informational fields are not checked: a file without them, or with odd ones, still loads.
  nlohmann::json odd = fp32.meta;
  odd.erase("provenance");
  odd["class_names"] = 3;
  CATCH_CHECK(meta_error(odd).empty());
  CATCH_CHECK(ModelMeta::from_json(odd).provenance.checkpoint.empty());
}

CATCH_TEST_CASE("tensor names come from one place", "[rt_meta]") {
  CATCH_CHECK(weight_key("conv1") == "conv1.weight");
  CATCH_CHECK(bias_key("conv1") == "conv1.bias");
  CATCH_CHECK(weight_scale_key("conv1") == "conv1.weight_scale");
  CATCH_CHECK(is_weight_scale_key("conv1.weight_scale"));
  CATCH_CHECK_FALSE(is_weight_scale_key(".weight_scale"));
  CATCH_CHECK_FALSE(is_weight_scale_key("conv1.weight"));
  CATCH_CHECK_FALSE(is_weight_scale_key("conv1.weight_scale.x"));
}

CATCH_TEST_CASE("the C++ and C APIs expose the class names and the stored preprocessing", "[rt_meta]") {
  RtTempDir dir;
  MakeOptions o;
  o.normalization = true;
  ModelParts parts = model_parts("conv(4) relu gap linear(classes)", {3, 6, 6}, 3, o);
  for (bool named : {false, true}) {
    if (named) parts.meta["class_names"] = {"cat", "dog", "fish"}, parts.meta["image_input"] = true;
    write_bytes(dir / "m.shrink", encode(parts));
    auto m = rt::Model::load(dir / "m.shrink", 1);
    CATCH_CHECK(m.class_names() == (named ? std::vector<std::string>{"cat", "dog", "fish"} : std::vector<std::string>{}));
    const auto p = m.preprocessing();
    CATCH_CHECK(p.image_input == named);
    CATCH_CHECK(p.mean == parts.meta["normalization"]["mean"].get<std::vector<float>>());
    CATCH_CHECK(p.std == parts.meta["normalization"]["std"].get<std::vector<float>>());
    shrink_model* c = nullptr;
    CATCH_REQUIRE(shrink_model_load((dir / "m.shrink").c_str(), 1, &c) == 0);
    CATCH_CHECK(shrink_model_image_input(c) == (named ? 1 : 0));
    CATCH_CHECK(shrink_model_class_name(c, 3) == nullptr);
    if (named) CATCH_CHECK(std::string(shrink_model_class_name(c, 1)) == "dog");
    else CATCH_CHECK(shrink_model_class_name(c, 1) == nullptr);
    float mean[3] = {0, 0, 0}, std[3] = {0, 0, 0};
    CATCH_CHECK(shrink_model_normalization(c, mean, std, 3) == 3);
    CATCH_CHECK(mean[2] == p.mean[2]);
    CATCH_CHECK(std[2] == p.std[2]);
    shrink_model_free(c);
  }
  // A failed load leaves no handle, and the queries answer 0 or NULL for none (they crashed).
  shrink_model* c = reinterpret_cast<shrink_model*>(1);
  CATCH_CHECK(shrink_model_load((dir / "none.shrink").c_str(), 1, &c) != 0);
  CATCH_CHECK(c == nullptr);
  CATCH_CHECK(std::string(shrink_last_error()).find("none.shrink") != std::string::npos);
  CATCH_CHECK(shrink_model_input_size(nullptr) == 0);
  CATCH_CHECK(shrink_model_classes(nullptr) == 0);
  CATCH_CHECK(shrink_model_class_name(nullptr, 0) == nullptr);
  CATCH_CHECK(shrink_model_image_input(nullptr) == 0);
  CATCH_CHECK(shrink_model_normalization(nullptr, nullptr, nullptr, 3) == 0);
}
