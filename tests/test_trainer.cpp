#include <fstream>

#include "tests/helpers.h"
#include "common/error.h"
#include "train/checkpoint.h"
#include "train/objective.h"
#include "train/precision.h"
#include "train/trainer.h"

using namespace shrink;
using shrink::test::quiet;
using shrink::test::TempDir;

namespace {
JobConfig synthetic_job(const std::string& out, const std::string& model = "usps_student", int64_t epochs = 3,
                        const std::vector<std::string>& extra = {}) {
  Keys keys;
  add_train_options(keys);
  std::vector<std::string> args = {"--job.out=" + out, "--data.source=synthetic", "--data.shape=1,16,16", "--data.synthetic_train=2000",
                                   "--data.synthetic_test=500", "--data.shift=1", "--model.spec=" + model, "--train.epochs=" + std::to_string(epochs),
                                   "--train.threads=1", "--optim.lr=0.05"};
  args.insert(args.end(), extra.begin(), extra.end());
  return read_job_config(Config::load(keys, "", args));
}

// Counts the calls it gets, in a buffer it checkpoints under its name.
class CountingHook : public StepHook {
 public:
  explicit CountingHook(std::string name, std::vector<std::string>* order) : name_(std::move(name)), order_(order) {
    counts_.register_buffer("steps", torch::zeros({1}, torch::kInt64));
  }
  void begin_step(SpecNet&, double) override { order_->push_back(name_); }
  void after_step(SpecNet&) override { counts_.named_buffers()["steps"].add_(1); }
  torch::nn::Module* state() override { return &counts_; }
  std::string state_name() const override { return name_; }
  nlohmann::json epoch_metrics(SpecNet&) override { return {{name_ + "_steps", counts_.named_buffers()["steps"].item<int64_t>()}}; }
  torch::nn::Module counts_;

 private:
  std::string name_;
  std::vector<std::string>* order_;
};
}  // namespace

