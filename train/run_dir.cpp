#include "train/run_dir.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "common/error.h"

namespace shrink {
namespace fs = std::filesystem;

RunDir::RunDir(const std::string& path, const std::string& resolved_ini, const RunOptions& options) : path_(path) {
  if (options.overwrite && !options.resume) fs::remove_all(path_);
  std::error_code ec;
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
  if (options.resume && !holds) throw UserError(fmt::format("--resume: {} has no checkpoint to resume from", path));
  return RunDir(path, resolved_ini, options);
}

void RunDir::check_overwrite(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  const fs::path target = fs::weakly_canonical(path), here = fs::current_path();
  if (std::mismatch(target.begin(), target.end(), here.begin(), here.end()).first == target.end())
    throw UserError(fmt::format("--overwrite: job.out = {} is the current folder or one above it; give the run a folder of its own", path));
  if (fs::is_directory(path) && !fs::is_empty(path) && !fs::exists(path + "/config.ini"))
    throw UserError(fmt::format("--overwrite: {} holds files but no run (no config.ini), so it is not deleted; give the run a folder of its own", path));
}

RunDir RunDir::open_stages(const std::string& path, const std::string& resolved_ini, const RunOptions& options) {
  if (!options.resume && !options.overwrite && fs::exists(path + "/config.ini")) throw holds_a_run(path);  // before config.ini is replaced
  return RunDir(path, resolved_ini, options);
}

std::string RunDir::checkpoint_of(const std::string& path, const std::string& name) { return path + "/checkpoints/" + name; }

bool RunDir::holds_checkpoint(const std::string& path) { return fs::exists(checkpoint_of(path)); }

bool RunDir::finished(const std::string& path) { return fs::exists(path + "/summary.json"); }

void RunDir::write_summary(const nlohmann::json& summary) const { write_json_atomic(path_ + "/summary.json", summary); }

}  // namespace shrink
