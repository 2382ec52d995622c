// What the trainer does as one of several data-parallel workers (parallel/world.h): every worker
// starts from rank 0's weights, trains on its shard of each global batch, and steps with the
// gradient of the whole batch; only rank 0 writes the run directory. On one process each of these
// does nothing.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "train/config.h"
#include "train/run_dir.h"

namespace shrink {

// Joins the other workers.
void join_workers();
// A job of stages (prune's rounds, quantization's calibration and QAT) as this worker runs it: on
// rank 0 as given; on rank K in OUT.rank-K (unless the caller gave it a folder of its own,
// RunOptions::worker_folder), quiet. Every worker runs every step of the job (its collectives in
// step), from the same data and seed; with --resume, from a copy of rank 0's OUT.
void as_stage_worker(JobConfig& job, RunOptions& options);
// Rank 0's file `leader_path`, copied to `path` on every other worker (no shared filesystem is
// assumed). Returns the path to read on this worker.
std::string file_from_leader(const std::string& leader_path, const std::string& path);
// --resume: rank 0's checkpoint, copied into `out` (as rank-K-resume.pt) on every other worker.
std::string checkpoint_on_every_worker(const std::string& leader_path, const std::string& out);
// Rank 0's folder `leader_folder` (but its rank-* files), copied over `folder` on every other worker.
void folder_from_leader(const std::string& leader_folder, const std::string& folder);
// Rank 0's values of the tensors (weights and buffers), on every worker.
void broadcast_from_leader(const std::vector<torch::Tensor>& tensors);
// Each worker backpropagated its share of the global batch's mean loss (loss * n / global): the
// sum of the workers' gradients is the whole batch's. Parameters without a gradient are left out
// (the same on every worker).
void all_reduce_gradients(const std::vector<torch::Tensor>& params);
// Sums each number over the workers.
void sum_over_workers(std::vector<double*> values);

}  // namespace shrink
