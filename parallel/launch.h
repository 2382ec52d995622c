// `shrink launch`: starts this host's workers of a data-parallel job (torchrun's flag names) and
// watches them. Each worker is this program again, running the job's command with RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set. The launcher on node
// 0 serves the workers' TCPStore (port 0: one the system picks, on one host). When a worker fails,
// the others are stopped and the launcher exits with its code (2 for a user error); Ctrl-C stops
// them all.
#pragma once
#include <string>
#include <vector>

namespace shrink {

struct LaunchOptions {
  int nproc_per_node = 1;
  int nnodes = 1, node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;   // 0: any free port (one host only)
  int timeout_s = 300;       // a worker that does not answer a collective for this long stops the job
  std::string local_addr;    // the address this host's workers are reached at (empty: see world.cpp)
};

struct LaunchResult {
  int code = 0;         // the first failed worker's exit code (128 + signal when killed), 130 when interrupted
  std::string message;  // which worker failed and how (empty: all finished)
};

// Runs `program` (this executable) with `job` (its words) as nproc_per_node workers and waits for
// them all.
LaunchResult launch_workers(const LaunchOptions& options, const std::string& program, const std::vector<std::string>& job);

}  // namespace shrink
