#include "parallel/launch.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <fmt/format.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "common/error.h"

namespace shrink {
namespace {

volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

// The workers' stderr, forwarded line by line, less the lines another worker already printed: an
// error every worker hits (a bad option, missing data) shows once, not once per worker.
class WorkerErrors {
 public:
  // A pipe for one more worker: returns the end its stderr writes to.
  int open() {
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) != 0) throw UserError("launch: cannot create a pipe for a worker's messages");
    streams_.push_back({ends[0], ""});
    return ends[1];
  }
  // Forwards what the workers wrote, waiting up to `wait_ms` for something.
  void forward(int wait_ms) {
    std::vector<pollfd> fds;
    for (const auto& s : streams_) fds.push_back({s.fd, POLLIN, 0});
    if (fds.empty()) return std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    if (poll(fds.data(), fds.size(), wait_ms) <= 0) return;
    for (size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents) read_from(streams_[i]);
    streams_.erase(std::remove_if(streams_.begin(), streams_.end(), [](const Stream& s) { return s.fd < 0; }), streams_.end());
  }
  // After the last worker exited: the rest of what they wrote.
  void drain() {
    while (!streams_.empty()) forward(1000);
  }

 private:
  struct Stream {
    int fd;
    std::string partial;  // a line not yet ended
  };
  void read_from(Stream& s) {
    char chunk[4096];
    const ssize_t n = read(s.fd, chunk, sizeof chunk);
    if (n > 0) s.partial.append(chunk, static_cast<size_t>(n));
    size_t end;
    while ((end = s.partial.find('\n')) != std::string::npos) {
      show(s.partial.substr(0, end + 1));
      s.partial.erase(0, end + 1);
    }
    if (n <= 0 && !(n < 0 && errno == EINTR)) {  // the worker closed it (exited)
      if (!s.partial.empty()) show(s.partial + "\n");
      close(s.fd);
      s.fd = -1;
    }
  }
  void show(const std::string& line) {
    if (shown_.insert(line).second) std::cerr << line << std::flush;
  }
  std::vector<Stream> streams_;
  std::set<std::string> shown_;
};

pid_t start_worker(const LaunchOptions& o, int local_rank, int port, const std::string& program, const std::vector<std::string>& job,
                   WorkerErrors& errors) {
  const int world = o.nnodes * o.nproc_per_node, rank = o.node_rank * o.nproc_per_node + local_rank;
  const int stderr_end = errors.open();
  pid_t pid = fork();
  if (pid < 0) throw UserError(fmt::format("launch: cannot start worker {}: fork failed", rank));
  if (pid > 0) {
    close(stderr_end);
    return pid;
  }
  dup2(stderr_end, STDERR_FILENO);
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

// The workers a worker found silent after a collective failed (World::silent_workers), from the
// store this launcher serves; "" when none was named or the store is elsewhere (not node 0).
std::string silent_workers(c10d::TCPStore* store) {
  try {
    if (!store || !store->check({"shrink/silent"})) return "";
    const auto bytes = store->get("shrink/silent");
    return std::string(bytes.begin(), bytes.end());
  } catch (const std::exception&) {
    return "";
  }
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
  WorkerErrors errors;
  for (int local = 0; local < o.nproc_per_node; ++local)
    running[start_worker(o, local, port, program, job, errors)] = o.node_rank * o.nproc_per_node + local;
  LaunchResult result;
  bool stopping = false;
  auto stop_all = [&](int sig) {
    for (const auto& [pid, rank] : running) {
      kill(pid, sig);
      kill(pid, SIGCONT);  // a stopped worker takes the signal now, not when resumed
    }
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
        const std::string silent = silent_workers(store.get());
        if (!silent.empty())
          result.message = fmt::format("launch: {}; the other workers were stopped", silent);
        else
          result.message = WIFEXITED(status) ? fmt::format("launch: rank {} exited with code {}{}; the other workers were stopped", rank, code,
                                                           code == 2 ? " (a user error: its message is above)" : "")
                                             : fmt::format("launch: rank {} was killed by signal {} ({}); the other workers were stopped",
                                                           rank, WTERMSIG(status), strsignal(WTERMSIG(status)));
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
    errors.forward(20);
  }
  errors.drain();
  return result;
}

}  // namespace shrink
