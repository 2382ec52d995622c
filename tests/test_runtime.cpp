// The model file and the runtime against LibTorch (the runtime itself never sees torch).
#include "tests/helpers.h"
#include "common/error.h"
#include "export/export.h"
#include "runtime/model_writer.h"
#include "quantize/qnet.h"
#include "runtime/model_file.h"
#include "shrink/runtime.hpp"
#include "shrink_runtime.h"
#include "train/checkpoint.h"

using namespace shrink;
using shrink::test::TempDir;

namespace {

// A model of `text` with random weights (seed 3) on one-channel size x size input, calibrated to
// int8 on random batches; its file is DIR/q.shrink.
QuantNet random_int8(const TempDir& dir, const std::string& text, int64_t size, int64_t classes) {
  torch::manual_seed(3);
  auto spec = parse_spec(text, {1, size, size}, classes);
  SpecNet fp(spec);
  save_checkpoint(dir / "fp.pt", fp, nullptr, {{"epoch", 0}});
  return test::calibrated_int8(dir, spec, dir / "fp.pt", QuantSettings{}, torch::randn({64, 1, size, size}));
}

// The runtime's int8 logits of DIR/q.shrink on x are the simulation's, up to float rounding.
void check_logits_equal(const TempDir& dir, QuantNet& q, const torch::Tensor& x) {
  torch::Tensor sim;
  {
    torch::NoGradGuard no_grad;
    q->eval();
    sim = q->forward(x);
  }
  auto got = test::run_runtime(dir / "q.shrink", x);
  CATCH_CHECK((got - sim).abs().max().item<double>() <= 1e-6 * sim.abs().max().item<double>());
}

}  // namespace

