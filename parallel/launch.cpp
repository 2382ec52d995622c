#include "parallel/launch.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdlib>
#include <map>
#include <thread>

#include "common/error.h"

namespace shrink {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

pid_t start_worker(const LaunchOptions& o, int local_rank, int port, const std::string& program, const std::vector<std::string>& job) {
  const int world = o.nnodes * o.nproc_per_node, rank = o.node_rank * o.nproc_per_node + local_rank;
  pid_t pid = fork();
  if (pid < 0) throw UserError(fmt::format("launch: cannot start worker {}: fork failed", rank));
  if (pid > 0) return pid;
  const std::map<std::string, std::string> env = {
      {"RANK", std::to_string(rank)},         {"WORLD_SIZE", std::to_string(world)},
      {"LOCAL_RANK", std::to_string(local_rank)}, {"LOCAL_WORLD_SIZE", std::to_string(o.nproc_per_node)},
      {"MASTER_ADDR", o.master_addr},         {"MASTER_PORT", std::to_string(port)},
      {"SHRINK_STORE_SERVED", "1"},           {"SHRINK_TIMEOUT", fmt::format("{}", o.timeout_s)}};
  for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
  if (!o.local_addr.empty()) setenv("SHRINK_LOCAL_ADDR", o.local_addr.c_str(), 1);
  std::vector<char*> argv{const_cast<char*>(program.c_str())};
  for (const auto& w : job) argv.push_back(const_cast<char*>(w.c_str()));
  argv.push_back(nullptr);
  execv(program.c_str(), argv.data());
  std::cerr << "error: launch: cannot run " << program << std::endl;
  _exit(127);
}

// A worker's exit as the launcher reports it: its code, or 128 + the signal that killed it.
int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

LaunchResult launch_workers(const LaunchOptions& o, const std::string& program, const std::vector<std::string>& job) {
  if (o.node_rank >= o.nnodes) throw UserError(fmt::format("launch: --node_rank {} must be below --nnodes {}", o.node_rank, o.nnodes));
  if (o.master_port == 0 && o.nnodes > 1) throw UserError("launch: --master_port 0 (any free port) works on one host only; give the port");
  const int world = o.nnodes * o.nproc_per_node;
  c10::intrusive_ptr<c10d::TCPStore> store;  // served here on node 0, for the life of the job
  int port = o.master_port;
  if (o.node_rank == 0) {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(o.master_port);
    so.isServer = true;
    so.numWorkers = world;
    so.waitWorkers = false;
    so.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000));
    try {
      store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    } catch (const std::exception& e) {
      std::string why = e.what();
      throw UserError(fmt::format("launch: cannot serve the workers' store on {}:{} ({})", o.master_addr, o.master_port, why.substr(0, why.find('\n'))));
    }
    port = store->getPort();
  }
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  std::map<pid_t, int> running;  // pid -> rank
  for (int local = 0; local < o.nproc_per_node; ++local) running[start_worker(o, local, port, program, job)] = o.node_rank * o.nproc_per_node + local;
  LaunchResult result;
  bool stopping = false;
  auto stop_all = [&](int sig) {
    for (const auto& [pid, rank] : running) kill(pid, sig);
  };
  auto stop_deadline = std::chrono::steady_clock::now();
  while (!running.empty()) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0 && running.count(pid)) {
      const int rank = running[pid], code = exit_code(status);
      running.erase(pid);
      if (code != 0 && !stopping) {
        result.code = code;
        result.message = WIFEXITED(status) ? fmt::format("launch: rank {} exited with code {}{}; the other workers were stopped", rank, code,
                                                         code == 2 ? " (a user error: its message is above)" : "")
                                           : fmt::format("launch: rank {} was killed by signal {} ({}); the other workers were stopped", rank,
                                                         WTERMSIG(status), strsignal(WTERMSIG(status)));
        stopping = true;
        stop_all(SIGTERM);
        stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      }
      continue;
    }
    if (g_interrupted && !stopping) {
      result = {130, "launch: interrupted; the workers were stopped"};
      stopping = true;
      stop_all(SIGINT);
      stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
    if (stopping && std::chrono::steady_clock::now() > stop_deadline) stop_all(SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return result;
}

}  // namespace shrink
