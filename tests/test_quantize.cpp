#include "tests/helpers.h"
#include "common/error.h"
#include "prune/prune.h"
#include "quantize/fake_quant.h"
#include "quantize/qnet.h"
#include "quantize/quantize.h"
#include "train/checkpoint.h"

using namespace shrink;
using shrink::test::quiet;
using shrink::test::TempDir;

namespace {



nlohmann::json quantize(const std::string& out, const std::string& checkpoint, std::vector<std::string> extra, int64_t epochs = 1) {
  Keys keys;
  add_train_options(keys);
  add_quantize_options(keys);
  auto args = shrink::test::synthetic_job_args(out, epochs);
  args.push_back("--quantize.checkpoint=" + checkpoint);
  args.push_back("--optim.lr=0.002");
  args.insert(args.end(), extra.begin(), extra.end());
  auto config = Config::load(keys, "", args);
  return run_quantize_job(read_job_config(config), read_quantize_config(config), quiet());
}

}  // namespace

CATCH_TEST_CASE("fake quantization rounds half to even and clamps", "[quantize]") {
  auto x = torch::tensor({-1.0f, -0.26f, 0.0f, 0.25f, 0.75f, 1.2f, 1.25f, 2.0f}, torch::requires_grad());
  auto y = fake_quant(x, torch::tensor(0.5f), -2, 2);
  // x / s = -2, -0.52, 0, 0.5, 1.5, 2.4, 2.5, 4 -> -2, -1, 0, 0 (half to even), 2 (half to even), 2, 2, 2 (clamped)
  CATCH_CHECK(torch::equal(y, torch::tensor({-1.0f, -0.5f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f, 1.0f})));
  y.sum().backward();  // straight through where the rounded value is in range (2.4 and 2.5 round to 2), nothing outside
  CATCH_CHECK(torch::equal(x.grad(), torch::tensor({1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f})));
}

CATCH_TEST_CASE("every weight gets a gradient, the largest of each channel (x / s = 127 up to an ulp) too", "[quantize]") {
  torch::manual_seed(5);
  auto w = torch::randn({256, 75}, torch::requires_grad());
  fake_quant(w, weight_scales(w).view({256, 1}), -kWeightMax, kWeightMax).sum().backward();
  CATCH_CHECK(torch::equal(w.grad(), torch::ones_like(w)));
}

CATCH_TEST_CASE("learnable step size gets the LSQ gradient", "[quantize][lsq]") {
  auto s = torch::tensor({1.0f}, torch::requires_grad());
  auto x = torch::tensor({0.3f, 5.0f, -5.0f});
  fake_quant(x, s, -2, 2).sum().backward();
  // inside: round(x/s) - x/s = -0.3; above: qmax = 2; below: qmin = -2
  CATCH_CHECK(s.grad().item<float>() == Approx(-0.3));
  auto s2 = torch::tensor({1.0f}, torch::requires_grad());
  fake_quant(x, s2, -2, 2, 0.5).sum().backward();
  CATCH_CHECK(s2.grad().item<float>() == Approx(-0.15));
  CATCH_CHECK(fake_quant(x, s2, -2, 2, 0.5)[1].item<float>() == 2.0f);  // the value is unscaled
}

CATCH_TEST_CASE("per-channel weight scales and observer ranges", "[quantize][observer]") {
  auto w = torch::tensor({{1.0f, -4.0f, 2.0f}, {0.5f, 0.25f, -0.1f}});
  auto s = weight_scales(w);
  CATCH_CHECK(s[0].item<float>() == Approx(4.0 / 127));
  CATCH_CHECK(s[1].item<float>() == Approx(0.5 / 127));
  auto q = fake_quant(w, s.view({2, 1}), -127, 127);
  CATCH_CHECK(q[0][1].item<float>() == Approx(-4.0f));  // the largest magnitude is exact
  Observer minmax(Observer::Kind::MinMax, 0, 0), ema(Observer::Kind::MovingAverage, 0.5, 0);
  for (auto* o : {&minmax, &ema}) {
    o->observe(torch::tensor({1.0f, -3.0f}));
    o->observe(torch::tensor({2.0f}));
  }
  CATCH_CHECK(minmax.range() == Approx(3));
  CATCH_CHECK(ema.range() == Approx(2.5));
  Observer pct(Observer::Kind::Percentile, 0, 99);
  pct.observe(torch::arange(1000, torch::kFloat32));
  pct.observe(torch::tensor({1e6f}));  // one outlier doubles the histogram range many times
  CATCH_CHECK(pct.range() > 900);
  CATCH_CHECK(pct.range() < 2000);
}

