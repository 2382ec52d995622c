#include "train/run_dir.h"

#include <fmt/format.h>

#include <filesystem>

#include "common/error.h"

namespace shrink {
namespace fs = std::filesystem;

RunDir::RunDir(const std::string& path, const std::string& resolved_ini, const RunOptions& options) : path_(path) {
  if (options.overwrite && !options.resume) fs::remove_all(path_);
  fs::create_directories(path_ + "/checkpoints");
  log_ = std::make_unique<RunLog>(path_, options.quiet);
  write_file_atomic(path_ + "/config.ini", resolved_ini);
}

RunDir RunDir::open_training(const std::string& path, const std::string& resolved_ini, const RunOptions& options) {
  const bool holds = holds_checkpoint(path);
  if (!options.resume && !options.overwrite && holds)
    throw UserError(fmt::format("{} already holds a run: pass --resume to continue it, --overwrite to replace it, or --out for a new one", path));
  if (options.resume && !holds) throw UserError(fmt::format("--resume: {} has no checkpoint to resume from", path));
  return RunDir(path, resolved_ini, options);
}

RunDir RunDir::open_stages(const std::string& path, const std::string& resolved_ini, const RunOptions& options) {
  return RunDir(path, resolved_ini, options);
}

std::string RunDir::checkpoint_of(const std::string& path, const std::string& name) { return path + "/checkpoints/" + name; }

bool RunDir::holds_checkpoint(const std::string& path) { return fs::exists(checkpoint_of(path)); }

bool RunDir::finished(const std::string& path) { return fs::exists(path + "/summary.json"); }

void RunDir::write_summary(const nlohmann::json& summary) const { write_json_atomic(path_ + "/summary.json", summary); }

}  // namespace shrink
