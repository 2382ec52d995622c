#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/script.h>

#include <fcntl.h>
#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <thread>
#include <tuple>

#include "tests/helpers.h"
#include "tests/pipeline_helpers.h"
#include "jobs/compare.h"
#include "jobs/pipeline.h"
#include "export/export.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

extern char** environ;

using namespace shrink;
using shrink::test::TempDir;
using shrink::test::write_text;

using shrink::test::count;
using shrink::test::measured;
using shrink::test::write_pipeline;

CATCH_TEST_CASE("compare: every model kind loads, agreement and KL are right", "[compare]") {
  TempDir dir;
  Keys keys;
  add_train_options(keys);
  auto job = read_job_config(Config::load(keys, "", {"--job.out=" + dir / "t", "--data.source=synthetic", "--data.synthetic_train=300", "--data.synthetic_test=100",
                                                     "--model.spec=conv(8) relu gap linear(classes)", "--train.epochs=1", "--train.threads=1"}));
  RunOptions quiet;
  quiet.quiet = true;
  run_train_job(job, quiet);
  std::string teacher = dir / "t/checkpoints/last.pt";
  export_model(teacher, dir / "t.shrink", {});
  torch::jit::Module ts("Zero");  // a TorchScript "student" that always answers class 0
  ts.define("def forward(self, x):\n  return torch.cat([torch.ones(x.size(0), 1), torch.zeros(x.size(0), 9)], 1)\n");
  ts.save(dir / "zero.pt");
  CompareOptions o;
  o.teacher = teacher;
  o.students = {teacher, dir / "t.shrink", dir / "zero.pt"};
  o.data = data_config_of_models({teacher}, {});
  o.bench_seconds = 0.05;
  o.batch = 16;
  auto r = compare_models(o);
  const auto& m = r["models"];
  CATCH_CHECK(m[1]["agreement_with_teacher"] == 1.0);
  CATCH_CHECK(m[1]["kl_teacher_student"].get<double>() == Approx(0).margin(1e-9));
  CATCH_CHECK(m[2]["kind"] == "shrink-model");
  CATCH_CHECK(m[2]["agreement_with_teacher"].get<double>() == 1.0);
  CATCH_CHECK(m[3]["kind"] == "torchscript");
  // Agreement with a constant predictor is the teacher's share of class-0 answers; KL by hand.
  SpecNet net = load_checkpoint(teacher).model;
  net->eval();
  Data data = open_data(o.data);
  torch::Tensor x, y;
  data.test->read_range(0, data.test->size(), x, y);
  torch::NoGradGuard no_grad;
  auto tl = torch::log_softmax(net->forward(x), 1);
  auto zl = torch::log_softmax(torch::cat({torch::ones({x.size(0), 1}), torch::zeros({x.size(0), 9})}, 1), 1);
  CATCH_CHECK(m[3]["agreement_with_teacher"].get<double>() == Approx((tl.argmax(1) == 0).to(torch::kFloat64).mean().item<double>()));
  CATCH_CHECK(m[3]["kl_teacher_student"].get<double>() == Approx((tl.exp() * (tl - zl)).sum(1).mean().item<double>()).epsilon(1e-4));
  CATCH_CHECK(m[3]["test_accuracy"].get<double>() == Approx((y == 0).to(torch::kFloat64).mean().item<double>()));
  int64_t cm_total = 0;
  for (const auto& row : m[0]["confusion"])
    for (const auto& v : row) cm_total += v.get<int64_t>();
  CATCH_CHECK(cm_total == 100);
  CATCH_CHECK(m[0].contains("training_curve"));
}

