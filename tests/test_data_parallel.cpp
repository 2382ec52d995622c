// Data parallel (shrink launch): 2 workers of 1 thread on the loopback end with the weights one
// process gets with the same global batch, for plain training with SyncBatchNorm and for
// distillation; failures stop every worker with one line naming the rank.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <future>
#include <thread>

#include "tests/helpers.h"
#include "tests/pipeline_helpers.h"
#include "train/checkpoint.h"

using shrink::test::run_cli;
using shrink::test::TempDir;

namespace {

// Synthetic data, a model with batchnorm, random shifts, 5 epochs of 10 steps; the global batch of
// 65 splits 32/33 and the last batch of each epoch (15) 7/8. At lr 0.05 the float rounding that
// tells the synchronized batchnorm from LibTorch's (1e-7 after a step) flips a maxpool's choice
// within 50 steps and the runs part by 8e-4; two workers and one process running the same
// batchnorm code stayed within 7e-7 even there.
const char* kJob =
    "[data]\nsource = synthetic\nshape = 1,16,16\nsynthetic_train = 600\nsynthetic_test = 200\nshift = 1\n"
    "[model]\nspec = conv(8) bn relu maxpool(2) conv(16) bn relu gap linear(classes)\n"
    "[train]\nepochs = 5\nbatch_size = 65\nthreads = 1\nsync_batchnorm = true\n[optim]\nlr = 0.02\n";

// The largest difference between two checkpoints' parameters and buffers.
double max_difference(const std::string& a, const std::string& b) {
  auto ma = shrink::load_checkpoint(a).model, mb = shrink::load_checkpoint(b).model;
  auto pa = ma->named_parameters(), pb = mb->named_parameters();
  double worst = 0;
  for (const auto& item : pa) {
    const double d = (item.value() - pb[item.key()]).abs().max().item<double>();
    if (d > worst) CATCH_UNSCOPED_INFO(item.key() << " differs by " << d);
    worst = std::max(worst, d);
  }
  auto ba = ma->named_buffers(), bb = mb->named_buffers();
  for (const auto& item : ba) {
    const double d = (item.value().to(torch::kFloat64) - bb[item.key()].to(torch::kFloat64)).abs().max().item<double>();
    if (d > worst) CATCH_UNSCOPED_INFO(item.key() << " differs by " << d);
    worst = std::max(worst, d);
  }
  return worst;
}

// A port no one listens on now (two launchers need to be told one: port 0 serves one host only).
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof a;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &size);
  close(fd);
  return ntohs(a.sin_port);
}

// The worker of this rank whose command line names `marker` (0 while none runs yet).
pid_t worker_pid(int rank, const std::string& marker) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string cmdline = shrink::test::read_text(entry.path() / "cmdline"), environ = shrink::test::read_text(entry.path() / "environ");
    if (cmdline.find(marker) != std::string::npos && cmdline.find("launch") == std::string::npos &&
        environ.find(fmt::format("{}RANK={}{}", '\0', rank, '\0')) != std::string::npos)
      return std::stoi(entry.path().filename().string());
  }
  return 0;
}

std::string launch2(const std::string& job) { return "launch --nproc_per_node 2 --master_port 0 --timeout 60 -- " + job; }

}  // namespace

