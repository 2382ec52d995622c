#include "train/data_parallel.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <filesystem>

#include "common/error.h"
#include "common/file_io.h"
#include "parallel/world.h"
#include "train/run_log.h"

namespace shrink {

namespace fs = std::filesystem;

void join_workers() { World::get().join(); }

void as_stage_worker(JobConfig& job, RunOptions& options) {
  World& world = World::get();
  if (!world.distributed()) return;
  join_workers();
  const std::string leader_out = job.out;
  if (!world.leader() && !options.worker_folder) {  // (a pipeline gives its workers folders of their own)
    // Beside OUT, not in it: rank 0 may be emptying OUT (--overwrite) while this one starts.
    std::string out = job.out;
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    job.out = fmt::format("{}.rank-{}", out, world.rank());
    options.worker_folder = true;
    options.quiet = true;
    // The folder is this worker's own: one a run before left is emptied, not taken up as it is.
    options.overwrite = !options.resume;
    options.overwrite_by_user = false;
  }
  if (options.resume) folder_from_leader(leader_out, job.out);
}

namespace {

// Rank 0's `bytes`, on every worker.
std::string bytes_from_leader(std::string bytes) {
  World& world = World::get();
  auto size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64);
  world.broadcast({size});
  bytes.resize(static_cast<size_t>(size.item<int64_t>()));
  if (!bytes.empty()) world.broadcast({torch::from_blob(bytes.data(), {size.item<int64_t>()}, torch::kUInt8)});
  return bytes;
}

// Files of the leader's own making that no other worker takes over: workers' logs, copies sent
// to them.
bool kept_by_leader(const fs::path& file) { return file.filename().string().rfind("rank-", 0) == 0; }

}  // namespace

std::string file_from_leader(const std::string& leader_path, const std::string& path) {
  World& world = World::get();
  if (!world.distributed()) return leader_path;
  // (the other workers, left waiting in the broadcast, are stopped by the launcher)
  if (world.leader() && !fs::is_regular_file(leader_path)) throw UserError(fmt::format("{}: no such file to send to the other workers", leader_path));
  std::string bytes = bytes_from_leader(world.leader() ? read_text_file(leader_path) : "");
  if (world.leader()) return leader_path;
  fs::create_directories(fs::path(path).parent_path());
  write_file_atomic(path, bytes);
  return path;
}

std::string checkpoint_on_every_worker(const std::string& leader_path, const std::string& out) {
  return file_from_leader(leader_path, fmt::format("{}/rank-{}-resume.pt", out, World::get().rank()));
}

void folder_from_leader(const std::string& leader_folder, const std::string& folder) {
  World& world = World::get();
  if (!world.distributed()) return;
  // The list of files (paths relative to the folder) first, then each file as a message of its
  // own: a worker holds one file at a time, not the whole folder.
  nlohmann::json index = nlohmann::json::array();
  if (world.leader() && fs::is_directory(leader_folder))
    for (const auto& entry : fs::recursive_directory_iterator(leader_folder))
      if (entry.is_regular_file() && !kept_by_leader(entry.path())) index.push_back(fs::relative(entry.path(), leader_folder).string());
  index = nlohmann::json::parse(bytes_from_leader(world.leader() ? index.dump() : ""));
  if (!world.leader()) {
    fs::remove_all(folder);
    fs::create_directories(folder);
  }
  for (const auto& item : index) {
    const std::string relative = item.get<std::string>();
    const std::string bytes = bytes_from_leader(world.leader() ? read_text_file((fs::path(leader_folder) / relative).string()) : "");
    if (world.leader()) continue;
    const fs::path path = fs::path(folder) / relative;
    fs::create_directories(path.parent_path());
    write_file_atomic(path.string(), bytes);
  }
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
