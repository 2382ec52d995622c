#include "tests/helpers.h"
#include "common/error.h"
#include "train/fold.h"
#include "train/model.h"
#include "spec/spec.h"

using namespace shrink;

namespace {
int64_t total_params(const ModelSpec& s) { return total_cost(s).params; }
int64_t total_macs(const ModelSpec& s) { return total_cost(s).macs; }
std::string error_of(const std::string& text, std::vector<int64_t> input = {1, 16, 16}) {
  try {
    parse_spec(text, input, 10);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

CATCH_TEST_CASE("presets parse and have the documented sizes", "[spec]") {
  auto s = parse_spec("usps_student", {1, 16, 16}, 10);
  CATCH_CHECK(s.layers.size() == 13);
  CATCH_CHECK(s.layers[0].name == "conv1");
  CATCH_CHECK_FALSE(s.layers[0].bias);  // conv before bn: no bias
  CATCH_CHECK(s.layers.back().bias);
  // conv 1*16*9 + bn 32 + conv 16*32*9 + bn 64 + conv 32*64*9 + bn 128 + linear 64*10+10
  CATCH_CHECK(total_params(s) == 144 + 32 + 4608 + 64 + 18432 + 128 + 650);
  CATCH_CHECK(total_macs(s) == 16 * 16 * 16 * 9 + 8 * 8 * 32 * 16 * 9 + 4 * 4 * 64 * 32 * 9 + 640);
  for (const auto& name : preset_names()) {
    auto input = name == "resnet20" ? std::vector<int64_t>{3, 32, 32} : std::vector<int64_t>{1, 16, 16};
    CATCH_CHECK_NOTHROW(parse_spec(name, input, 10));
  }
  CATCH_CHECK(total_params(parse_spec("resnet20", {3, 32, 32}, 10)) > 260000);
}

CATCH_TEST_CASE("to_string round-trips to the same spec", "[spec]") {
  for (const auto& text : {std::string("usps_teacher"), std::string("resnet20"), std::string("lenet5"),
                           std::string("conv(8,5,s=2,bias=1) relu6 dwconv(k=3) a=bn dropout(0.25) flatten linear(classes,bias=0)"),
                           std::string("conv(8) hardswish avgpool(2) hardswish gap linear(classes)"),
                           std::string("conv(8) sigmoid gap linear(classes)")}) {
    auto input = text == "resnet20" ? std::vector<int64_t>{3, 32, 32} : std::vector<int64_t>{1, 16, 16};
    auto s1 = parse_spec(text, input, 10);
    auto s2 = parse_spec(s1.to_string(), input, 10);
    CATCH_CHECK(s1.to_string() == s2.to_string());
    CATCH_CHECK(total_params(s1) == total_params(s2));
  }
}

CATCH_TEST_CASE("parse errors name the column and token", "[spec]") {
  CATCH_CHECK(error_of("conv(16) bn reluu gap linear(10)").find("column 13 ('reluu')") != std::string::npos);
  CATCH_CHECK(error_of("conv(16,q=2) gap linear(10)").find("unknown argument 'q'") != std::string::npos);
  CATCH_CHECK(error_of("conv(16 gap linear(10)").find("unbalanced") != std::string::npos);
  CATCH_CHECK(error_of("conv(x) gap linear(10)").find("not an integer") != std::string::npos);
  CATCH_CHECK(error_of("a=conv(16) a=bn gap linear(10)").find("used twice") != std::string::npos);
  CATCH_CHECK(error_of("conv(16) add(nothere) gap linear(10)").find("no layer named 'nothere'") != std::string::npos);
  CATCH_CHECK(error_of("conv(16) gap linear(7)").find("10 classes") != std::string::npos);
  CATCH_CHECK(error_of("conv(16) maxpool(32) gap linear(10)").find("larger than") != std::string::npos);
  CATCH_CHECK(error_of("c=conv(16) conv(8) add(c) gap linear(10)").find("shapes differ") != std::string::npos);
  CATCH_CHECK(error_of("").find("empty") != std::string::npos);
  // Sizes whose products do not fit 64 bits are an error, not an overflow (found by the fuzzer's UBSan).
  CATCH_CHECK(error_of("conv(16777216,k=1,p=16777216) gap linear(10)", {1, 1, 1}).find("sizes too large") != std::string::npos);
  CATCH_CHECK(error_of("flatten linear(10)", {1 << 20, 1 << 20, 1 << 20}).find("sizes too large") != std::string::npos);
}

CATCH_TEST_CASE("built module matches the spec's shapes and parameter count", "[spec][model]") {
  for (const auto& name : {"usps_teacher", "usps_student", "lenet5", "mlp_300_100"}) {
    SpecNet net(parse_spec(name, {1, 16, 16}, 10));
    int64_t params = 0;
    for (const auto& p : net->parameters()) params += p.numel();
    CATCH_CHECK(params == total_params(net->spec()));
    CATCH_CHECK(net->forward(torch::randn({3, 1, 16, 16})).sizes() == torch::IntArrayRef({3, 10}));
  }
  SpecNet res(parse_spec("resnet20", {3, 32, 32}, 10));
  CATCH_CHECK(res->forward(torch::randn({2, 3, 32, 32})).sizes() == torch::IntArrayRef({2, 10}));
  CATCH_CHECK(res->named_parameters().contains("b7pc.weight"));  // projection shortcut of stage 3
}

CATCH_TEST_CASE("residual add computes the sum of its inputs", "[spec][model]") {
  SpecNet net(parse_spec("a=conv(4,1,bias=1) b=conv(4,1,bias=1) s=add(a) flatten linear(classes)", {4, 2, 2}, 3));
  net->eval();
  auto x = torch::randn({2, 4, 2, 2});
  std::map<std::string, torch::Tensor> taps;
  net->forward_with(x, {"a", "b", "s"}, taps);
  CATCH_CHECK(torch::allclose(taps["s"], taps["a"] + taps["b"]));
  auto conv_a = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(net->layer_module("a"));
  CATCH_CHECK(torch::allclose(taps["a"], conv_a->forward(x)));
}

CATCH_TEST_CASE("batchnorm folding gives the same outputs in eval mode", "[spec][fold]") {
  SpecNet net(parse_spec("c=conv(8) b=bn relu conv(8,bias=1) bn r=relu add(c) gap linear(16) bn linear(classes)", {3, 8, 8}, 5));
  torch::NoGradGuard no_grad;
  for (auto& b : net->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-1, 1);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2);
  }
  for (auto& p : net->named_parameters()) p.value().uniform_(-1, 1);
  net->eval();
  auto folded = fold_batchnorm(net);
  // conv1's output also feeds the add, so its batchnorm stays; the other two fold.
  CATCH_CHECK(folded.model->spec().layers.size() == net->spec().layers.size() - 2);
  CATCH_CHECK(folded.renamed.count("bn2"));
  CATCH_CHECK(folded.renamed.at("bn3") == "linear1");
  auto x = torch::randn({4, 3, 8, 8});
  CATCH_CHECK(torch::allclose(folded.model->forward(x), net->forward(x), 1e-4, 1e-5));
}