CATCH_TEST_CASE("2 workers train as 1 process with the same global batch (SyncBatchNorm, uneven shards)", "[parallel]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", kJob);
  auto one = run_cli("train --config " + dir / "job.ini --out " + dir / "one");
  CATCH_REQUIRE(one.code == 0);
  auto two = run_cli(launch2("train --config " + dir / "job.ini --out " + dir / "two"));
  CATCH_INFO(two.out);
  CATCH_REQUIRE(two.code == 0);
  CATCH_CHECK(max_difference(dir / "one/checkpoints/last.pt", dir / "two/checkpoints/last.pt") <= 1e-4);
  CATCH_CHECK(shrink::test::read_text(dir / "two/log.txt").find("rank 0 of 2 workers") != std::string::npos);
  CATCH_CHECK(shrink::test::read_text(dir / "two/rank-1.log").find("rank 1 of 2 workers") != std::string::npos);
  // A last batch of one example, fewer than the workers: each takes it whole and half its loss, and
  // no worker runs an empty step. Synchronized, the running variance's n/(n-1) then counts the
  // example twice (1/64 against 1/128 for bn2's 64 values, in that one update of the epoch).
  for (const char* sync : {"false", "true"}) {
    const std::string tail = std::string(" --data.synthetic_train=586 --train.epochs=2 --train.sync_batchnorm=") + sync + " --out ";
    auto r = run_cli(launch2("train --config " + dir / "job.ini" + tail + dir / "tail2-" + sync));
    CATCH_INFO(r.out);
    CATCH_CHECK(r.code == 0);
    // The train loss and accuracy count that example once, not once per worker.
    CATCH_CHECK(shrink::read_checkpoint_meta(dir / ("tail2-" + std::string(sync) + "/checkpoints/last.pt"))["train_samples"] == 2 * 586);
  }
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --data.synthetic_train=586 --train.epochs=2 --out " + dir / "tail1").code == 0);
  CATCH_CHECK(max_difference(dir / "tail1/checkpoints/last.pt", dir / "tail2-true/checkpoints/last.pt") <= 1e-2);
  // --resume on 2 workers of a run 1 process started (rank 0 holds the checkpoint; rank 1 gets it).
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --out " + dir / "r1 --train.epochs=2").code == 0);
  std::filesystem::copy(dir / "r1", dir / "r2", std::filesystem::copy_options::recursive);
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --out " + dir / "r1 --resume --train.epochs=4").code == 0);
  auto resumed = run_cli(launch2("train --config " + dir / "job.ini --out " + dir / "r2 --resume --train.epochs=4"));
  CATCH_INFO(resumed.out);
  CATCH_REQUIRE(resumed.code == 0);
  CATCH_CHECK(max_difference(dir / "r1/checkpoints/last.pt", dir / "r2/checkpoints/last.pt") <= 1e-4);
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "r2/rank-1-resume.pt"));
  // Without SyncBatchNorm each worker normalizes with its own half: another model.
  auto unsynced = run_cli(launch2("train --config " + dir / "job.ini --out " + dir / "unsynced --train.sync_batchnorm=false"));
  CATCH_REQUIRE(unsynced.code == 0);
  CATCH_CHECK(max_difference(dir / "one/checkpoints/last.pt", dir / "unsynced/checkpoints/last.pt") > 1e-3);
}

CATCH_TEST_CASE("2 workers distil as 1 process, each running the teacher on its shard", "[parallel]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", kJob);
  std::string student_job = kJob;
  student_job.replace(student_job.find("[model]"), 7, "[student]");
  shrink::test::write_text(dir / "distill.ini", student_job);
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --out " + dir / "teacher --train.epochs=1").code == 0);
  const std::string distill = "distill --config " + dir / "distill.ini --teacher.path=" + dir / "teacher/checkpoints/last.pt " +
                              "'--student.spec=conv(4) bn relu gap linear(classes)' --distill.cache_dir=" + dir / "cache --out ";
  CATCH_REQUIRE(run_cli(distill + dir / "one").code == 0);
  auto two = run_cli(launch2(distill + dir / "two"));
  CATCH_INFO(two.out);
  CATCH_REQUIRE(two.code == 0);
  CATCH_CHECK(max_difference(dir / "one/checkpoints/last.pt", dir / "two/checkpoints/last.pt") <= 1e-4);
  // The soft-target loss in the metrics is the whole batch's mean, as one process's.
  auto kd_loss = [&](const char* run) {
    return nlohmann::json::parse(shrink::test::read_text(dir / run + "/summary.json"))["kd_loss_final"].template get<double>();
  };
  CATCH_CHECK(kd_loss("two") == Approx(kd_loss("one")).epsilon(1e-4));
}