CATCH_TEST_CASE("the HTML report renders in headless Chromium", "[compare][html]") {
  TempDir dir;
  auto teacher_job = [&](const std::string& out, const std::string& spec) {
    Keys keys;
    add_train_options(keys);
    RunOptions quiet;
    quiet.quiet = true;
    run_train_job(read_job_config(Config::load(keys, "", {"--job.out=" + out, "--data.source=synthetic", "--data.synthetic_train=300", "--data.synthetic_test=100",
                                                          "--model.spec=" + spec, "--train.epochs=2", "--train.threads=1"})),
                  quiet);
  };
  teacher_job(dir / "t", "conv(8) relu gap linear(classes)");
  teacher_job(dir / "s", "conv(4) relu gap linear(classes)");
  export_model(dir / "s/checkpoints/last.pt", dir / "s.shrink", {});
  CompareOptions o;
  o.teacher = dir / "t/checkpoints/last.pt";
  o.students = {dir / "s/checkpoints/last.pt", dir / "s.shrink"};
  o.data = data_config_of_models({o.teacher}, {});
  o.bench_seconds = 0.05;
  o.batch = 16;
  auto result = compare_models(o);
  // The .shrink model's memory is the runtime's own (shrink-run, no LibTorch), far below this process's.
  CATCH_CHECK(result["models"][2]["memory_of"] == "shrink-run");
  CATCH_CHECK(result["models"][2]["memory_mb"].get<double>() < result["models"][1]["memory_mb"].get<double>() / 2);
  CATCH_CHECK(result["models"][1]["memory_of"] == "this process (LibTorch)");
  // A budget search's candidates, as a pipeline with a budget attaches them: the report adds their table and frontier.
  result["budget_search"] = {{"budget", 0.5}, {"objective", "size"}, {"val_split", 0.1}, {"validation_examples", 30}, {"teacher_val_accuracy", 0.9},
                             {"chosen", "int8"}, {"budget_met", true}, {"candidates", nlohmann::json::array()}};
  for (auto [name, acc, bytes, ms] : std::vector<std::tuple<std::string, double, int, double>>{
           {"distilled", 0.9, 40000, 0.05}, {"prune-1", 0.898, 24000, 0.05}, {"prune-2", 0.88, 15000, 0.049}, {"int8", 0.896, 7000, 0.03}})
    result["budget_search"]["candidates"].push_back({{"name", name}, {"checkpoint", name + ".pt"}, {"stage", "prune"}, {"precision", name == "int8" ? "int8" : "fp32"},
                                                     {"float_layers", nlohmann::json::array()}, {"kept", 1.0}, {"sparsity", 0.5}, {"val_accuracy", acc},
                                                     {"file_bytes", bytes}, {"latency_ms", ms}, {"within_budget", acc >= 0.895}});
  std::string html = compare_html(result);
  write_text(dir / "report.html", html);
  write_text(dir / "blank.html", "<!DOCTYPE html><html><body></body></html>");
  CATCH_CHECK(html.find("http") == std::string::npos);  // self-contained: nothing fetched
  CATCH_REQUIRE(std::system("command -v chromium >/dev/null") == 0);  // scripts/test installs it
  auto chromium = [&](const std::string& page, const std::string& args) {
    std::string cmd = "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
                      "--disable-component-update --disable-sync --user-data-dir=" + dir / "profile" + " " + args + " file://" + dir / page;
    return shrink::test::run_cmd(cmd);
  };
  chromium("report.html", "--window-size=1200,1400 --screenshot=" + dir / "report.png");
  chromium("blank.html", "--window-size=1200,1400 --screenshot=" + dir / "blank.png");
  auto shot = shrink::test::read_text(dir / "report.png"), blank = shrink::test::read_text(dir / "blank.png");
  CATCH_REQUIRE(shot.size() > 8);
  CATCH_CHECK(shot.substr(1, 3) == "PNG");
  CATCH_CHECK(shot.size() > 5 * blank.size());  // a blank page compresses to almost nothing
  auto dom = chromium("report.html", "--dump-dom").out;
  CATCH_CHECK(count(dom, "class=\"chart\"") == 9);  // 2 scatter plots, per-class bars, 3 confusion matrices, curves, 2 frontiers
  CATCH_CHECK(count(dom, "class=\"axis-label\"") == 18);
  CATCH_CHECK(count(dom, "class=\"legend\"") == 9);
  CATCH_CHECK(count(dom, "class=\"point\"") == 14);  // 3 models x 2 scatter plots, 4 candidates x 2 frontiers
  CATCH_CHECK(count(dom, "class=\"chosen\"") == 2);
  CATCH_CHECK(count(dom, "class=\"budget-floor\"") == 2);
  CATCH_CHECK(count(dom, "class=\"bar\"") == 30);   // 3 models x 10 classes
  CATCH_CHECK(count(dom, "class=\"cell\"") == 300);
  CATCH_CHECK(count(dom, "class=\"curve\"") >= 2);
  // At 1280 px wide, as rendered: nothing reaches past the page, no table cell overflows, no chart
  // overlaps another, and in each chart no text overlaps another or leaves the chart.
  std::string checked = html;
  checked.insert(checked.rfind("</body>"), shrink::test::read_text(std::string(SHRINK_SOURCE_DIR) + "/tests/report_layout.js.html"));
  write_text(dir / "checked.html", checked);
  auto layout = chromium("checked.html", "--window-size=1280,1000 --dump-dom").out;
  auto at = layout.find("data-layout=\"");
  CATCH_REQUIRE(at != std::string::npos);
  CATCH_CHECK(layout.substr(at, layout.find('"', at + 13) - at + 1) == "data-layout=\"ok\"");
}