CATCH_TEST_CASE("runtime fp32 matches LibTorch on every op", "[runtime][parity]") {
  TempDir dir;
  struct Case {
    std::string spec;
    std::vector<int64_t> input;
  } cases[] = {
      {"conv(8) bn relu maxpool(2) conv(16,k=5) bn relu6 gap linear(classes)", {3, 12, 12}},
      // one input channel: a first conv of 16 or 8 outputs may run oneDNN's NCHW-in, blocked-out kernel
      {"conv(16) bn relu maxpool(2) conv(8) bn relu gap linear(classes)", {1, 12, 12}},
      {"conv(8,s=2) relu conv(16) relu gap linear(classes)", {1, 12, 12}},
      {"conv(8,s=2,bias=1) relu dwconv(k=3) bn relu conv(16,k=1,g=2) avgpool(3,s=2,p=1) flatten dropout(0.3) linear(20) relu linear(classes)", {4, 11, 11}},
      {"stem=conv(8) bn r0=relu conv(8) bn relu conv(8) b=bn add(r0) relu conv(12,s=2) bn relu linear(classes)", {2, 8, 8}},
      {"linear(32) bn relu linear(classes)", {24}},
      {"conv(8) bn hardswish maxpool(2) h=hardswish conv(8) bn add(h) hardswish avgpool(2) hardswish linear(classes)", {3, 12, 12}},
      {"conv(8) bn sigmoid maxpool(2) conv(8) bn s=sigmoid conv(8) add(s) sigmoid avgpool(2) sigmoid linear(classes)", {3, 12, 12}},
      // dilation, asymmetric padding, ceil-mode pools, an average without the padding
      {"conv(8,d=2) bn relu conv(8,s=2,p=0,pl=1,pb=1,pr=2) relu maxpool(3,s=2,p=1,ceil=1) avgpool(3,s=2,p=1,include_pad=0) linear(classes)", {3, 17, 17}},
      // squeeze-excite (gap keeping dims, hardsigmoid, mul broadcasting C,1,1) and hardsigmoid alone
      {"conv(8) bn x=relu gap(keep=1) conv(4,k=1,bias=1) relu conv(8,k=1,bias=1) hs=hardsigmoid mul(x,hs) maxpool(2) hardsigmoid(alpha=0.2,beta=0.5) gap linear(classes)", {3, 10, 10}},
      // concat of branches and of the model input, SiLU as sigmoid and mul
      {"a=conv(4) ra=relu b=conv(6,from=input) bn rb=relu6 cat=concat(ra,rb,input) c=conv(8,k=1) s=sigmoid mul(c,s) avgpool(2,ceil=1,include_pad=0) linear(classes)", {3, 9, 9}},
      // batchnorm that cannot be folded (after an activation, a pool, on features)
      {"conv(8) relu bn maxpool(2) bn conv(8) bn relu gap linear(16) relu bn linear(classes)", {3, 8, 8}},
      // a ShuffleNetV2 unit: half the channels pass, half go through a branch, then a channel shuffle
      {test::kShuffleUnit, {3, 10, 10}},
      // a relu on a slice (a view of its input in LibTorch) must not overwrite what others read: a
      // conv's output, the model input
      {"c=conv(8) slice(0,4) r=relu cat=concat(c,r) slice(2,6,from=input) s=relu i=conv(4,k=1,from=input) concat(cat,s,i) gap linear(classes)", {6, 8, 8}},
      {test::kNonSquareKernels, {3, 11, 9}},
      {test::kUnequalStridesAndPools, {3, 14, 12}},
      {test::kSqueezeExciteLinear, {3, 8, 8}},
      {"conv(8) bn leaky_relu maxpool(2) l=leaky_relu(0.2) conv(8) bn add(l) leaky_relu(0.3) avgpool(2) leaky_relu linear(classes)", {3, 12, 12}},
      {"conv(8) bn tanh maxpool(2) t=tanh conv(8) bn elu add(t) elu(0.5) avgpool(2) tanh linear(16) elu linear(classes)", {3, 12, 12}},
      {"conv(8) bn mish maxpool(2) m=mish conv(8) bn softplus add(m) mish linear(16) softplus linear(classes)", {3, 12, 12}},
      {"conv(8) bn prelu maxpool(2) p=prelu(per_channel=1) conv(8) bn add(p) prelu(per_channel=1) gap linear(16) prelu(per_channel=1) linear(classes)", {3, 12, 12}},
      {"conv(8) bn gelu maxpool(2) g=gelu conv(8) bn gelu add(g) avgpool(2) gelu linear(16) gelu linear(classes)", {3, 12, 12}},
      // fastai's head: global max and average pools joined, batchnorm on the features
      {"conv(8) bn x=relu m=gmp(keep=1) a=gap(keep=1,from=x) concat(m,a) flatten bn linear(8) relu gmp(from=x) linear(classes)", {3, 9, 9}},
  };
  int k = 0;
  for (const auto& c : cases) {
    CATCH_INFO(c.spec);
    std::string ckpt = test::random_checkpoint(dir, "m" + std::to_string(k) + ".pt", c.spec, c.input, 5);
    std::string model = dir / ("m" + std::to_string(k++) + ".shrink");
    export_model(ckpt, model, {});
    auto net = load_checkpoint(ckpt).model;
    net->eval();
    std::vector<int64_t> shape{7};
    shape.insert(shape.end(), c.input.begin(), c.input.end());
    auto x = torch::randn(shape);
    auto expect = net->forward(x);
    auto got = test::run_runtime(model, x);
    double rel = ((got - expect).abs().max() / expect.abs().max()).item<double>();
    CATCH_CHECK(rel < 1e-4);
    auto one = test::run_runtime(model, x.narrow(0, 2, 1));  // another batch size
    CATCH_CHECK(((one - expect.narrow(0, 2, 1)).abs().max() / expect.abs().max()).item<double>() < 1e-4);
  }
}

CATCH_TEST_CASE("runtime named outputs: the layers the compiled model forms, as LibTorch computes them", "[runtime]") {
  TempDir dir;
  const std::string ckpt = test::random_checkpoint(dir, "m.pt", "conv(8) bn relu maxpool(2) conv(8) bn r2=relu gap linear(classes)", {3, 12, 12}, 5);
  export_model(ckpt, dir / "m.shrink", {});
  auto m = rt::Model::load(dir / "m.shrink", 1);
  const auto formed = m.outputs();
  for (const char* name : {"relu1", "maxpool1", "r2", "gap1", "linear1"}) CATCH_CHECK(std::count(formed.begin(), formed.end(), name) == 1);
  for (const char* name : {"conv1", "bn1", "conv2", "bn2"}) CATCH_CHECK(std::count(formed.begin(), formed.end(), name) == 0);  // folded, fused
  CATCH_CHECK(m.output_shape("r2") == std::vector<int64_t>{8, 6, 6});
  auto net = load_checkpoint(ckpt).model;
  net->eval();
  auto x = torch::randn({7, 3, 12, 12});
  std::map<std::string, torch::Tensor> expect;
  auto logits = net->forward_with(x, {"r2", "maxpool1"}, expect);
  std::vector<std::vector<float>> values;
  auto got = m.predict(x.data_ptr<float>(), 7, {"r2", "maxpool1"}, values);
  CATCH_REQUIRE(values.size() == 2);
  CATCH_CHECK(got == m.predict(x.data_ptr<float>(), 7));
  for (size_t k = 0; k < 2; ++k) {
    auto want = expect.at(k == 0 ? "r2" : "maxpool1");
    auto have = torch::from_blob(values[k].data(), want.sizes(), torch::kFloat32);
    CATCH_CHECK((have - want).abs().max().item<double>() <= 1e-4 * want.abs().max().item<double>());
  }
  CATCH_CHECK_THROWS_WITH(m.predict(x.data_ptr<float>(), 7, {"bn1"}, values), Catch::Contains("forms no output of a layer 'bn1'"));
}