CATCH_TEST_CASE("a failing worker stops the job: exit 2 for a user error, one line naming the rank", "[parallel]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", kJob);
  auto missing = run_cli(launch2("train --config " + dir / "job.ini --data.source=hdf5 --data.path=" + dir / "none.h5 --out " + dir / "run"));
  CATCH_INFO(missing.out);
  CATCH_CHECK(missing.code == 2);
  const size_t first = missing.out.find("none.h5: no such file");
  CATCH_CHECK(first != std::string::npos);
  CATCH_CHECK(missing.out.find("none.h5: no such file", first + 1) == std::string::npos);  // both workers' line, shown once
  CATCH_CHECK(missing.out.find("error: launch: rank ") != std::string::npos);
  CATCH_CHECK(missing.out.find("exited with code 2") != std::string::npos);

  // A worker that hangs (stopped here): the other waits --timeout seconds, then the line names the
  // silent one.
  auto long_job = std::async(std::launch::async, [&] {
    return run_cli("launch --nproc_per_node 2 --master_port 0 --timeout 3 -- train --config " + dir / "job.ini --train.epochs=1000 --out " + dir / "hang");
  });
  pid_t rank1 = 0;
  for (int tries = 0; tries < 600 && !rank1; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (std::filesystem::exists(dir / "hang/rank-1.log")) rank1 = worker_pid(1, dir / "hang");
  }
  CATCH_REQUIRE(rank1 > 0);
  kill(rank1, SIGSTOP);
  auto hung = long_job.get();
  CATCH_INFO(hung.out);
  CATCH_CHECK(hung.code == 2);
  CATCH_CHECK(hung.out.find("rank 0 of 2: all-reduce failed: rank 1 did not answer within 3 s (hung or stopped)") != std::string::npos);
  CATCH_CHECK(hung.out.find("launch: rank 1 did not answer within 3 s (hung or stopped); the other workers were stopped") != std::string::npos);

  auto no_job = run_cli("launch --nproc_per_node 2");
  CATCH_CHECK(no_job.code == 2);
  CATCH_CHECK(no_job.out.find("give the job after --") != std::string::npos);
}

CATCH_TEST_CASE("workers started by hand with torchrun's environment: rank 0 serves the store", "[parallel]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", kJob);
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --out " + dir / "one").code == 0);
  const std::string env = fmt::format("WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={} SHRINK_TIMEOUT=60 ", free_port());
  auto worker = [&](int rank) {
    return shrink::test::run_cmd(env + fmt::format("RANK={} LOCAL_RANK={} ", rank, rank) + SHRINK_BIN + " train --config " + dir / "job.ini --out " +
                                 dir / "two");
  };
  auto second = std::async(std::launch::async, worker, 1);
  auto first = worker(0);
  auto rank1 = second.get();
  CATCH_INFO(first.out << rank1.out);
  CATCH_REQUIRE(first.code == 0);
  CATCH_REQUIRE(rank1.code == 0);
  CATCH_CHECK(first.out.find("data parallel: rank 0 of 2 workers") != std::string::npos);
  CATCH_CHECK(std::filesystem::exists(dir / "two/rank-1.log"));
  CATCH_CHECK(max_difference(dir / "one/checkpoints/last.pt", dir / "two/checkpoints/last.pt") <= 1e-4);
}

