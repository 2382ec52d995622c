#include <torch/script.h>

#include <cmath>
#include <fstream>

#include "tests/helpers.h"
#include "common/error.h"
#include "datasets/formats.h"
#include "distill/cache.h"
#include "distill/distill.h"
#include "distill/losses.h"
#include "distill/teacher.h"
#include "train/checkpoint.h"

using namespace shrink;
using shrink::test::quiet;
using shrink::test::TempDir;

namespace {


std::vector<std::string> synthetic_args(const std::string& out, int64_t epochs, int64_t shift) {
  return {"--job.out=" + out, "--data.source=synthetic", "--data.shape=1,16,16", "--data.synthetic_train=600", "--data.synthetic_test=200",
          "--data.shift=" + std::to_string(shift), "--train.epochs=" + std::to_string(epochs), "--train.threads=1"};
}

// A small teacher trained for one epoch on synthetic data.
std::string train_teacher(const TempDir& dir, const std::string& name, int64_t seed = 0) {
  Keys keys;
  add_train_options(keys);
  auto args = synthetic_args(dir / name, 1, 0);
  args.push_back("--model.spec=conv(16) bn relu maxpool(2) conv(32) bn relu gap linear(classes)");
  args.push_back("--train.seed=" + std::to_string(seed));
  run_train_job(read_job_config(Config::load(keys, "", args)), quiet());
  return dir / (name + "/checkpoints/last.pt");
}

nlohmann::json distill(const std::string& out, const std::string& teacher, std::vector<std::string> extra, int64_t shift = 0,
                       int64_t epochs = 1) {
  Keys keys;
  add_distill_options(keys);
  auto args = synthetic_args(out, epochs, shift);
  args.push_back("--teacher.path=" + teacher);
  bool spec_given = std::any_of(extra.begin(), extra.end(), [](const std::string& a) { return a.rfind("--student.spec", 0) == 0; });
  if (!spec_given) args.push_back("--student.spec=conv(8) bn relu maxpool(2) conv(16) bn relu gap linear(classes)");
  args.insert(args.end(), extra.begin(), extra.end());
  auto config = Config::load(keys, "", args);
  auto job = read_job_config(config);
  return run_distill_job(job, read_distill_config(config, job), quiet());
}

torch::Tensor read_floats(const std::string& path, std::vector<int64_t> shape) {
  auto t = torch::empty(shape, torch::kFloat32);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(t.data_ptr()), t.numel() * 4);
  return t;
}

}  // namespace

CATCH_TEST_CASE("soft-target loss equals the hand-computed KL times T^2", "[distill][loss]") {
  auto s = torch::zeros({1, 2}), t = torch::tensor({{std::log(3.0f), 0.0f}});
  // T = 1: p_t = (3/4, 1/4), p_s = (1/2, 1/2)
  double kl1 = 0.75 * std::log(0.75 / 0.5) + 0.25 * std::log(0.25 / 0.5);
  CATCH_CHECK(soft_target_loss(s, t, 1).item<double>() == Approx(kl1).epsilon(1e-5));
  // T = 2: p_t = (sqrt3, 1) / (sqrt3 + 1)
  double a = std::sqrt(3.0) / (std::sqrt(3.0) + 1), b = 1 - a;
  double kl2 = a * std::log(a / 0.5) + b * std::log(b / 0.5);
  CATCH_CHECK(soft_target_loss(s, t, 2).item<double>() == Approx(4 * kl2).epsilon(1e-5));
  CATCH_CHECK(soft_target_loss(t, t, 3).item<double>() == Approx(0).margin(1e-7));
  // Batch mean: two copies of the same example give the same loss.
  CATCH_CHECK(soft_target_loss(torch::cat({s, s}), torch::cat({t, t}), 1).item<double>() == Approx(kl1).epsilon(1e-5));
}

CATCH_TEST_CASE("hint and attention losses on hand-made features", "[distill][loss]") {
  CATCH_CHECK(hint_loss(torch::tensor({1.0f, 2.0f}), torch::tensor({0.0f, 0.0f})).item<float>() == Approx(2.5));
  // channel 0 = (1, 2), channel 1 = (3, 0): mean of squares (5, 2), normalized by sqrt(29)
  auto f = torch::tensor({1.0f, 2.0f, 3.0f, 0.0f}).view({1, 2, 1, 2});
  auto map = attention_map(f);
  CATCH_CHECK(map[0][0].item<float>() == Approx(5 / std::sqrt(29.0)));
  CATCH_CHECK(map[0][1].item<float>() == Approx(2 / std::sqrt(29.0)));
  auto g = torch::tensor({0.0f, 1.0f, 0.0f, 1.0f}).view({1, 2, 1, 2});  // map (0, 1)
  double d0 = 5 / std::sqrt(29.0), d1 = 2 / std::sqrt(29.0) - 1;
  CATCH_CHECK(attention_loss(f, g).item<double>() == Approx((d0 * d0 + d1 * d1) / 2).epsilon(1e-5));
}