CATCH_TEST_CASE("runtime named outputs of an int8 model: the simulation's values, dequantized from their grids", "[runtime][int8]") {
  TempDir dir;
  QuantNet q = random_int8(dir, "conv(16) bn a=relu m=maxpool(2) conv(16) bn r=relu conv(16) bn add(r) t=relu gap linear(classes)", 12, 6);
  auto x = torch::randn({20, 1, 12, 12});
  const std::vector<std::string> names{"a", "m", "r", "t"};  // (the add runs with its ReLU fused: t)
  std::map<std::string, torch::Tensor> expect;
  {
    torch::NoGradGuard no_grad;
    q->forward_with(x, names, expect);
  }
  auto m = rt::Model::load(dir / "q.shrink", 1);
  std::vector<std::vector<float>> values;
  m.predict(x.data_ptr<float>(), 20, names, values);
  for (size_t k = 0; k < names.size(); ++k) {
    CATCH_INFO(names[k]);
    auto want = expect.at(names[k]);
    auto have = torch::from_blob(values[k].data(), want.sizes(), torch::kFloat32);
    // Both on the point's int8 grid: equal but for a step where the float and int32 sums round apart.
    CATCH_CHECK((have - want).abs().max().item<double>() <= 1.01 * want.abs().max().item<double>() / 127);
    CATCH_CHECK((have - want).abs().mean().item<double>() <= 0.01 * want.abs().mean().item<double>());
  }
}

CATCH_TEST_CASE("runtime int8 computes the documented scheme the simulation runs", "[runtime][int8]") {
  // ReLU units; hardswish and sigmoid fused into a conv and an add (a chain of post-ops on the
  // output grid) and alone after a pool (on dequantized values).
  for (const char* text : {"conv(16) bn relu maxpool(2) conv(16) bn r=relu conv(16) bn add(r) relu gap linear(classes)",
                           "conv(16) bn hardswish maxpool(2) conv(16) bn h=hardswish conv(16) bn add(h) hardswish avgpool(2) hardswish gap linear(classes)",
                           "conv(16) bn sigmoid maxpool(2) conv(16) bn s=sigmoid conv(16) bn add(s) sigmoid avgpool(2) sigmoid gap linear(classes)",
                           // squeeze-excite, concat of an int8 and a hardswish branch, dilation, ceil mode, hardsigmoid alone
                           "conv(16) bn x=relu gap(keep=1) conv(8,k=1,bias=1) relu conv(16,k=1,bias=1) hs=hardsigmoid m=mul(x,hs) "
                           "a=conv(8) bn ra=relu b=conv(8,from=m) bn h=hardswish cat=concat(ra,h) conv(16,d=2) bn relu "
                           "maxpool(3,s=2,p=1,ceil=1) hardsigmoid gap linear(classes)",
                           test::kShuffleUnit, test::kNonSquareKernels, test::kUnequalStridesAndPools, test::kSqueezeExciteLinear,
                           "conv(16) bn leaky_relu maxpool(2) conv(16) bn l=leaky_relu(0.2) conv(16) bn add(l) leaky_relu avgpool(2) leaky_relu gap linear(classes)",
                           "conv(16) bn tanh maxpool(2) conv(16) bn e=elu conv(16) bn add(e) elu(0.5) avgpool(2) tanh gap linear(classes)",
                           "conv(16) bn mish maxpool(2) conv(16) bn s=softplus conv(16) bn add(s) mish gap linear(classes)",
                           "conv(16) bn prelu maxpool(2) conv(16) bn p=prelu(per_channel=1) conv(16) bn add(p) prelu gap linear(classes)",
                           "conv(16) bn gelu maxpool(2) conv(16) bn g=gelu conv(16) bn add(g) gelu gap linear(16) gelu linear(classes)",
                           "conv(16) bn x=relu m=gmp(keep=1) a=gap(keep=1,from=x) concat(m,a) conv(8,k=1) bn relu gmp linear(classes)"}) {
    CATCH_INFO(text);
    TempDir dir;
    torch::manual_seed(5);
    auto spec = parse_spec(text, {1, 12, 12}, 6);
    SpecNet fp(spec);
    {
      torch::NoGradGuard no_grad;
      for (auto& b : fp->named_buffers())
        if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2);
    }
    save_checkpoint(dir / "fp.pt", fp, nullptr, {{"epoch", 0}});
    QuantNet q = test::calibrated_int8(dir, spec, dir / "fp.pt", QuantSettings{}, torch::randn({64, 1, 12, 12}));
    auto x = torch::randn({200, 1, 12, 12});
    torch::Tensor sim;
    {
      torch::NoGradGuard no_grad;
      sim = q->forward(x);
    }
    auto got = test::run_runtime(dir / "q.shrink", x);
    CATCH_CHECK(torch::equal(test::run_runtime(dir / "q.shrink", x, 2), got));  // kernels spread over threads (the max pool's) too
    double agree = (got.argmax(1) == sim.argmax(1)).to(torch::kFloat64).mean().item<double>();
    CATCH_CHECK(agree >= 0.98);
    // Logits agree to within a few steps of the last layer's input grid (float vs int32 sums).
    CATCH_CHECK((got - sim).abs().max().item<double>() < 0.05 * sim.abs().max().item<double>());
  }
}