CATCH_TEST_CASE("two hosts: a launcher on each of two loopback addresses, no shared folder", "[parallel]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", kJob);
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --out " + dir / "one").code == 0);
  const std::string node = fmt::format("launch --nnodes 2 --nproc_per_node 1 --master_addr 127.0.0.1 --master_port {} --timeout 60 ", free_port());
  auto host_b = std::async(std::launch::async, [&] {
    return run_cli(node + "--node_rank 1 --local_addr 127.0.0.2 -- train --config " + dir / "job.ini --out " + dir / "hostB/run");
  });
  auto a = run_cli(node + "--node_rank 0 --local_addr 127.0.0.1 -- train --config " + dir / "job.ini --out " + dir / "hostA/run");
  auto b = host_b.get();
  CATCH_INFO(a.out << b.out);
  CATCH_REQUIRE(a.code == 0);
  CATCH_REQUIRE(b.code == 0);
  CATCH_CHECK(max_difference(dir / "one/checkpoints/last.pt", dir / "hostA/run/checkpoints/last.pt") <= 1e-4);
  CATCH_CHECK(std::filesystem::exists(dir / "hostB/run/rank-1.log"));  // host B keeps its worker's log only
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "hostB/run/checkpoints"));

  // Host B lacks the data: its worker stops on the user error, and host A's, left waiting, stops
  // too (the connection closes; at the latest after --timeout) with a line naming its rank.
  const std::string again = fmt::format("launch --nnodes 2 --nproc_per_node 1 --master_addr 127.0.0.1 --master_port {} --timeout 20 ", free_port());
  auto missing_b = std::async(std::launch::async, [&] {
    return run_cli(again + "--node_rank 1 --local_addr 127.0.0.2 -- train --config " + dir / "job.ini --data.source=hdf5 --data.path=" + dir /
                   "none.h5 --out " + dir / "hostB/run2");
  });
  auto waiting_a = run_cli(again + "--node_rank 0 --local_addr 127.0.0.1 -- train --config " + dir / "job.ini --out " + dir / "hostA/run2");
  auto failed_b = missing_b.get();
  CATCH_INFO(waiting_a.out << failed_b.out);
  CATCH_CHECK(failed_b.code == 2);
  CATCH_CHECK(failed_b.out.find("none.h5: no such file") != std::string::npos);
  CATCH_CHECK(waiting_a.code == 2);
  CATCH_CHECK(waiting_a.out.find("rank 0 of 2: ") != std::string::npos);
  CATCH_CHECK(waiting_a.out.find("launch: rank 1 left (stopped on an error or died)") != std::string::npos);
}

namespace {

// Zeros of every conv and linear weight, as one tensor.
torch::Tensor zero_pattern(const std::string& checkpoint) {
  std::vector<torch::Tensor> zeros;
  for (const auto& p : shrink::load_checkpoint(checkpoint).model->named_parameters())
    if (p.key().find("conv") != std::string::npos || p.key().find("linear") != std::string::npos) zeros.push_back((p.value() == 0).flatten());
  return torch::cat(zeros);
}

}  // namespace