CATCH_TEST_CASE("a short run on synthetic data learns and leaves a complete run directory", "[trainer]") {
  TempDir dir;
  auto summary = run_train_job(synthetic_job(dir / "run"), quiet());
  CATCH_CHECK(summary["test_accuracy"].get<double>() >= 0.80);
  CATCH_CHECK(summary["params"] == 24058);
  for (const char* f : {"config.ini", "metrics.jsonl", "summary.json", "log.txt", "checkpoints/last.pt", "checkpoints/best.pt"})
    CATCH_CHECK(std::filesystem::exists(dir / ("run/" + std::string(f))));
  std::ifstream metrics(dir / "run/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    auto r = nlohmann::json::parse(line);
    CATCH_CHECK(r["epoch"] == ++lines);
    for (const char* k : {"lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "samples_per_s"})
      CATCH_CHECK(r.contains(k));
  }
  CATCH_CHECK(lines == 3);
  // The checkpoint rebuilds the same model with the same accuracy metadata.
  LoadedModel loaded = load_checkpoint(dir / "run/checkpoints/last.pt");
  const nlohmann::json& meta = loaded.meta;
  CATCH_CHECK(loaded.kind == ModelKind::Float);
  CATCH_CHECK(meta["epoch"] == 3);
  CATCH_CHECK(meta["test_accuracy"].get<double>() == summary["test_accuracy"].get<double>());
  // Starting over in the same directory needs --overwrite or --resume.
  CATCH_CHECK_THROWS_WITH(run_train_job(synthetic_job(dir / "run"), quiet()), Catch::Contains("already holds a run"));
}

CATCH_TEST_CASE("an interrupted and resumed run ends with the same weights", "[trainer][resume]") {
  TempDir dir;
  run_train_job(synthetic_job(dir / "whole"), quiet());
  auto killed = quiet();
  killed.stop_after_epochs = 1;
  run_train_job(synthetic_job(dir / "parts"), killed);
  killed.resume = true;
  run_train_job(synthetic_job(dir / "parts"), killed);  // epoch 2
  auto resume = quiet();
  resume.resume = true;
  run_train_job(synthetic_job(dir / "parts"), resume);  // epoch 3
  auto a = load_checkpoint(dir / "whole/checkpoints/last.pt").model, b = load_checkpoint(dir / "parts/checkpoints/last.pt").model;
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) CATCH_CHECK(torch::equal(p.value(), pb[p.key()]));
  auto ba = a->named_buffers(), bb = b->named_buffers();
  for (const auto& buf : ba) CATCH_CHECK(torch::equal(buf.value(), bb[buf.key()]));
  CATCH_CHECK(shrink::test::read_text(dir / "whole/metrics.jsonl").size() > 0);
}

CATCH_TEST_CASE("a loss that becomes NaN stops the run and keeps the last good checkpoint", "[trainer][nan]") {
  TempDir dir;
  auto first = quiet();
  first.stop_after_epochs = 1;
  run_train_job(synthetic_job(dir / "run", "mlp_300_100"), first);
  std::string before = shrink::test::read_text(dir / "run/checkpoints/last.pt");
  auto job = synthetic_job(dir / "run", "mlp_300_100");
  job.optim.lr = 1e5;
  job.optim.schedule = "constant";
  auto resume = quiet();
  resume.resume = true;
  CATCH_CHECK_THROWS_WITH(run_train_job(job, resume), Catch::Contains("training diverged") && Catch::Contains("last.pt is kept"));
  CATCH_CHECK(shrink::test::read_text(dir / "run/checkpoints/last.pt") == before);
  CATCH_CHECK(read_checkpoint_meta(dir / "run/checkpoints/last.pt")["epoch"] == 1);
  // Weights broken by an epoch's last step (here its only one) stop the run too, not saved as done.
  auto one_step = synthetic_job(dir / "one", "mlp_300_100");
  one_step.data.synthetic_train = one_step.train.batch_size;
  one_step.optim.lr = 1e38;  // weights of 1e38 and more: outputs overflow to inf and NaN
  one_step.optim.schedule = "constant";
  CATCH_CHECK_THROWS_WITH(run_train_job(one_step, quiet()), Catch::Contains("after epoch 1 the test loss is") && Catch::Contains("no checkpoint was written"));
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "one/checkpoints/last.pt"));
}

CATCH_TEST_CASE("damaged checkpoints are user errors", "[trainer][checkpoint]") {
  TempDir dir;
  auto first = quiet();
  first.stop_after_epochs = 1;
  run_train_job(synthetic_job(dir / "run", "mlp_300_100"), first);
  std::string whole = shrink::test::read_text(dir / "run/checkpoints/last.pt");
  shrink::test::write_text(dir / "cut.pt", whole.substr(0, whole.size() / 2));
  CATCH_CHECK_THROWS_AS(load_checkpoint(dir / "cut.pt"), UserError);
  shrink::test::write_text(dir / "junk.pt", "junk");
  CATCH_CHECK_THROWS_WITH(load_checkpoint(dir / "junk.pt"), Catch::Contains("not a readable shrink checkpoint"));
  CATCH_CHECK_THROWS_WITH(load_checkpoint(dir / "none.pt"), Catch::Contains("no such file"));
  // One bit flipped in the weights: LibTorch would load it as other weights; the checksum says so.
  std::string flipped = whole;
  flipped[flipped.size() / 2] ^= 0x10;
  shrink::test::write_text(dir / "flipped.pt", flipped);
  CATCH_CHECK_THROWS_WITH(load_checkpoint(dir / "flipped.pt"), Catch::Contains("corrupt") && Catch::Contains("does not match its checksum"));
  CATCH_CHECK_NOTHROW(read_checkpoint_meta(dir / "flipped.pt"));  // the metadata alone is still readable
}