CATCH_TEST_CASE("the teacher is frozen: gradients reach only the student", "[distill]") {
  TempDir dir;
  auto teacher = Teacher::load(train_teacher(dir, "t"), "auto", false);
  CATCH_CHECK(teacher->kind() == "shrink");
  auto x = torch::randn({3, 1, 16, 16});
  auto t = teacher->forward(x);
  CATCH_CHECK_FALSE(t.requires_grad());
  auto s = torch::randn({3, 10}, torch::requires_grad());
  soft_target_loss(s, t, 4).backward();
  CATCH_CHECK(s.grad().defined());
  CATCH_CHECK(s.grad().abs().sum().item<float>() > 0);
  // A run with hints trains the adapters and leaves the teacher file untouched.
  std::string before = hash_file(dir / "t/checkpoints/last.pt");
  auto summary = distill(dir / "d", dir / "t/checkpoints/last.pt", {"--distill.hints=relu2:relu2", "--distill.hint_weight=1"}, 0, 2);
  CATCH_CHECK(hash_file(dir / "t/checkpoints/last.pt") == before);
  CATCH_CHECK(summary["teacher_outputs"] == "teacher on every batch");  // features need the live teacher
  std::ifstream metrics(dir / "d/metrics.jsonl");
  std::string l1, l2;
  std::getline(metrics, l1);
  std::getline(metrics, l2);
  CATCH_CHECK(nlohmann::json::parse(l2)["hint_loss"].get<double>() < nlohmann::json::parse(l1)["hint_loss"].get<double>());
  torch::nn::Module probe;
  probe.register_module("hint1", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 1).bias(false)));
  CATCH_CHECK(load_extra_state(dir / "d/checkpoints/last.pt", "objective", probe));
}

CATCH_TEST_CASE("teacher logits are cached, reused across runs, and recomputed for a new teacher", "[distill][cache]") {
  TempDir dir;
  std::string t1 = train_teacher(dir, "t1", 0);
  auto cache = std::vector<std::string>{"--distill.cache_dir=" + dir / "cache"};
  auto first = distill(dir / "d1", t1, cache);
  CATCH_CHECK(first["teacher_outputs"] == "cache (computed)");
  auto second = distill(dir / "d2", t1, cache);
  CATCH_CHECK(second["teacher_outputs"] == "cache (reused)");
  CATCH_CHECK(second["test_accuracy"] == first["test_accuracy"]);
  std::string t2 = train_teacher(dir, "t2", 1);
  CATCH_CHECK(distill(dir / "d3", t2, cache)["teacher_outputs"] == "cache (computed)");
  auto shifted = distill(dir / "d4", t1, cache, /*shift=*/1);  // augmented inputs: the teacher runs on each batch
  CATCH_CHECK(shifted["teacher_outputs"] == "teacher on every batch");
  auto forced = cache;
  forced.push_back("--distill.cache=augment-free");
  CATCH_CHECK(distill(dir / "d5", t1, forced, 1)["teacher_outputs"] == "cache (reused)");
  // The cached logits are the teacher's.
  auto teacher = Teacher::load(t1, "auto", false);
  auto source = make_synthetic({{1, 16, 16}, 10, 600, 200, 0}, false);
  auto cached = teacher_logits_cached(*teacher, source, {}, dir / "cache", 128);
  CATCH_CHECK(cached.reused);
  CATCH_CHECK(torch::allclose(cached.logits, teacher->forward(source->data()), 1e-4, 1e-5));
}