CATCH_TEST_CASE("2 workers prune and quantize as 1 process: the same masks, observer ranges and scales", "[parallel]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", kJob);
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --out " + dir / "base").code == 0);
  std::string stage = kJob;
  stage.replace(stage.find("[model]"), stage.find("[train]") - stage.find("[model]"), "");
  shrink::test::write_text(dir / "prune.ini", stage + "[prune]\ncheckpoint = " + dir / "base/checkpoints/last.pt" +
                                                  "\nmethod = unstructured\nschedule = oneshot\nsparsity = 0.5\n");
  CATCH_REQUIRE(run_cli("prune --config " + dir / "prune.ini --out " + dir / "p1").code == 0);
  auto pruned = run_cli(launch2("prune --config " + dir / "prune.ini --out " + dir / "p2"));
  CATCH_INFO(pruned.out);
  CATCH_REQUIRE(pruned.code == 0);
  // Rank 1 kept its own run folder beside rank 0's: the same masks and weights.
  CATCH_CHECK(torch::equal(zero_pattern(dir / "p2/checkpoints/last.pt"), zero_pattern(dir / "p2.rank-1/checkpoints/last.pt")));
  CATCH_CHECK(torch::equal(zero_pattern(dir / "p1/checkpoints/last.pt"), zero_pattern(dir / "p2/checkpoints/last.pt")));
  CATCH_CHECK(max_difference(dir / "p2/checkpoints/last.pt", dir / "p2.rank-1/checkpoints/last.pt") == 0);
  CATCH_CHECK(max_difference(dir / "p1/checkpoints/last.pt", dir / "p2/checkpoints/last.pt") <= 1e-4);

  // QAT, 50 steps: observer ranges are the global batch's (max over the workers) and batchnorm
  // synchronized (train.sync_batchnorm = auto). The workers agree exactly. (Until the fake
  // quantization's gradient mask was taken from the rounded value, float rounding decided whether
  // each channel's largest weight got a gradient, and such runs parted by up to 2e-3.)
  shrink::test::write_text(dir / "qat.ini", stage + "[quantize]\ncheckpoint = " + dir / "base/checkpoints/last.pt" +
                                                "\nmode = qat\nobserver = ema\ncalibration_batches = 4\n");
  const std::string qat = "quantize --config " + dir / "qat.ini --optim.lr=0.005 ";  // a fine-tuning rate
  CATCH_REQUIRE(run_cli(qat + "--out " + dir / "q1").code == 0);
  auto quantized = run_cli(launch2(qat + "--out " + dir / "q2"));
  CATCH_INFO(quantized.out);
  CATCH_REQUIRE(quantized.code == 0);
  CATCH_CHECK(shrink::test::read_text(dir / "q2/log.txt").find("batchnorm synchronized") != std::string::npos);
  CATCH_CHECK(max_difference(dir / "q2/checkpoints/last.pt", dir / "q2.rank-1/checkpoints/last.pt") == 0);  // ranges and scales too
  auto s0 = nlohmann::json::parse(shrink::test::read_text(dir / "q2/summary.json"))["scales"];
  auto s1 = nlohmann::json::parse(shrink::test::read_text(dir / "q2.rank-1/summary.json"))["scales"];
  CATCH_CHECK(s0 == s1);
  CATCH_CHECK(max_difference(dir / "q1/checkpoints/last.pt", dir / "q2/checkpoints/last.pt") <= 1e-4);

  // --resume data parallel: rank 0's folder is copied to rank 1, which goes on from it. A second
  // QAT epoch resumed on 2 workers, against the same resumed as one process.
  CATCH_REQUIRE(run_cli(qat + "--train.epochs=1 --out " + dir / "q3").code == 0);
  std::filesystem::copy(dir / "q3", dir / "q4", std::filesystem::copy_options::recursive);
  CATCH_REQUIRE(run_cli(qat + "--train.epochs=2 --resume --out " + dir / "q3").code == 0);
  auto resumed = run_cli(launch2(qat + "--train.epochs=2 --resume --out " + dir / "q4"));
  CATCH_INFO(resumed.out);
  CATCH_REQUIRE(resumed.code == 0);
  CATCH_CHECK(max_difference(dir / "q4/checkpoints/last.pt", dir / "q4.rank-1/checkpoints/last.pt") == 0);
  CATCH_CHECK(max_difference(dir / "q3/checkpoints/last.pt", dir / "q4/checkpoints/last.pt") <= 1e-4);

  // A pruning job of two rounds stopped after its first, resumed on 2 workers: the same masks.
  const std::string iterative = "prune --config " + dir / "prune.ini --prune.schedule=iterative --prune.rounds=2 --train.epochs=1 --out ";
  CATCH_REQUIRE(run_cli(iterative + dir / "p3").code == 0);
  CATCH_REQUIRE(run_cli(iterative + dir / "p4").code == 0);
  std::filesystem::remove_all(dir / "p4/round-2");
  std::filesystem::remove(dir / "p4/summary.json");
  auto round2 = run_cli(launch2(iterative + dir / "p4 --resume"));
  CATCH_INFO(round2.out);
  CATCH_REQUIRE(round2.code == 0);
  CATCH_CHECK(std::filesystem::exists(dir / "p4.rank-1/round-1/summary.json"));  // rank 0's round 1, copied
  CATCH_CHECK(torch::equal(zero_pattern(dir / "p3/checkpoints/last.pt"), zero_pattern(dir / "p4/checkpoints/last.pt")));
  CATCH_CHECK(max_difference(dir / "p4/checkpoints/last.pt", dir / "p4.rank-1/checkpoints/last.pt") == 0);
}