CATCH_TEST_CASE("quantized simulation: folded batchnorm phases, scales, float overrides", "[quantize][qnet]") {
  torch::manual_seed(3);
  auto spec = parse_spec("conv(8) bn relu conv(8) bn r=relu add(relu1) gap linear(classes)", {1, 8, 8}, 4);
  SpecNet fp(spec);
  torch::NoGradGuard no_grad;
  for (auto& b : fp->named_buffers())
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2);
  QuantNet q(spec, QuantSettings{});
  auto src = fp->named_parameters();
  for (auto& p : q->named_parameters())
    if (src.contains(p.key())) p.value().copy_(src[p.key()]);
  auto srcb = fp->named_buffers();
  for (auto& b : q->named_buffers())
    if (srcb.contains(b.key())) b.value().copy_(srcb[b.key()]);
  auto x = torch::randn({16, 1, 8, 8});
  q->eval();
  q->set_calibrating(true);
  q->forward(x);
  q->set_calibrating(false);
  q->finish_calibration();
  fp->eval();
  auto qe = q->forward(x), fe = fp->forward(x);
  CATCH_CHECK((qe - fe).abs().max().item<float>() < 0.05 * fe.abs().max().item<float>());  // close to float
  auto scales = q->scales();
  CATCH_CHECK(scales["activations"]["input"]["signed"] == true);
  CATCH_CHECK(scales["activations"]["relu1"]["signed"] == false);
  CATCH_CHECK(scales["activations"].contains("add1"));  // the add has its own scale (relu after it is shared by nobody)
  CATCH_CHECK(scales["weights"]["conv1"].size() == 8);
  // Training with frozen batchnorm and observers computes the eval-mode model, up to the float
  // rounding of its sums (evaluation sums the grids' integers exactly, training the dequantized values).
  q->train();
  q->freeze_batchnorm(true);
  q->freeze_observers(true);
  CATCH_CHECK((q->forward(x) - qe).abs().max().item<float>() < 0.02 * qe.abs().max().item<float>());
  // With live batchnorm the running statistics move; frozen they do not.
  auto mean_before = q->named_buffers()["bn1.running_mean"].clone();
  q->freeze_batchnorm(false);
  {
    torch::AutoGradMode grad(true);
    q->forward(x);
  }
  CATCH_CHECK_FALSE(torch::equal(q->named_buffers()["bn1.running_mean"], mean_before));
  // A batchnorm with nothing to fold into cannot be quantized unless it stays float.
  auto lone = parse_spec("conv(4) relu bn gap linear(classes)", {1, 4, 4}, 2);
  CATCH_CHECK_THROWS_WITH(QuantNet(lone, QuantSettings{}), Catch::Contains("quantize.float_layers = bn1"));
  QuantSettings keep;
  keep.float_layers = {"bn1"};
  CATCH_CHECK_NOTHROW(QuantNet(lone, keep));
  // Every such batchnorm is named at once, in a value that can be pasted.
  auto two = parse_spec("conv(4) relu bn relu bn gap linear(classes)", {1, 4, 4}, 2);
  CATCH_CHECK_THROWS_WITH(QuantNet(two, QuantSettings{}), Catch::Contains("layers bn1, bn2:") && Catch::Contains("quantize.float_layers = bn1,bn2"));
  // A conv kept in float keeps the batchnorm it would fold into in float with it.
  auto folded = parse_spec("conv(4) bn relu conv(4) bn relu gap linear(classes)", {1, 4, 4}, 2);
  QuantSettings first_float;
  first_float.float_layers = {"conv1"};
  QuantNet mixed(folded, first_float);
  CATCH_CHECK_FALSE(mixed->is_quantized(folded.index_of("conv1")));
  CATCH_CHECK_FALSE(mixed->is_quantized(folded.index_of("bn1")));
  CATCH_CHECK(mixed->is_quantized(folded.index_of("conv2")));
}