CATCH_TEST_CASE("pipeline: skips finished stages, --force redoes, a killed run ends with the same table", "[pipeline]") {
  TempDir dir;
  PipelineRun run;
  run.quiet = true;
  run.config = write_pipeline(dir, "run_a");
  auto first = run_pipeline(run);
  CATCH_REQUIRE(first["models"].size() == 3);  // teacher, distilled student, exported int8 student
  CATCH_CHECK(first["models"][2]["kind"] == "shrink-model");
  CATCH_CHECK(std::filesystem::exists(dir / "run_a/compare/report.html"));
  auto stamp = std::filesystem::last_write_time(dir / "run_a/distill/summary.json");
  auto again = run_pipeline(run);
  CATCH_CHECK(measured(again) == measured(first));
  CATCH_CHECK(std::filesystem::last_write_time(dir / "run_a/distill/summary.json") == stamp);
  CATCH_CHECK(count(shrink::test::read_text(dir / "run_a/log.txt"), "skipped") == 6);
  run.force = {"prune"};
  run_pipeline(run);
  CATCH_CHECK(std::filesystem::last_write_time(dir / "run_a/distill/summary.json") == stamp);  // before the forced stage: kept
  CATCH_CHECK(count(shrink::test::read_text(dir / "run_a/log.txt"), "stage prune: running") == 2);
  // An export made from another model than the stages hand it now (after a budget search that
  // chose another, say) is made again, not skipped.
  auto exported = nlohmann::json::parse(shrink::test::read_text(dir / "run_a/export/summary.json"));
  CATCH_CHECK(exported.contains("made_from"));
  exported["made_from"] = "another model";
  shrink::test::write_text(dir / "run_a/export/summary.json", exported.dump());
  run.force = {};
  run_pipeline(run);
  CATCH_CHECK(count(shrink::test::read_text(dir / "run_a/log.txt"), "stage export: finished before from other models") == 1);

  // The same pipeline, killed in the middle of the distillation stage, then run again.
  std::string config = write_pipeline(dir, "run_b");
  std::string bin = SHRINK_BIN;
  std::vector<std::string> args{bin, "pipeline", "--config", config};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  CATCH_REQUIRE(posix_spawn(&pid, bin.c_str(), &actions, nullptr, argv.data(), environ) == 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (!std::filesystem::exists(dir / "run_b/distill/checkpoints/last.pt") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  CATCH_CHECK(WIFSIGNALED(status));  // killed, not finished
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "run_b/distill/summary.json"));
  run.config = config;
  run.force = {};
  auto resumed = run_pipeline(run);
  CATCH_CHECK(count(shrink::test::read_text(dir / "run_b/log.txt"), "stage distill: resuming") == 1);
  CATCH_CHECK(measured(resumed) == measured(first));
}

