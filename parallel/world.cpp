#include "parallel/world.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <fmt/format.h>

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
    group_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank_, size_, options);
  } catch (const std::exception& e) {
    throw UserError(fmt::format("rank {} of {}: cannot reach the other workers through {}:{} within {} s ({})", rank_, size_, host, port,
                                timeout_s, std::string(e.what()).substr(0, std::string(e.what()).find('\n'))));
  }
}

namespace {

// A collective that fails (a worker died, hung past the timeout, or left) is one line naming this
// rank; the launcher names the worker that failed first.
template <typename Fn>
void collective(int rank, int size, double timeout_s, const char* what, Fn&& fn) {
  try {
    fn()->wait();
  } catch (const std::exception& e) {
    std::string why = e.what();
    throw UserError(fmt::format("rank {} of {}: {} failed: another worker stopped or did not answer within {} s ({})", rank, size, what,
                                timeout_s, why.substr(0, why.find('\n'))));
  }
}

}  // namespace

void World::all_reduce_sum(const std::vector<torch::Tensor>& tensors) {
  if (size_ == 1 || tensors.empty()) return;
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.reshape(-1));
  std::vector<torch::Tensor> buffer{torch::cat(flat)};
  collective(rank_, size_, timeout_s_, "all-reduce", [&] { return group_->pg->allreduce(buffer); });
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
    collective(rank_, size_, timeout_s_, "broadcast", [&] { return group_->pg->broadcast(buffer, options); });
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
  collective(rank_, size_, timeout_s_, "all-reduce", [&] { return group_->pg->allreduce(buffer, options); });
  return buffer[0].item<double>();
}

void World::barrier() {
  if (size_ == 1) return;
  collective(rank_, size_, timeout_s_, "barrier", [&] { return group_->pg->barrier(); });
}

int default_worker_threads() {
  unsigned cores = std::thread::hardware_concurrency();
  const int local_workers = env_int("LOCAL_WORLD_SIZE", 1, 1, 65536);
  return std::max(1, static_cast<int>(cores ? cores : 1) / local_workers);
}

}  // namespace shrink
