// A run directory's outputs: log.txt (everything printed), metrics.jsonl (one line per epoch),
// JSON files written atomically, and a progress display (a live bar on a terminal, plain
// periodic lines otherwise).
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <string>

#include "common/file_io.h"  // write_file_atomic, append_line

namespace shrink {

class RunLog {
 public:
  // Writes dir/`file` (a data-parallel worker other than rank 0 keeps only dir/rank-K.log).
  explicit RunLog(const std::string& dir, bool quiet = false, const std::string& file = "log.txt");
  void line(const std::string& text);  // printed and kept in log.txt
  // Appends one record to metrics.jsonl (flushed to disk; a failed write is a UserError).
  void metrics(const nlohmann::json& record);
  // Keeps only metrics.jsonl records with epoch <= `epoch`, dropping a cut last line (used when
  // a run starts or resumes: records of epochs its checkpoint does not hold are gone).
  void truncate_metrics(int64_t epoch);
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::ofstream log_;
  bool quiet_;
};

std::string read_text_file(const std::string& path);
void write_json_atomic(const std::string& path, const nlohmann::json& value);
// Copies a file to `to` through a temporary name (write_file_atomic).
void copy_file_atomic(const std::string& from, const std::string& to);

class Progress {
 public:
  Progress(bool quiet, double log_seconds);
  void start(const std::string& label, int64_t total_steps);
  void update(int64_t step, double loss, double accuracy, double samples_per_s);
  void finish();

 private:
  bool tty_, quiet_;
  double log_seconds_;
  std::string label_;
  int64_t total_ = 0;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace shrink
