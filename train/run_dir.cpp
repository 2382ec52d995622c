#include "train/run_dir.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <vector>

#include "common/error.h"

namespace shrink {
namespace fs = std::filesystem;

namespace {

// What --overwrite may delete: nothing, an empty folder, or a run folder (its config.ini and
// log.txt, which every run writes first). Not the current folder or one above it, not a file, not
// a folder of other things that --out named by mistake.
void check_user_overwrite(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  const fs::path target = fs::weakly_canonical(path, ec), here = fs::current_path(ec);
  if (std::mismatch(target.begin(), target.end(), here.begin(), here.end()).first == target.end())
    throw UserError(fmt::format("--overwrite: job.out = {} is the current folder or one above it; give the run a folder of its own", path));
  if (!fs::is_directory(path, ec)) throw UserError(fmt::format("--overwrite: job.out = {} is a file, not a run folder; it is not deleted", path));
  if (!fs::is_empty(path, ec) && !(fs::exists(path + "/config.ini", ec) && fs::exists(path + "/log.txt", ec)))
    throw UserError(fmt::format("--overwrite: {} holds files but no run (no config.ini and log.txt), so it is not deleted; give the run a folder of its own", path));
}

// An exclusive flock on the folder itself, held while anything of this process uses it: two runs
// writing one folder at once (two pipelines started together, a --resume of a run still going)
// interleave their epochs and checkpoints. The kernel drops it when the process ends, killed too.
std::shared_ptr<void> lock_folder(const std::string& path) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<void>> held;  // canonical path -> this process's lock
  std::error_code ec;
  const std::string key = fs::canonical(path, ec).string();
  if (ec) throw UserError(fmt::format("job.out = {}: cannot open the run folder ({})", path, ec.message()));
  std::lock_guard<std::mutex> guard(mutex);
  if (auto lock = held[key].lock()) return lock;
  const int fd = ::open(key.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw UserError(fmt::format("job.out = {}: cannot open the run folder", path));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    throw UserError(fmt::format("{} is in use by another shrink process (a run writing there now): wait for it to end, or give --out another folder", path));
  }
  std::shared_ptr<void> lock(new int(fd), [](int* held_fd) {  // not null: a null shared_ptr tests false
    ::close(*held_fd);
    delete held_fd;
  });
  held[key] = lock;
  return lock;
}

}  // namespace

RunDir::RunDir(const std::string& path, const std::string& resolved_ini, const RunOptions& options) : path_(path) {
  const bool afresh = options.overwrite && !options.resume;
  if (afresh && options.overwrite_by_user) check_user_overwrite(path_);
  std::error_code ec;
  fs::create_directories(path_, ec);
  if (ec) throw UserError(fmt::format("job.out = {}: cannot make the run folder there ({})", path, ec.message()));
  lock_ = lock_folder(path_);  // before anything in it changes
  if (afresh) {  // its contents: the folder, which holds the lock, stays
    std::vector<fs::path> entries;
    for (const auto& entry : fs::directory_iterator(path_)) entries.push_back(entry.path());
    for (const auto& entry : entries) fs::remove_all(entry);
  }
  fs::create_directories(path_ + "/checkpoints", ec);
  if (ec) throw UserError(fmt::format("job.out = {}: cannot make the run folder there ({})", path, ec.message()));
  log_ = std::make_unique<RunLog>(path_, options.quiet);
  write_file_atomic(path_ + "/config.ini", resolved_ini);
}

namespace {

UserError holds_a_run(const std::string& path) {
  return UserError(fmt::format("{} already holds a run: pass --resume to continue it, --overwrite to replace it, or --out for a new one", path));
}

}  // namespace

RunDir RunDir::open_training(const std::string& path, const std::string& resolved_ini, const RunOptions& options) {
  const bool holds = holds_checkpoint(path);
  if (!options.resume && !options.overwrite && holds) throw holds_a_run(path);
  if (options.resume && !holds)
    throw UserError(fmt::format("--resume: {} has no checkpoint to resume from (a run stopped before its first epoch ends: start it again with --overwrite)", path));
  return RunDir(path, resolved_ini, options);
}

RunDir RunDir::open_stages(const std::string& path, const std::string& resolved_ini, const RunOptions& options) {
  // Before config.ini is replaced. (A data-parallel worker's own folder beside OUT is shrink's:
  // rank 0 guards OUT.)
  if (!options.resume && !options.overwrite && !options.worker_folder && fs::exists(path + "/config.ini")) throw holds_a_run(path);
  return RunDir(path, resolved_ini, options);
}

std::string RunDir::checkpoint_of(const std::string& path, const std::string& name) { return path + "/checkpoints/" + name; }

bool RunDir::holds_checkpoint(const std::string& path) { return fs::exists(checkpoint_of(path)); }

bool RunDir::finished(const std::string& path) { return fs::exists(path + "/summary.json"); }

void RunDir::write_summary(const nlohmann::json& summary) const { write_json_atomic(path_ + "/summary.json", summary); }

}  // namespace shrink