CATCH_TEST_CASE("QAT's gradients reach every layer, through average pools re-rounded onto the int8 grid", "[quantize][qnet]") {
  torch::manual_seed(4);
  // gap and avgpool average values on their input's grid and re-round them (int8_average).
  auto spec = parse_spec("conv(8) bn relu avgpool(2) conv(8) bn relu gap linear(classes)", {1, 8, 8}, 4);
  QuantNet q(spec, QuantSettings{});
  auto x = torch::randn({16, 1, 8, 8});
  {
    torch::NoGradGuard no_grad;
    q->eval();
    q->set_calibrating(true);
    q->forward(x);
    q->set_calibrating(false);
    q->finish_calibration();
  }
  q->train();
  torch::nn::functional::cross_entropy(q->forward(x), torch::randint(0, 4, {16})).backward();
  for (const auto& p : q->named_parameters()) {
    CATCH_INFO(p.key());
    CATCH_REQUIRE(p.value().grad().defined());
    CATCH_CHECK(p.value().grad().abs().sum().item<double>() > 0);
  }
}

CATCH_TEST_CASE("PTQ is deterministic and QAT checkpoints reload as the int8 simulation", "[quantize][job]") {
  TempDir dir;
  std::string base = shrink::test::train_synthetic(dir, "base", 2);
  auto a = quantize(dir / "a", base, {"--quantize.mode=ptq"});
  auto b = quantize(dir / "b", base, {"--quantize.mode=ptq"});
  CATCH_CHECK(a["scales"] == b["scales"]);
  CATCH_CHECK(a["int8_sim_test_accuracy"] == b["int8_sim_test_accuracy"]);
  CATCH_CHECK(std::abs(a["int8_sim_test_accuracy"].get<double>() - a["fp32_test_accuracy"].get<double>()) < 0.05);
  auto qat = quantize(dir / "q", base, {"--quantize.mode=qat", "--quantize.observer=ema", "--quantize.freeze_bn_epoch=0.5"});
  LoadedModel loaded = load_checkpoint(dir / "q/checkpoints/last.pt");
  CATCH_CHECK(loaded.kind == ModelKind::QuantAware);
  SpecNet reloaded = loaded.model;
  CATCH_CHECK(dynamic_cast<QuantNetImpl*>(reloaded.get()) != nullptr);
  CATCH_CHECK(qat.contains("fp32_test_accuracy"));
  CATCH_CHECK(qat["int8_sim_test_accuracy"] == qat["test_accuracy"]);
  auto lsq = quantize(dir / "l", base, {"--quantize.lsq=true"});
  CATCH_CHECK(load_checkpoint(dir / "l/checkpoints/last.pt").model->named_parameters().contains("aq_relu1.scale"));
  CATCH_CHECK_THROWS_WITH(quantize(dir / "e", base, {"--quantize.float_layers=nope"}), Catch::Contains("matches no layer"));
  // A layer float-ness means nothing for was silently ignored.
  CATCH_CHECK_THROWS_WITH(quantize(dir / "f", base, {"--quantize.float_layers=bn1"}), Catch::Contains("bn1 folds into conv1: name conv1"));
  CATCH_CHECK_THROWS_WITH(quantize(dir / "g", base, {"--quantize.float_layers=relu1"}), Catch::Contains("relu1 is a relu, which does not run in int8"));
}

CATCH_TEST_CASE("a pruned model keeps its zeros through QAT", "[quantize][prune]") {
  TempDir dir;
  std::string base = shrink::test::train_synthetic(dir, "base", 2);
  Keys keys;
  add_train_options(keys);
  add_prune_options(keys);
  auto args = shrink::test::synthetic_job_args(dir / "p", 1);
  args.insert(args.end(), {"--prune.checkpoint=" + base, "--prune.schedule=oneshot", "--prune.sparsity=0.7"});
  auto config = Config::load(keys, "", args);
  run_prune_job(read_job_config(config), read_prune_config(config), quiet());
  auto summary = quantize(dir / "q", dir / "p/checkpoints/last.pt", {}, 2);
  CATCH_CHECK(summary["sparsity"] == summary["sparsity_before"]);
  auto before = load_checkpoint(dir / "p/checkpoints/last.pt").model->named_parameters();
  auto after = load_checkpoint(dir / "q/checkpoints/last.pt").model->named_parameters();
  for (const char* name : {"conv1.weight", "conv2.weight", "linear1.weight"}) CATCH_CHECK(torch::equal(before[name] == 0, after[name] == 0));
}