CATCH_TEST_CASE("a TorchScript teacher gives the same logits as its source", "[distill][torchscript]") {
  TempDir dir;
  // Built in C++ with torch::jit (always available).
  torch::jit::Module m("Teacher");
  auto w = torch::randn({10, 256});
  m.register_parameter("w", w, false);
  m.define("def forward(self, x):\n  return torch.matmul(torch.flatten(x, 1), self.w.t())\n");
  m.save(dir / "cpp.pt");
  auto x = torch::randn({5, 1, 16, 16});
  auto teacher = Teacher::load(dir / "cpp.pt", "auto", false);
  CATCH_CHECK(teacher->kind() == "torchscript");
  CATCH_CHECK(torch::allclose(teacher->forward(x), torch::matmul(x.flatten(1), w.t()), 1e-5, 1e-5));
  // Saved by PyTorch (python3-torch), when it is installed.
  if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
    CATCH_WARN("python3-torch not installed: skipping the PyTorch-saved teacher");
    return;
  }
  std::string cmd = "/usr/bin/python3 " + std::string(SHRINK_SOURCE_DIR) + "/tests/make_torchscript_teacher.py " + dir.path.string();
  CATCH_REQUIRE(std::system(cmd.c_str()) == 0);
  auto py = Teacher::load(dir / "teacher.pt", "auto", false);
  auto input = read_floats(dir / "input.bin", {4, 1, 16, 16}), expected = read_floats(dir / "logits.bin", {4, 10});
  CATCH_CHECK(torch::allclose(py->forward(input), expected, 1e-4, 1e-5));
  // A whole distillation run with it.
  auto summary = distill(dir / "d", dir / "teacher.pt", {"--distill.cache_dir=" + dir / "cache"});
  CATCH_CHECK(summary["teacher_kind"] == "torchscript");
}

CATCH_TEST_CASE("bad teachers and layer names are clear errors", "[distill][errors]") {
  TempDir dir;
  std::string t = train_teacher(dir, "t");
  shrink::test::write_text(dir / "junk.pt", "not a model");
  CATCH_CHECK_THROWS_WITH(distill(dir / "a", dir / "junk.pt", {}), Catch::Contains("neither a shrink checkpoint nor a TorchScript file"));
  CATCH_CHECK_THROWS_WITH(distill(dir / "b", dir / "none.pt", {}), Catch::Contains("no such file"));
  CATCH_CHECK_THROWS_WITH(distill(dir / "c", t, {"--data.classes=5", "--student.spec=conv(8) gap linear(classes)"}),
                          Catch::Contains("outputs 10 values per example but the data has 5 classes"));
  CATCH_CHECK_THROWS_WITH(distill(dir / "d", t, {"--distill.hints=nope:relu2", "--distill.hint_weight=1"}),
                          Catch::Contains("the student has no layer named 'nope'"));
  CATCH_CHECK_THROWS_WITH(distill(dir / "e", t, {"--distill.attention=relu1:nope", "--distill.attention_weight=1000"}),
                          Catch::Contains("the teacher has no layer named 'nope'"));
  CATCH_CHECK_THROWS_WITH(distill(dir / "f", t, {"--distill.attention=relu1:relu2", "--distill.attention_weight=1000"}),
                          Catch::Contains("need the same height and width"));
  CATCH_CHECK_THROWS_WITH(distill(dir / "g", t, {"--distill.hints=relu1"}), Catch::Contains("not a pair"));
}

CATCH_TEST_CASE("a quantized teacher teaches with its int8 simulation and says so", "[distill][quantized]") {
  TempDir dir;
  std::string float_path = train_teacher(dir, "t");
  std::string quantized_path = shrink::test::quantize_synthetic(dir, "q", float_path);
  auto teacher = Teacher::load(quantized_path, "auto", false);
  CATCH_CHECK(teacher->kind() == "shrink-quantized");
  CATCH_CHECK(teacher->int8_simulated());
  auto x = torch::randn({4, 1, 16, 16});
  LoadedModel simulation = load_checkpoint(quantized_path);
  CATCH_REQUIRE(simulation.quantized());
  simulation.model->eval();
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = simulation.model->forward(x);
  }
  CATCH_CHECK(torch::equal(teacher->forward(x), expected));  // what the checkpoint computes
  auto float_teacher = Teacher::load(float_path, "auto", false);
  CATCH_CHECK(float_teacher->kind() == "shrink");
  CATCH_CHECK_FALSE(float_teacher->int8_simulated());
  CATCH_CHECK_FALSE(torch::equal(float_teacher->forward(x), expected));  // not its float weights
  std::map<std::string, torch::Tensor> tapped;
  teacher->forward(x, {"relu2"}, &tapped);  // feature losses tap it by the trained spec's names
  CATCH_CHECK(tapped.at("relu2").sizes() == torch::IntArrayRef({4, 32, 8, 8}));
  auto summary = distill(dir / "d", quantized_path, {});
  CATCH_CHECK(summary["teacher_kind"] == "shrink-quantized");
  CATCH_CHECK(shrink::test::read_text(dir / "d/log.txt").find("it teaches with its int8 simulation") != std::string::npos);
}