CATCH_TEST_CASE("runtime int8 residual add rounds as the simulation does, on ties too", "[runtime][int8]") {
  // Scales that put most sums on a rounding tie: (0.3 a + 0.1 b) / 0.2 = 1.5 a + 0.5 b. Each way
  // of computing it in float lands a hair above or below x.5; oneDNN's binary (scales folded first:
  // s_a / s_out * a + s_b / s_out * b) put enough of them on another step than the simulation
  // (and DequantizeLinear-Add-QuantizeLinear) to move the logits by 7% of the largest. The
  // runtime must give the same integers: the logits equal.
  TempDir dir;
  QuantNet q = random_int8(dir, "a=conv(8) relu conv(8) add(a) relu gap linear(classes)", 8, 4);
  {
    torch::NoGradGuard no_grad;
    auto params = q->named_parameters(), buffers = q->named_buffers();
    auto set = [&](const std::string& point, float scale) {
      const std::string name = std::string(kActivationPointPrefix) + point + ".scale";
      (params.contains(name) ? params[name] : buffers[name]).fill_(scale);
    };
    set("a", 0.3f);       // the first input of the add (after the ReLU)
    set("conv2", 0.1f);   // the second (the conv's output grid)
    set("relu2", 0.2f);   // the add's output (its ReLU fused)
  }
  SpecNet as_net(std::static_pointer_cast<SpecNetImpl>(q.ptr()));
  save_checkpoint(dir / "q.pt", as_net, nullptr, {{"epoch", 0}});
  export_model(dir / "q.pt", dir / "q.shrink", {});
  auto x = torch::randn({64, 1, 8, 8});
  check_logits_equal(dir, q, x);
}

CATCH_TEST_CASE("the int8 simulation's integer sums are exact past float32's 2^24: the runtime's logits equal", "[runtime][int8]") {
  // conv2 sums windows of 576 signed inputs (no relu before it): past 2^24 / (255 * 127) = 518,
  // the simulation sums the inputs' high and low 4 bits apart; the linear, 9,216 inputs (past
  // 8,256), in float64. Either way the int32 sum oneDNN computes.
  TempDir dir;
  QuantNet q = random_int8(dir, "conv(64) conv(64) relu flatten linear(classes)", 12, 5);
  auto x = torch::randn({32, 1, 12, 12});
  check_logits_equal(dir, q, x);
}