CATCH_TEST_CASE("pipeline: --STAGE:key=value reaches that stage's job, and a bad key is exit 2 with one line, before any stage runs", "[pipeline][cli]") {
  TempDir dir;
  const std::string config = write_pipeline(dir, "keys");
  auto r = shrink::test::run_cli("pipeline --config " + config + " --pipeline.stages=teacher --teacher:train.epochs=1 '--teacher:optim.lr' 0.02");
  CATCH_INFO(r.out);
  CATCH_REQUIRE(r.code == 0);
  const std::string resolved = shrink::test::read_text(dir / "keys/teacher/config.ini");
  CATCH_CHECK(resolved.find("epochs = 1\n") != std::string::npos);
  CATCH_CHECK(resolved.find("lr = 0.02\n") != std::string::npos);
  CATCH_CHECK(resolved.find("out = " + dir / "keys/teacher\n") != std::string::npos);  // the pipeline's wiring
  CATCH_CHECK(count(shrink::test::read_text(dir / "keys/teacher/metrics.jsonl"), "\n") == 1);
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "keys/distill"));
  // That teacher as a model file (pipeline.teacher): imported once into the pipeline's folder.
  CATCH_REQUIRE(shrink::test::run_cli("export --checkpoint " + dir / "keys/teacher/checkpoints/last.pt --out " + dir / "t.onnx").code == 0);
  const std::string from_file = write_pipeline(dir, "from_file");
  auto f = shrink::test::run_cli("pipeline --config " + from_file + " --pipeline.teacher=" + dir / "t.onnx" + " --pipeline.stages=distill --distill:train.epochs=1");
  CATCH_INFO(f.out);
  CATCH_CHECK(f.code == 0);
  CATCH_CHECK(shrink::test::read_text(dir / "from_file/log.txt").find("pipeline.teacher: " + dir / "t.onnx imported into") != std::string::npos);
  CATCH_CHECK(shrink::test::read_text(dir / "from_file/distill/config.ini").find("from_file/teacher-imported-") != std::string::npos);
  // A teacher file refused is refused before --force removes anything.
  auto missing = shrink::test::run_cli("pipeline --config " + from_file + " --pipeline.teacher=" + dir / "none.shrink" + " --pipeline.stages=distill --force distill");
  CATCH_CHECK(missing.code == 2);
  CATCH_CHECK(missing.out.find("pipeline.teacher " + dir / "none.shrink: no such file") != std::string::npos);
  CATCH_CHECK(std::filesystem::exists(dir / "from_file/distill/summary.json"));

  const std::string bad_config = write_pipeline(dir, "bad");
  const struct {
    std::string words, named;
  } bad[] = {
      {"--distill:optim.lr=abc", "optim.lr"},
      {"--distill:optim.lrr=1", "optim.lrr"},
      {"--quantize:prune.sparsity=0.5", "prune.sparsity"},  // a key of another job
      {"--bogus:optim.lr=1", "bogus"},
      {"--export:optim.lr=1", "export"},  // a stage without a job config
      {"--prune:prune.checkpoint=x.pt", "prune.checkpoint"},  // the pipeline sets it
      {"--teacher:job.out=x", "job.out"},
      {"--pipeline.stages=teacher --distill:optim.lr=0.1", "distill"},  // the stage does not run
      {"--pipeline.stagez=teacher", "pipeline.stagez"},
      {"--pipeline.threads=-1", "pipeline.threads"},
  };
  for (const auto& b : bad) {
    auto e = shrink::test::run_cli("pipeline --config " + bad_config + " " + b.words);
    CATCH_INFO(b.words << " -> " << e.out);
    CATCH_CHECK(e.code == 2);
    CATCH_CHECK(count(e.out, "\n") == 1);
    CATCH_CHECK(e.out.find(b.named) != std::string::npos);
    CATCH_CHECK_FALSE(std::filesystem::exists(dir / "bad"));  // nothing started
  }
}

CATCH_TEST_CASE("run directory: --resume and --overwrite mean the same for every job", "[pipeline][rundir]") {
  TempDir dir;
  const std::string run = dir / "run";
  RunOptions fresh, resume, overwrite;
  fresh.quiet = resume.quiet = overwrite.quiet = true;
  resume.resume = true;
  overwrite.overwrite = true;
  CATCH_CHECK_THROWS_WITH(RunDir::open_training(run, "", resume), Catch::Contains("has no checkpoint to resume from"));
  {
    RunDir d = RunDir::open_training(run, "[train]\nepochs = 1\n", fresh);
    d.log().line("first run");
    CATCH_CHECK(shrink::test::read_text(run + "/config.ini") == "[train]\nepochs = 1\n");
    write_text(d.checkpoint(), "a checkpoint");
    write_text(d.checkpoint("epoch-3.pt"), "a kept checkpoint");
  }
  CATCH_CHECK(RunDir::holds_checkpoint(run));
  CATCH_CHECK_THROWS_WITH(RunDir::open_training(run, "", fresh), Catch::Contains("already holds a run"));
  RunDir::open_training(run, "", resume).log().line("resumed");
  CATCH_CHECK(count(shrink::test::read_text(run + "/log.txt"), "\n") == 2);
  // --overwrite starts afresh: nothing of the run it replaces is left to be resumed or rewound to.
  RunDir::open_training(run, "[train]\nepochs = 2\n", overwrite);
  CATCH_CHECK_FALSE(RunDir::holds_checkpoint(run));
  CATCH_CHECK_FALSE(std::filesystem::exists(run + "/checkpoints/epoch-3.pt"));
  CATCH_CHECK(shrink::test::read_text(run + "/log.txt").empty());
  CATCH_CHECK(shrink::test::read_text(run + "/config.ini") == "[train]\nepochs = 2\n");
  // A job of several training runs refuses a folder holding a run, before its config.ini changes;
  // --resume opens it as it is (each part resumes or starts by what it finds).
  std::filesystem::create_directories(run + "/round-1");
  write_text(run + "/round-1/summary.json", "{}");
  CATCH_CHECK_THROWS_WITH(RunDir::open_stages(run, "changed", fresh), Catch::Contains("already holds a run"));
  CATCH_CHECK(shrink::test::read_text(run + "/config.ini") == "[train]\nepochs = 2\n");
  RunDir::open_stages(run, "[train]\nepochs = 2\n", resume);
  CATCH_CHECK(RunDir::finished(run + "/round-1"));
  RunDir::open_stages(run, "", overwrite);
  CATCH_CHECK_FALSE(std::filesystem::exists(run + "/round-1"));
}
