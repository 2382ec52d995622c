#include "train/data_parallel.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "common/file_io.h"
#include "parallel/world.h"

namespace shrink {

void join_workers() { World::get().join(); }

void as_stage_worker(JobConfig& job, RunOptions& options, const char* what) {
  World& world = World::get();
  if (!world.distributed()) return;
  if (options.resume)
    throw UserError(fmt::format("shrink launch: --resume of {} is not supported data parallel yet; resume it as one process", what));
  join_workers();
  if (world.leader()) return;
  // Beside OUT, not in it: rank 0 may be emptying OUT (--overwrite) while this one starts.
  std::string out = job.out;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  job.out = fmt::format("{}.rank-{}", out, world.rank());
  options.worker_folder = true;
  options.quiet = true;
}

std::string checkpoint_on_every_worker(const std::string& leader_path, const std::string& out) {
  World& world = World::get();
  if (!world.distributed()) return leader_path;
  std::string bytes;
  if (world.leader()) {
    std::ifstream in(leader_path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64);
  world.broadcast({size});
  if (world.leader()) {
    world.broadcast({torch::from_blob(bytes.data(), {size.item<int64_t>()}, torch::kUInt8)});
    return leader_path;
  }
  auto buffer = torch::empty({size.item<int64_t>()}, torch::kUInt8);
  world.broadcast({buffer});
  std::filesystem::create_directories(out);
  const std::string path = fmt::format("{}/rank-{}-resume.pt", out, world.rank());
  write_file_atomic(path, buffer.data_ptr<uint8_t>(), static_cast<size_t>(buffer.numel()));
  return path;
}

void broadcast_from_leader(const std::vector<torch::Tensor>& tensors) { World::get().broadcast(tensors, 0); }

void all_reduce_gradients(const std::vector<torch::Tensor>& params) {
  World& world = World::get();
  if (!world.distributed()) return;
  // A parameter the step did not reach keeps no gradient, as on one process (the optimizer then
  // leaves it alone, weight decay included); every worker's step reaches the same parameters.
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  world.all_reduce_sum(grads);
}

void sum_over_workers(std::vector<double*> values) {
  World& world = World::get();
  if (!world.distributed() || values.empty()) return;
  auto t = torch::empty({static_cast<int64_t>(values.size())}, torch::kFloat64);
  for (size_t k = 0; k < values.size(); ++k) t[k] = *values[k];
  world.all_reduce_sum({t});
  for (size_t k = 0; k < values.size(); ++k) *values[k] = t[k].item<double>();
}

}  // namespace shrink