CATCH_TEST_CASE("a pipeline on 2 workers: every job stage data parallel, export and compare on rank 0, resumable", "[parallel]") {
  TempDir dir;
  const std::string one = shrink::test::write_pipeline(dir, "one", {}, "stages = teacher,distill\n");
  CATCH_REQUIRE(run_cli("pipeline --config " + one).code == 0);
  // The teacher and distillation as one process; on 2 workers the pipeline skips them (rank 1
  // gets their models from rank 0) and runs the rest.
  std::filesystem::copy(dir / "one", dir / "two", std::filesystem::copy_options::recursive);
  const std::map<std::string, std::string> synced = {{"prune", "--train.sync_batchnorm=true"}};  // as one process's
  const std::string two = shrink::test::write_pipeline(dir, "two", synced);
  auto r = run_cli(launch2("pipeline --config " + two));
  CATCH_INFO(r.out);
  CATCH_REQUIRE(r.code == 0);
  CATCH_CHECK(r.out.find("stage distill: finished before, skipped") != std::string::npos);
  CATCH_CHECK(r.out.find("final student") != std::string::npos);
  CATCH_CHECK(std::filesystem::exists(dir / "two/compare/compare.json"));
  CATCH_CHECK(std::filesystem::exists(dir / "two.rank-1/quantize/summary.json"));
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "two.rank-1/export"));  // export and compare: rank 0's
  CATCH_CHECK(max_difference(dir / "two/distill/checkpoints/last.pt", dir / "two.rank-1/distill/checkpoints/last.pt") == 0);
  // The same on one process, and again with the quantization stage interrupted (no summary):
  // on 2 workers it resumes, rank 1 from rank 0's folder.
  const std::string single = shrink::test::write_pipeline(dir, "single", synced);
  std::filesystem::copy(dir / "one", dir / "single", std::filesystem::copy_options::recursive);
  CATCH_REQUIRE(run_cli("pipeline --config " + single).code == 0);
  CATCH_CHECK(torch::equal(zero_pattern(dir / "single/prune/checkpoints/last.pt"), zero_pattern(dir / "two/prune/checkpoints/last.pt")));
  CATCH_CHECK(max_difference(dir / "single/prune/checkpoints/last.pt", dir / "two/prune/checkpoints/last.pt") <= 1e-4);
  CATCH_CHECK(max_difference(dir / "single/quantize/checkpoints/last.pt", dir / "two/quantize/checkpoints/last.pt") <= 1e-4);
  std::filesystem::remove(dir / "two/quantize/summary.json");
  std::filesystem::remove_all(dir / "two/export");
  std::filesystem::remove_all(dir / "two/compare");
  auto again = run_cli(launch2("pipeline --config " + two));
  CATCH_INFO(again.out);
  CATCH_REQUIRE(again.code == 0);
  CATCH_CHECK(again.out.find("stage quantize: resuming") != std::string::npos);
  CATCH_CHECK(std::filesystem::exists(dir / "two/export/student.shrink"));
  // A budget's search is one process's.
  const std::string budget = shrink::test::write_pipeline(dir, "budget", {}, "budget = 1\n");
  auto refused = run_cli(launch2("pipeline --config " + budget));
  CATCH_CHECK(refused.code == 2);
  CATCH_CHECK(refused.out.find("the budget's search runs as one process") != std::string::npos);
}
