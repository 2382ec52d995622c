#include "train/data_parallel.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "common/file_io.h"
#include "parallel/world.h"

namespace shrink {

void join_workers(bool has_step_hooks, bool has_model_factory) {
  World& world = World::get();
  if (!world.distributed()) return;
  if (has_step_hooks || has_model_factory)
    throw UserError("shrink launch: pruning and quantization-aware training do not run data parallel yet; run them as one process");
  world.join();
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
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (!p.requires_grad()) continue;
    if (!p.grad().defined()) const_cast<torch::Tensor&>(p).mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
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
