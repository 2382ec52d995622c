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
#include "distill/thread_split.h"
#include "export/export.h"
#include "jobs/runtime_teacher.h"
#include "shrink/runtime.hpp"
#include "train/run_log.h"
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
std::string train_teacher(const TempDir& dir, const std::string& name, int64_t seed = 0, const std::vector<std::string>& extra = {}) {
  Keys keys;
  add_train_options(keys);
  auto args = synthetic_args(dir / name, 1, 0);
  args.push_back("--model.spec=conv(16) bn relu maxpool(2) conv(32) bn relu gap linear(classes)");
  args.push_back("--train.seed=" + std::to_string(seed));
  args.insert(args.end(), extra.begin(), extra.end());
  run_train_job(read_job_config(Config::load(keys, "", args)), quiet());
  return dir / (name + "/checkpoints/last.pt");
}

nlohmann::json distill(const std::string& out, const std::string& teacher, std::vector<std::string> extra, int64_t shift = 0,
                       int64_t epochs = 1) {
  Keys keys;
  add_distill_options(keys);
  auto args = synthetic_args(out, epochs, shift);
  args.push_back("--teacher.path=" + teacher);
  auto given = [&](const char* key) { return std::any_of(extra.begin(), extra.end(), [&](const std::string& a) { return a.rfind(key, 0) == 0; }); };
  if (given("--train.threads")) args.erase(std::find(args.begin(), args.end(), "--train.threads=1"));
  if (!given("--student.spec")) args.push_back("--student.spec=conv(8) bn relu maxpool(2) conv(16) bn relu gap linear(classes)");
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
  shrink::test::write_text(dir / "m.onnx", "an ONNX file");
  CATCH_CHECK_THROWS_WITH(distill(dir / "b2", dir / "m.onnx", {}), Catch::StartsWith("teacher ") && Catch::Contains("m.onnx"));
  shrink::test::write_text(dir / "m.shrink", "not a model file");
  CATCH_CHECK_THROWS_WITH(distill(dir / "b2s", dir / "m.shrink", {}), Catch::StartsWith("teacher ") && Catch::Contains("m.shrink"));
  // A teacher of another input size: LibTorch would run it (a global pool takes any size), the
  // runtime engines would read past each example.
  const std::string t12 = shrink::test::random_checkpoint(dir, "t12.pt", "conv(8) relu gap linear(classes)", {1, 12, 12}, 10);
  CATCH_CHECK_THROWS_WITH(distill(dir / "b3", t12, {}), Catch::Contains("takes examples of 1x12x12; the data's are 1x16x16"));
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

namespace {

const std::vector<std::string> kFixedNormalization = {"--data.normalize=fixed", "--data.mean=0.3", "--data.std=2"};

Data synthetic_data() {
  Keys keys;
  add_train_options(keys);
  auto args = synthetic_args("unused", 1, 0);
  args.insert(args.end(), kFixedNormalization.begin(), kFixedNormalization.end());
  return open_data(read_job_config(Config::load(keys, "", args)).data);
}

double top1_agreement(const torch::Tensor& a, const torch::Tensor& b) { return (a.argmax(1) == b.argmax(1)).to(torch::kFloat64).mean().item<double>(); }

}  // namespace

CATCH_TEST_CASE("a teacher on the runtime: LibTorch's logits in fp32, measured against them in int8", "[distill][engine]") {
  TempDir dir;
  const std::string t = train_teacher(dir, "t", 0, kFixedNormalization);  // normalized input: the runtime teacher undoes it
  Data data = synthetic_data();
  Augment norm = normalization_of(load_checkpoint(t).meta);
  RunLog log(dir / "log", true);
  auto libtorch = Teacher::load(t, "auto", false);
  auto x = torch::randn({64, 1, 16, 16}).contiguous(torch::MemoryFormat::ChannelsLast);
  auto want = libtorch->forward(x);

  auto fp32 = runtime_teacher(Teacher::load(t, "auto", false), {"runtime-fp32", data, norm, dir / "cache", false, 128, 1, log});
  CATCH_CHECK(fp32->engine() == "runtime-fp32");
  CATCH_CHECK((fp32->forward(x) - want).abs().max().item<double>() <= 1e-4 * want.abs().max().item<double>());
  CATCH_CHECK(fp32->file_hash() != libtorch->file_hash());  // its logits are cached apart
  // The layers the compiled teacher forms, for hints and attention: as LibTorch computes them.
  std::map<std::string, torch::Tensor> on_runtime, on_libtorch;
  const std::vector<std::string> taps{"relu2", "maxpool1"};
  fp32->forward(x, taps, &on_runtime);
  libtorch->forward(x, taps, &on_libtorch);
  for (const auto& name : taps) {
    CATCH_INFO(name);
    CATCH_REQUIRE(on_runtime.at(name).sizes() == on_libtorch.at(name).sizes());
    CATCH_CHECK((on_runtime.at(name) - on_libtorch.at(name)).abs().max().item<double>() <= 1e-4 * on_libtorch.at(name).abs().max().item<double>());
  }
  const std::string fp32_file = fp32->engine_report()["file"];
  {
    TempDir damaged;
    std::filesystem::create_directories(damaged / "cache");
    std::filesystem::copy_file(fp32_file, damaged / ("cache/" + std::filesystem::path(fp32_file).filename().string()));
    std::filesystem::resize_file(damaged / ("cache/" + std::filesystem::path(fp32_file).filename().string()), 100);
    CATCH_CHECK_THROWS_WITH(runtime_teacher(Teacher::load(t, "auto", false), {"runtime-fp32", data, norm, damaged / "cache", false, 128, 1, log}),
                            Catch::Contains("the runtime cannot run") && Catch::Contains("delete it to export the teacher again"));
  }

  auto int8 = runtime_teacher(Teacher::load(t, "auto", false), {"runtime-int8", data, norm, dir / "cache", true, 128, 1, log});
  const auto report = int8->engine_report();
  CATCH_CHECK(report["agreement_examples"] == 600);  // every training example (fewer than 10,000)
  int64_t agree = 0;
  for_each_batch(data.train, 100, norm, [&](const Batch& b) {
    agree += (int8->forward(b.x).argmax(1) == libtorch->forward(b.x).argmax(1)).sum().item<int64_t>();
  });
  CATCH_CHECK(report["agreement_with_libtorch"].get<double>() == Approx(agree / 600.0));
  CATCH_CHECK(top1_agreement(int8->forward(x), want) >= 0.9);
  CATCH_CHECK(int8->file_hash() != fp32->file_hash());
  CATCH_CHECK(std::filesystem::exists(report["file"].get<std::string>()));
}

CATCH_TEST_CASE("a runtime teacher's layers by the teacher's names: a folded batchnorm is its conv's output", "[distill][engine]") {
  TempDir dir;
  // bn b folds into conv c2 (an add reads it, so no activation fuses there): the file's c2 is b.
  const std::string t = shrink::test::random_checkpoint(dir, "t.pt", "c1=conv(8) r0=relu c2=conv(8) b=bn add(r0) relu gap linear(classes)", {1, 16, 16}, 10);
  Data data = synthetic_data();
  Augment norm = normalization_of(load_checkpoint(t).meta);
  RunLog log(dir / "log", true);
  auto libtorch = Teacher::load(t, "auto", false);
  auto x = torch::randn({8, 1, 16, 16});
  std::map<std::string, torch::Tensor> on_runtime, on_libtorch;
  TeacherEngineRequest request{"runtime-fp32", data, norm, dir / "cache", false, 128, 1, log, {"b", "r0"}};
  auto fp32 = runtime_teacher(Teacher::load(t, "auto", false), request);
  CATCH_REQUIRE(fp32->engine() == "runtime-fp32");
  fp32->forward(x, {"b", "r0"}, &on_runtime);
  libtorch->forward(x, {"b", "r0"}, &on_libtorch);
  for (const char* name : {"b", "r0"}) {
    CATCH_INFO(name);
    CATCH_CHECK((on_runtime.at(name) - on_libtorch.at(name)).abs().max().item<double>() <= 1e-4 * on_libtorch.at(name).abs().max().item<double>());
  }
  // c2's own output (before the batchnorm) is nowhere in the file: LibTorch, with a line.
  request.taps = {"c2"};
  CATCH_CHECK(runtime_teacher(Teacher::load(t, "auto", false), request)->engine() == "libtorch");
  CATCH_CHECK(shrink::test::read_text(dir / "log/log.txt").find("hints and attention read c2, which the compiled teacher does not form") !=
              std::string::npos);
}

CATCH_TEST_CASE("an int8 teacher that departs from its fp32 self is refused unless forced (auto: fp32)", "[distill][engine]") {
  TempDir dir;
  // A trained teacher with one channel 1000 times larger (batchnorm's gamma and beta) and the conv
  // after it reading that channel 1000 times weaker: the same function in float, but that channel
  // sets its int8 grid's range, and the channels beside it round to a step or two.
  const std::string t = train_teacher(dir, "t", 0, kFixedNormalization);
  LoadedModel outlier = load_checkpoint(t);
  {
    torch::NoGradGuard no_grad;
    auto params = outlier.model->named_parameters();
    params["bn1.weight"][0] *= 1000;
    params["bn1.bias"][0] *= 1000;
    params["conv2.weight"].select(1, 0) /= 1000;
  }
  save_checkpoint(dir / "outlier.pt", outlier.model, nullptr, outlier.meta);
  Data data = synthetic_data();
  Augment norm = normalization_of(outlier.meta);
  RunLog log(dir / "log", true);
  auto request = [&](bool force) { return TeacherEngineRequest{"runtime-int8", data, norm, dir / "cache", force, 128, 1, log}; };
  CATCH_CHECK_THROWS_WITH(runtime_teacher(Teacher::load(dir / "outlier.pt", "auto", false), request(false)),
                          Catch::Contains("the int8 teacher agrees with the fp32 teacher on") && Catch::Contains("under the 99.5% it needs") &&
                              Catch::Contains("teacher.force_int8 = true"));
  // teacher.engine = auto takes fp32 on the runtime instead, with a line.
  TeacherEngineRequest automatic{"auto", data, norm, dir / "cache", false, 128, 1, log};
  CATCH_CHECK(runtime_teacher(Teacher::load(dir / "outlier.pt", "auto", false), automatic)->engine() == "runtime-fp32");
  CATCH_CHECK(shrink::test::read_text(dir / "log/log.txt").find("teacher.engine = auto: the int8 teacher agrees with the fp32 teacher on") !=
              std::string::npos);
  auto forced = runtime_teacher(Teacher::load(dir / "outlier.pt", "auto", false), request(true));
  CATCH_CHECK(forced->engine_report()["agreement_with_libtorch"].get<double>() < 0.995);
  CATCH_CHECK(shrink::test::read_text(dir / "log/log.txt").find("(under 99.5%: teacher.force_int8 = true)") != std::string::npos);
}

CATCH_TEST_CASE("distillation with a runtime teacher: recorded, cached apart from LibTorch's logits, LibTorch for feature losses", "[distill][engine]") {
  TempDir dir;
  const std::string t = train_teacher(dir, "t", 0, kFixedNormalization);
  auto args = kFixedNormalization;
  args.push_back("--distill.cache_dir=" + dir / "cache");
  auto on = [&](const std::string& engine) {
    auto a = args;
    a.push_back("--teacher.engine=" + engine);
    return a;
  };
  auto libtorch = distill(dir / "d1", t, on("libtorch"));
  CATCH_CHECK(libtorch["teacher_engine"] == "libtorch");
  CATCH_CHECK(libtorch["teacher_outputs"] == "cache (computed)");
  auto fp32 = distill(dir / "d2", t, on("runtime-fp32"));
  CATCH_CHECK(fp32["teacher_engine"] == "runtime-fp32");
  CATCH_CHECK(fp32["teacher_outputs"] == "cache (computed)");  // not LibTorch's logits
  CATCH_CHECK(distill(dir / "d3", t, on("runtime-fp32"))["teacher_outputs"] == "cache (reused)");
  auto int8 = distill(dir / "d4", t, on("runtime-int8"), /*shift=*/1, 1);  // augmented: the int8 teacher on every batch
  CATCH_CHECK(int8["teacher_engine"] == "runtime-int8");
  CATCH_CHECK(int8["teacher_outputs"] == "teacher on every batch");
  CATCH_CHECK(int8["teacher_engine_report"].contains("agreement_with_libtorch"));
  // auto: int8, since it keeps the teacher's answers (99.5%), and then the same run as runtime-int8.
  auto automatic_engine = distill(dir / "d4a", t, on("auto"), /*shift=*/1, 1);
  CATCH_CHECK(automatic_engine["teacher_engine"] == "runtime-int8");
  CATCH_CHECK(automatic_engine["test_accuracy"] == int8["test_accuracy"]);
  // Ahead on the loader's thread, it trains exactly as beside each step.
  auto ahead = on("runtime-int8");
  ahead.push_back("--teacher.ahead=true");
  auto int8_ahead = distill(dir / "d6", t, ahead, /*shift=*/1, 1);
  CATCH_CHECK(int8_ahead["teacher_outputs"] == "teacher on every batch, ahead on the loader's thread");
  CATCH_CHECK(int8_ahead["test_accuracy"] == int8["test_accuracy"]);
  CATCH_CHECK(int8_ahead["kd_loss_final"] == int8["kd_loss_final"]);
  CATCH_CHECK(torch::equal(load_checkpoint(dir / "d6/checkpoints/last.pt").model->parameters()[0],
                           load_checkpoint(dir / "d4/checkpoints/last.pt").model->parameters()[0]));
  // On 2 threads teacher.ahead = true times the one split there is (1 + 1), and the timing leaves the
  // student as it was: it trains exactly as the run given that split by hand (d6).
  auto timed = on("runtime-int8");
  timed.insert(timed.end(), {"--teacher.ahead=true", "--train.threads=2"});
  auto split = distill(dir / "d7", t, timed, /*shift=*/1, 1);
  CATCH_CHECK(split["teacher_thread_split"]["ahead"] == true);
  CATCH_CHECK(split["teacher_thread_split"]["student_threads"] == 1);
  CATCH_CHECK(split["teacher_thread_split"]["teacher_threads"] == 1);
  CATCH_CHECK(split["teacher_thread_split"]["serial_ms"].get<double>() > 0);
  CATCH_CHECK(shrink::test::read_text(dir / "d7/log.txt").find("teacher.ahead = true: student on 1 thread, teacher beside it on 1 thread") !=
              std::string::npos);
  CATCH_CHECK(split["test_accuracy"] == int8_ahead["test_accuracy"]);
  CATCH_CHECK(torch::equal(load_checkpoint(dir / "d7/checkpoints/last.pt").model->parameters()[0],
                           load_checkpoint(dir / "d6/checkpoints/last.pt").model->parameters()[0]));
  auto automatic = on("runtime-int8");
  automatic.push_back("--train.threads=2");  // teacher.ahead = auto: timed, either way
  CATCH_CHECK(distill(dir / "d8", t, automatic, /*shift=*/1, 1)["teacher_thread_split"].contains("batch_ms"));
  CATCH_CHECK(shrink::test::read_text(dir / "d8/log.txt").find("teacher.ahead = auto: ") != std::string::npos);
  // Hints from a layer the compiled teacher forms run on the runtime, ahead too (the same weights
  // as beside each step); from one it folds away (a batchnorm), on LibTorch, with a line.
  auto hints = on("runtime-int8");
  hints.insert(hints.end(), {"--distill.hints=relu2:relu2", "--distill.hint_weight=1"});
  auto hinted = distill(dir / "d5", t, hints, 1);
  CATCH_CHECK(hinted["teacher_engine"] == "runtime-int8");
  CATCH_CHECK(shrink::test::read_text(dir / "d5/metrics.jsonl").find("hint_loss") != std::string::npos);
  hints.push_back("--teacher.ahead=true");
  CATCH_CHECK(distill(dir / "d9", t, hints, 1)["teacher_outputs"] == "teacher on every batch, ahead on the loader's thread");
  CATCH_CHECK(torch::equal(load_checkpoint(dir / "d9/checkpoints/last.pt").model->parameters()[0],
                           load_checkpoint(dir / "d5/checkpoints/last.pt").model->parameters()[0]));
  auto folded = on("runtime-int8");
  folded.insert(folded.end(), {"--distill.hints=relu2:bn2", "--distill.hint_weight=1"});
  CATCH_CHECK(distill(dir / "d10", t, folded, 1)["teacher_engine"] == "libtorch");
  CATCH_CHECK(shrink::test::read_text(dir / "d10/log.txt").find("hints and attention read bn2, which the compiled teacher does not form") !=
              std::string::npos);
}

CATCH_TEST_CASE("teacher.ahead = auto takes the faster of serial and each thread split, by the times it is given", "[distill][engine]") {
  CATCH_CHECK(split_candidates(1).empty());
  CATCH_CHECK(split_candidates(2) == std::vector<std::pair<int, int>>{{1, 1}});
  CATCH_CHECK(split_candidates(4) == std::vector<std::pair<int, int>>{{1, 3}, {2, 2}, {3, 1}});
  CATCH_CHECK(split_candidates(16) == std::vector<std::pair<int, int>>{{1, 15}, {4, 12}, {8, 8}, {12, 4}, {15, 1}});
  std::map<int, int> timed;
  auto student = [&](std::map<int, double> ms) { return [&timed, ms](int n) { ++timed[n]; return ms.at(n); }; };
  auto teacher = [](std::map<int, double> ms) { return [ms](int n) { return ms.at(n); }; };
  // A student that gains nothing from a second thread: side by side, 10 ms against 10 + 4 serial.
  ThreadSplit side = choose_thread_split(2, true, student({{1, 10}, {2, 10}}), teacher({{1, 8}, {2, 4}}));
  CATCH_CHECK(side.ahead);
  CATCH_CHECK(side.student_threads == 1);
  CATCH_CHECK(side.teacher_threads == 1);
  CATCH_CHECK(side.batch_ms == 10);
  CATCH_CHECK(side.serial_ms == 14);
  CATCH_CHECK(timed == std::map<int, int>{{1, 1}, {2, 1}});  // each count timed once
  // A student that scales and a light teacher: serial, 10 + 1 against 20.
  ThreadSplit serial = choose_thread_split(2, true, student({{1, 20}, {2, 10}}), teacher({{1, 2}, {2, 1}}));
  CATCH_CHECK_FALSE(serial.ahead);
  CATCH_CHECK(serial.student_threads == 2);
  CATCH_CHECK(serial.teacher_threads == 2);
  CATCH_CHECK(serial.batch_ms == 11);
  // Side by side must be 10% faster than serial to be taken (9.5 against 10 is not) ...
  CATCH_CHECK_FALSE(choose_thread_split(2, true, student({{1, 9.5}, {2, 5}}), teacher({{1, 9.5}, {2, 5}})).ahead);
  // ... unless serial is not allowed (teacher.ahead = true); on 4 threads the best split wins.
  ThreadSplit forced = choose_thread_split(4, false, student({{1, 40}, {2, 20}, {3, 14}, {4, 10}}), teacher({{1, 12}, {2, 6}, {3, 4}, {4, 3}}));
  CATCH_CHECK(forced.ahead);
  CATCH_CHECK(forced.student_threads == 3);
  CATCH_CHECK(forced.teacher_threads == 1);
  CATCH_CHECK(forced.batch_ms == 14);
  CATCH_CHECK_THROWS(choose_thread_split(1, false, student({{1, 1}}), teacher({{1, 1}})));
  CATCH_CHECK(describe(side, 2) == "student on 1 thread, teacher beside it on 1 thread: 10.0 ms a batch (one after the other on 2 threads: 14.0 ms)");
}

CATCH_TEST_CASE("teacher.ahead = auto does not time a quantization-aware student (its observers would move)", "[distill][engine]") {
  TempDir dir;
  const std::string t = train_teacher(dir, "t", 0);
  shrink::test::write_text(dir / "qat.ini", "[data]\nsource = synthetic\nshape = 1,16,16\nsynthetic_train = 600\nsynthetic_test = 200\nshift = 1\n"
                                            "[quantize]\ncheckpoint = " + t + "\ncalibration_batches = 2\n[train]\nepochs = 1\nthreads = 2\n");
  auto r = shrink::test::run_cli("quantize --config " + dir / "qat.ini --teacher.path=" + t + " --teacher.engine=runtime-fp32 --distill.cache_dir=" +
                                 dir / "cache --out " + dir / "q");
  CATCH_INFO(r.out);
  CATCH_CHECK(r.code == 0);
  CATCH_CHECK(r.out.find("a quantization-aware student is not timed") != std::string::npos);
}

CATCH_TEST_CASE("a .shrink or ONNX file as teacher: fp32 teaches as its checkpoint on every engine, int8 runs on the runtime as it is", "[distill][engine]") {
  TempDir dir;
  const std::string t = train_teacher(dir, "t", 0, kFixedNormalization);
  export_model(t, dir / "t.shrink", {});
  ExportOptions int8;
  int8.precision = "int8";
  export_model(shrink::test::quantize_synthetic(dir, "q", t), dir / "q.shrink", int8);
  auto x = torch::randn({64, 1, 16, 16});
  const auto want = Teacher::load(t, "auto", false)->forward(x);
  auto near = [](const torch::Tensor& got, const torch::Tensor& expect) {
    return (got - expect).abs().max().item<double>() <= 1e-4 * expect.abs().max().item<double>();
  };
  // fp32: imported once into the cache folder, then a teacher like the checkpoint it came from;
  // path and hash are the file's (the summary names it, caches are keyed by it).
  auto file = Teacher::load(dir / "t.shrink", "auto", false, dir / "cache");
  CATCH_CHECK(file->kind() == "shrink");
  CATCH_CHECK(file->path() == dir / "t.shrink");
  CATCH_CHECK(file->file_hash() == hash_file(dir / "t.shrink"));
  CATCH_CHECK(std::filesystem::exists(file->checkpoint()));
  CATCH_CHECK(file->mean == std::vector<float>{0.3f});
  CATCH_CHECK(file->std == std::vector<float>{2.0f});
  CATCH_CHECK(near(file->forward(x), want));
  Data data = synthetic_data();
  Augment norm = normalization_of(load_checkpoint(t).meta);
  RunLog log(dir / "log", true);
  auto fp32 = runtime_teacher(Teacher::load(dir / "t.shrink", "auto", false, dir / "cache"), {"runtime-fp32", data, norm, dir / "cache", false, 128, 1, log});
  CATCH_CHECK(fp32->engine() == "runtime-fp32");
  CATCH_CHECK(near(fp32->forward(x), want));
  auto calibrated = runtime_teacher(Teacher::load(dir / "t.shrink", "auto", false, dir / "cache"), {"runtime-int8", data, norm, dir / "cache", true, 128, 1, log});
  CATCH_CHECK(calibrated->engine() == "runtime-int8");
  CATCH_CHECK(calibrated->engine_report().contains("agreement_with_libtorch"));
  CATCH_CHECK(top1_agreement(calibrated->forward(x), want) >= 0.9);

  // An ONNX file (here shrink's own export, which carries the normalization): imported the same way.
  export_model(t, dir / "t.onnx", {});
  auto onnx = Teacher::load(dir / "t.onnx", "auto", false, dir / "cache");
  CATCH_CHECK(onnx->path() == dir / "t.onnx");
  CATCH_CHECK(onnx->mean == std::vector<float>{0.3f});
  CATCH_CHECK(near(onnx->forward(x), want));

  // int8: on the runtime from the start, computing what the file computes.
  auto q = Teacher::load(dir / "q.shrink", "auto", false, dir / "cache");
  CATCH_CHECK(q->engine() == "runtime (int8 file)");
  CATCH_CHECK(q->kind() == "shrink-model-int8");
  CATCH_REQUIRE(q->spec() != nullptr);
  CATCH_CHECK(q->spec()->input == std::vector<int64_t>{1, 16, 16});
  CATCH_CHECK(q->mean == std::vector<float>{0.3f});
  torch::Tensor raw = (x * 2 + 0.3).contiguous();  // what the teacher hands the runtime (which normalizes it)
  std::vector<float> expect = rt::Model::load(dir / "q.shrink", 1, rt::Int8Sums::fast).predict(raw.data_ptr<float>(), 64);
  CATCH_CHECK(torch::equal(q->forward(x), torch::from_blob(expect.data(), {64, 10})));
  CATCH_CHECK(top1_agreement(q->forward(x), want) >= 0.9);
  CATCH_CHECK_THROWS_WITH(runtime_teacher(std::move(q), {"libtorch", data, norm, dir / "cache", false, 128, 1, log}),
                          Catch::Contains("an int8 model file runs on shrink's runtime only"));
  TeacherEngineRequest tapped{"runtime-int8", data, norm, dir / "cache", false, 128, 1, log, {"conv1"}};  // its relu is fused: not formed
  CATCH_CHECK_THROWS_WITH(runtime_teacher(Teacher::load(dir / "q.shrink", "auto", false, dir / "cache"), tapped),
                          Catch::Contains("which this int8 model file does not form"));

  // Whole runs: the fp32 file distils as its checkpoint does; the int8 file on a runtime engine only.
  auto args = kFixedNormalization;
  args.push_back("--distill.cache_dir=" + dir / "cache");
  const auto from_checkpoint = distill(dir / "d1", t, args), from_file = distill(dir / "d2", dir / "t.shrink", args);
  CATCH_CHECK(from_file["teacher"] == dir / "t.shrink");
  CATCH_CHECK(from_file["test_accuracy"].get<double>() == Approx(from_checkpoint["test_accuracy"].get<double>()).margin(0.01));
  args.push_back("--teacher.engine=runtime-int8");
  const auto from_int8 = distill(dir / "d3", dir / "q.shrink", args);
  CATCH_CHECK(from_int8["teacher_engine"] == "runtime (int8 file)");
  CATCH_CHECK(shrink::test::read_text(dir / "d3/log.txt").find("the teacher is an int8 model file: it runs on shrink's runtime as it is") !=
              std::string::npos);
  args.back() = "--teacher.engine=libtorch";
  CATCH_CHECK_THROWS_WITH(distill(dir / "d4", dir / "q.shrink", args), Catch::Contains("set teacher.engine = runtime-int8"));
}
