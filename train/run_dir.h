// A job's run directory (docs/run-directory.md): config.ini (the resolved config), log.txt,
// metrics.jsonl, checkpoints/ and summary.json. Every job opens it through RunDir, so --resume
// and --overwrite mean the same for all of them. No torch.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "train/run_log.h"

namespace shrink {

// How a job treats its run directory (the --resume and --overwrite flags).
struct RunOptions {
  bool resume = false;            // continue from <out>/checkpoints/last.pt
  bool overwrite = false;         // start afresh even if <out> holds a run
  // The user's --overwrite: <out> is deleted only if it is a run folder (or empty), never the
  // current folder or one above it. (The pipeline's and budget search's own folders are theirs.)
  bool overwrite_by_user = false;
  bool quiet = false;             // no console output (log.txt is still written)
  int64_t stop_after_epochs = -1; // tests: stop after this many epochs of this call, as if killed
  // The caller writes summary.json itself, with more in it (quantization): the file's presence
  // marks the job finished (the pipeline skips it), so it is written once, when all of it is known.
  bool leave_summary = false;
  // A data-parallel worker other than rank 0 running a whole job of stages (prune, quantize) in a
  // folder of its own, OUT.rank-K: its trainer writes there as rank 0's does in OUT, so the job's
  // own steps read back what they need on any host (train/data_parallel.h: as_stage_worker).
  bool worker_folder = false;
};

class RunDir {
 public:
  // A training run, whose progress is checkpoints/last.pt: refuses a folder that holds one unless
  // --resume or --overwrite is given, and --resume of a folder without one. Then opens it.
  static RunDir open_training(const std::string& path, const std::string& resolved_ini, const RunOptions& options);
  // A job made of training runs (prune's rounds, quantization's QAT): refuses a folder that holds
  // a run (config.ini) unless --resume or --overwrite is given; with --resume each part resumes or
  // starts by what it finds.
  static RunDir open_stages(const std::string& path, const std::string& resolved_ini, const RunOptions& options);

  // The paths of a run directory, also before (or without) opening it.
  static std::string checkpoint_of(const std::string& path, const std::string& name = "last.pt");
  static bool holds_checkpoint(const std::string& path);  // checkpoints/last.pt: a run to resume
  static bool finished(const std::string& path);          // summary.json: written last, when the run ends

  const std::string& path() const { return path_; }
  std::string checkpoint(const std::string& name = "last.pt") const { return checkpoint_of(path_, name); }
  RunLog& log() { return *log_; }
  void write_summary(const nlohmann::json& summary) const;

 private:
  // Locks the folder (another process opening it fails while this one runs; within one process a
  // job's parts share the lock); --overwrite (without --resume) deletes everything in it (a
  // user's, only when it is a run: RunOptions::overwrite_by_user); then checkpoints/ is created,
  // the resolved config written to config.ini and log.txt opened for appending.
  RunDir(const std::string& path, const std::string& resolved_ini, const RunOptions& options);
  std::string path_;
  std::shared_ptr<void> lock_;
  std::unique_ptr<RunLog> log_;
};

}  // namespace shrink