CATCH_TEST_CASE("step hooks act in the order given and checkpoint their states by name", "[trainer][hooks]") {
  TempDir dir;
  std::vector<std::string> order;
  CountingHook first("first", &order), second("second", &order);
  auto summary = run_train_job(synthetic_job(dir / "run", "mlp_300_100", 1), quiet(), nullptr, {&first, &second});
  CATCH_REQUIRE(order.size() >= 4);
  CATCH_CHECK(order[0] == "first");
  CATCH_CHECK(order[1] == "second");
  const int64_t steps = static_cast<int64_t>(order.size() / 2);
  std::ifstream metrics(dir / "run/metrics.jsonl");
  std::string line;
  std::getline(metrics, line);
  auto record = nlohmann::json::parse(line);
  CATCH_CHECK(record["first_steps"] == steps);
  CATCH_CHECK(record["second_steps"] == steps);
  for (const char* name : {"first", "second"}) {
    CountingHook probe(name, &order);
    CATCH_CHECK(load_extra_state(dir / "run/checkpoints/last.pt", name, *probe.state()));
    CATCH_CHECK(probe.counts_.named_buffers()["steps"].item<int64_t>() == steps);
  }
  CountingHook twin("first", &order);
  CATCH_CHECK_THROWS_AS(run_train_job(synthetic_job(dir / "twins", "mlp_300_100", 1), quiet(), nullptr, {&first, &twin}), std::logic_error);
}

CATCH_TEST_CASE("train.precision: bf16 autocast in the forward, fp32 weights, recorded with the CPU flags that decided auto", "[trainer][precision]") {
  // The scope turns convolutions to bf16 and back.
  auto x = torch::randn({2, 1, 8, 8}), w = torch::randn({4, 1, 3, 3});
  {
    Bf16Autocast on(true);
    CATCH_CHECK(torch::conv2d(x, w).scalar_type() == torch::kBFloat16);
  }
  CATCH_CHECK(torch::conv2d(x, w).scalar_type() == torch::kFloat32);
  {
    Bf16Autocast off(false);
    CATCH_CHECK(torch::conv2d(x, w).scalar_type() == torch::kFloat32);
  }
  // A bf16 run learns, keeps fp32 weights and says what it trained in.
  TempDir dir;
  auto summary = run_train_job(synthetic_job(dir / "bf16", "usps_student", 2, {"--train.precision=bf16"}), quiet());
  CATCH_CHECK(summary["precision"] == "bf16");
  CATCH_CHECK(summary["test_accuracy"].get<double>() >= 0.5);
  CATCH_CHECK(load_checkpoint(dir / "bf16/checkpoints/last.pt").model->parameters()[0].scalar_type() == torch::kFloat32);
  std::ifstream metrics(dir / "bf16/metrics.jsonl");
  std::string line;
  std::getline(metrics, line);
  CATCH_CHECK(nlohmann::json::parse(line)["precision"] == "bf16");
  // auto: bf16 exactly when the CPU lists AMX or AVX512-BF16.
  auto chosen = run_train_job(synthetic_job(dir / "auto", "usps_student", 1, {"--train.precision=auto"}), quiet());
  const Precision expected = resolve_precision("auto");
  CATCH_CHECK(chosen["precision"] == (expected.cpu_flags.empty() ? "fp32" : "bf16"));
  CATCH_CHECK(chosen["precision_cpu_flags"] == expected.cpu_flags);
  CATCH_CHECK(shrink::test::read_text(dir / "auto/log.txt").find("precision " + expected.name + " (train.precision = auto") != std::string::npos);
}

CATCH_TEST_CASE("a start checkpoint trained on another image size is said in the log", "[trainer]") {
  TempDir dir;
  const std::string init = shrink::test::random_checkpoint(dir, "small.pt", "conv(8) relu gap linear(classes)", {1, 12, 12}, 10);
  shrink::test::train_synthetic(dir, "run", 1, {"--model.spec=conv(8) relu gap linear(classes)", "--model.init=" + init});
  CATCH_CHECK(shrink::test::read_text(dir / "run/log.txt").find("model.init " + init + " was trained on examples of 1x12x12; these are 1x16x16") !=
              std::string::npos);
}
