#include "parallel/world.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <map>
#include <thread>

#include "common/error.h"

namespace shrink {
namespace {

std::string env(const char* name, const std::string& otherwise = "") {
  const char* v = std::getenv(name);
  return v && *v ? v : otherwise;
}

int env_int(const char* name, int otherwise, int lo, int hi) {
  const std::string text = env(name);
  if (text.empty()) return otherwise;
  try {
    size_t used = 0;
    int v = std::stoi(text, &used);
    if (used == text.size() && v >= lo && v <= hi) return v;
  } catch (const std::exception&) {
  }
  throw UserError(fmt::format("environment variable {}={}: expected an integer in [{}, {}]", name, text, lo, hi));
}

bool loopback(const std::string& host) { return host == "localhost" || host.rfind("127.", 0) == 0; }

}  // namespace

struct World::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

World& World::get() {
  static World world;
  return world;
}

World::World() {
  size_ = env_int("WORLD_SIZE", 1, 1, 65536);
  if (size_ == 1) return;
  rank_ = env_int("RANK", -1, 0, size_ - 1);
  if (rank_ < 0) throw UserError(fmt::format("WORLD_SIZE={} but RANK is not set: a worker needs both (shrink launch sets them)", size_));
  timeout_s_ = env_int("SHRINK_TIMEOUT", 300, 1, 86400);
}

World::~World() = default;

void World::join() {
  if (size_ == 1 || group_) return;
  // A worker that dies closes its sockets; writing to one must fail in Gloo (a collective's error,
  // one line) rather than kill this worker with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  const double timeout_s = timeout_s_;
  const std::string host = env("MASTER_ADDR", "127.0.0.1");
  const int port = env_int("MASTER_PORT", 29500, 1, 65535);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(port);
  // `shrink launch` serves the store itself (SHRINK_STORE_SERVED); a worker started by another
  // launcher is served by rank 0, as torchrun's are.
  store_options.isServer = rank_ == 0 && env("SHRINK_STORE_SERVED").empty();
  store_options.numWorkers = size_;
  store_options.waitWorkers = false;
  store_options.timeout = timeout;
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->threads = 1;  // collectives run one at a time, in step order; more worker threads only contend for the cores
  // The address the other workers reach this one at: SHRINK_LOCAL_ADDR, the loopback when the
  // master is on it (one host), else the address this host's name resolves to.
  const std::string local = env("SHRINK_LOCAL_ADDR", loopback(host) ? "127.0.0.1" : "");
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(host, store_options);
    options->devices.push_back(local.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                             : c10d::ProcessGroupGloo::createDeviceForHostname(local));
    group_ = std::make_unique<Group>();
    group_->store = store;
    group_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank_, size_, options);
  } catch (const std::exception& e) {
    throw UserError(fmt::format("rank {} of {}: cannot reach the other workers through {}:{} within {} s ({})", rank_, size_, host, port,
                                timeout_s, std::string(e.what()).substr(0, std::string(e.what()).find('\n'))));
  }
}

// A collective that fails: a worker hung past the timeout, stopped or died. Gloo tells only that
// this worker's wait ended, so every worker that gives up says so in the store and waits a little
// for the others to say so too; those that stay silent are the ones to blame, and the line names
// them (and leaves them in the store's "shrink/silent" for the launcher).
template <typename Fn>
void World::collective(const char* what, Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  try {
    fn()->wait();
  } catch (const std::exception& e) {
    std::string why = e.what();
    why = why.substr(0, why.find('\n'));
    // Well before the timeout: a connection closed, so the silent worker left rather than hung.
    const bool timed_out = std::chrono::steady_clock::now() - start > std::chrono::duration<double>(0.9 * timeout_s_);
    const std::string silent = silent_workers(timed_out ? fmt::format("did not answer within {} s (hung or stopped)", timeout_s_)
                                                        : std::string("left (stopped on an error or died)"),
                                              timed_out ? std::clamp(timeout_s_, 1.0, 10.0) : 2.0);
    throw UserError(fmt::format("rank {} of {}: {} failed: {} ({})", rank_, size_, what,
                                silent.empty() ? "another worker stopped or did not answer" : silent, why));
  }
}

std::string World::silent_workers(const std::string& how, double grace_s) {
  const auto key = [](int rank) { return fmt::format("shrink/gave_up/{}", rank); };
  try {
    auto& store = *group_->store;
    store.setTimeout(std::chrono::seconds(2));  // the store may be served by a worker that hangs
    store.set(key(rank_), std::vector<uint8_t>{1});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
    std::vector<int> silent;
    do {
      silent.clear();
      for (int r = 0; r < size_; ++r)
        if (!store.check({key(r)})) silent.push_back(r);
      if (silent.empty()) return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (std::chrono::steady_clock::now() < deadline);
    const std::string line = fmt::format("{} {} {}", silent.size() == 1 ? "rank" : "ranks", fmt::join(silent, ", "), how);
    store.set("shrink/silent", std::vector<uint8_t>(line.begin(), line.end()));
    return line;
  } catch (const std::exception&) {
    return "";  // the store is gone too: say what Gloo said
  }
}

void World::all_reduce_sum(const std::vector<torch::Tensor>& tensors) {
  if (size_ == 1 || tensors.empty()) return;
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.reshape(-1));
  std::vector<torch::Tensor> buffer{torch::cat(flat)};
  collective("all-reduce", [&] { return group_->pg->allreduce(buffer); });
  int64_t at = 0;
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    t.copy_(buffer[0].narrow(0, at, t.numel()).view_as(t));
    at += t.numel();
  }
}

void World::broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  if (size_ == 1 || tensors.empty()) return;
  torch::NoGradGuard no_grad;
  // Grouped by dtype (buffers hold integer counters beside float statistics).
  std::map<torch::ScalarType, std::vector<torch::Tensor>> by_type;
  for (const auto& t : tensors) by_type[t.scalar_type()].push_back(t);
  for (auto& [type, group] : by_type) {
    std::vector<torch::Tensor> flat;
    for (const auto& t : group) flat.push_back(t.reshape(-1));
    std::vector<torch::Tensor> buffer{torch::cat(flat)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    collective("broadcast", [&] { return group_->pg->broadcast(buffer, options); });
    int64_t at = 0;
    for (const auto& t : group) {
      t.copy_(buffer[0].narrow(0, at, t.numel()).view_as(t));
      at += t.numel();
    }
  }
}

double World::max(double value) {
  if (size_ == 1) return value;
  std::vector<torch::Tensor> buffer{torch::tensor({value}, torch::kFloat64)};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::MAX;
  collective("all-reduce", [&] { return group_->pg->allreduce(buffer, options); });
  return buffer[0].item<double>();
}

void World::barrier() {
  if (size_ == 1) return;
  collective("barrier", [&] { return group_->pg->barrier(); });
}

int default_worker_threads() {
  unsigned cores = std::thread::hardware_concurrency();
  const int local_workers = env_int("LOCAL_WORLD_SIZE", 1, 1, 65536);
  return std::max(1, static_cast<int>(cores ? cores : 1) / local_workers);
}

}  // namespace shrink
