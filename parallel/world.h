// Data-parallel training: this process's place among the workers of one job, and the collectives
// the trainer needs, on c10d's ProcessGroupGloo (the collective engine PyTorch's own
// DistributedDataParallel uses) over a TCPStore. A worker learns its place from the environment
// torchrun also sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT);
// `shrink launch` sets it for the workers it starts. Without WORLD_SIZE (or with 1) the process is
// alone and every collective is a no-op, so a job runs the same code on 1 or N processes.
// c10d's types stay in world.cpp.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace shrink {

class World {
 public:
  // The process's world, read from the environment on first use (a bad value is a UserError).
  static World& get();
  // Connects to the other workers (once). Every wait, this one and each collective's, lasts at
  // most SHRINK_TIMEOUT seconds (`shrink launch --timeout`; default 300).
  void join();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool distributed() const { return size_ > 1; }
  bool leader() const { return rank_ == 0; }  // writes the run directory

  // In place, summed over the workers: the tensors travel as one buffer (one message, whatever
  // their number). Float tensors of one dtype.
  void all_reduce_sum(const std::vector<torch::Tensor>& tensors);
  // In place, from `root`'s values.
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0);
  double max(double value);  // the largest of a number over the workers
  void barrier();

  ~World();

 private:
  World();
  // Runs one collective; a failure is one line naming the workers that did not answer.
  template <typename Fn>
  void collective(const char* what, Fn&& fn);
  // After a failed collective: "rank 2 HOW" (or "ranks 1, 3 HOW") for the workers that did not
  // give up on it too within `grace_s`, or "".
  std::string silent_workers(const std::string& how, double grace_s);
  struct Group;
  int rank_ = 0, size_ = 1;
  double timeout_s_ = 300;
  std::unique_ptr<Group> group_;
};

// Threads a worker's training uses by default: the cores shared by the workers on this host
// (LOCAL_WORLD_SIZE), at least one.
int default_worker_threads();

}  // namespace shrink