CATCH_TEST_CASE("runtime errors: missing file, bad input, C API", "[runtime][errors]") {
  TempDir dir;
  CATCH_CHECK_THROWS_WITH(rt::Model::load(dir / "none.shrink"), Catch::Contains("cannot open"));
  std::string ckpt = test::random_checkpoint(dir, "m.pt", "conv(4) relu gap linear(classes)", {1, 6, 6}, 3);
  export_model(ckpt, dir / "m.shrink", {});
  auto m = rt::Model::load(dir / "m.shrink");
  CATCH_CHECK_THROWS_AS(m.predict(nullptr, 0), rt::Error);
  shrink_model* cm = nullptr;
  CATCH_CHECK(shrink_model_load((dir / "none.shrink").c_str(), 1, &cm) != 0);
  CATCH_CHECK(std::string(shrink_last_error()).find("cannot open") != std::string::npos);
  CATCH_REQUIRE(shrink_model_load((dir / "m.shrink").c_str(), 1, &cm) == 0);
  CATCH_CHECK(shrink_model_input_size(cm) == 36);
  std::vector<float> x(72, 0.5f), y(6);
  CATCH_CHECK(shrink_model_predict(cm, x.data(), 2, y.data()) == 0);
  auto cpp = m.predict(x.data(), 2);
  CATCH_CHECK(std::equal(y.begin(), y.end(), cpp.begin()));
  auto probs = m.probabilities(x.data(), 2);
  auto expect = torch::softmax(torch::tensor(cpp).view({2, 3}), 1);
  CATCH_CHECK(torch::allclose(torch::tensor(probs).view({2, 3}), expect, 1e-5, 1e-6));
  shrink_model_free(cm);
  CATCH_CHECK_THROWS_WITH(export_model(ckpt, dir / "x.shrink", {"int8", "auto", {}}), Catch::Contains("needs a quantized checkpoint"));
}

CATCH_TEST_CASE("runtime profile: every primitive of a call, named after its layer, in order, and shrink-run --profile prints it", "[runtime][profile]") {
  TempDir dir;
  auto ckpt = test::random_checkpoint(dir, "m.pt", "conv(8) bn relu maxpool(2) conv(8) bn relu gap linear(classes)", {1, 8, 8}, 3);
  QuantNet q = test::calibrated_int8(dir, parse_spec("conv(8) bn relu maxpool(2) conv(8) bn relu gap linear(classes)", {1, 8, 8}, 3), ckpt,
                                     QuantSettings{}, torch::randn({16, 1, 8, 8}));
  auto m = rt::Model::load(dir / "q.shrink", 1);
  std::vector<float> x(2 * 64, 0.5f);
  auto steps = m.profile(x.data(), 2, 5);
  std::vector<std::string> order;
  for (const auto& s : steps) {
    CATCH_CHECK(s.microseconds > 0);  // each step measured
    order.push_back(s.what);
  }
  // No primitive for the input (the executor writes it onto its grid), the convs with their
  // batchnorm folded and relu fused, the pools (a one-thread int8 max pool is shrink's own kernel), the linear.
  // (On a CPU without VNNI the convs run on floats, a reorder to floats before the first, and the
  // pool is oneDNN's float pooling: "maxpool1 (pooling)".)
  CATCH_CHECK(order.front().rfind("conv1+relu1 (", 0) == 0);
  auto at = [&](const std::string& what) { return std::find(order.begin(), order.end(), what) - order.begin(); };
  const auto pool = std::find_if(order.begin(), order.end(), [](const std::string& s) { return s.rfind("maxpool1 (", 0) == 0; }) - order.begin();
  CATCH_CHECK(at("conv1+relu1 (convolution)") < pool);
  CATCH_CHECK(pool < at("conv2+relu2 (convolution)"));
  CATCH_CHECK(at("gap1 (pooling)") < at("linear1 (inner product)"));
  CATCH_CHECK(at("linear1 (inner product)") < static_cast<long>(order.size()));
  CATCH_CHECK_THROWS_AS(m.profile(x.data(), 0, 5), rt::Error);
  test::write_text(dir / "x.f32", std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4));
  auto r = test::run_cmd(std::string(SHRINK_RUN_BIN) + " " + dir / "q.shrink" + " --input " + dir / "x.f32" + " --profile --threads 1");
  CATCH_CHECK(r.code == 0);
  CATCH_CHECK_THAT(r.out, Catch::Contains("profile at batch 1") && Catch::Contains("conv2+relu2 (convolution)") && Catch::Contains("share"));
}
