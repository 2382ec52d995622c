#include "train/run_log.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "common/error.h"

namespace shrink {

RunLog::RunLog(const std::string& dir, bool quiet, const std::string& file) : dir_(dir), quiet_(quiet) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + file;
  char last = '\n';
  {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (in && in.tellg() > 0) in.seekg(-1, std::ios::end).get(last);
  }
  log_.open(path, std::ios::app);
  if (last != '\n') log_ << '\n';  // a killed run's cut last line: end it
}

void RunLog::line(const std::string& text) {
  if (!quiet_) std::cout << text << std::endl;
  log_ << text << '\n';
  log_.flush();
}

void RunLog::metrics(const nlohmann::json& record) { append_line(dir_ + "/metrics.jsonl", record.dump()); }

void RunLog::truncate_metrics(int64_t epoch) {
  std::string path = dir_ + "/metrics.jsonl";
  if (!std::filesystem::exists(path)) return;
  std::string text = read_text_file(path), kept;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    auto record = nlohmann::json::parse(line, nullptr, false);
    if (!record.is_discarded() && record.is_object() && record.value("epoch", int64_t(0)) <= epoch) kept += line + "\n";
  }
  if (kept != text) write_file_atomic(path, kept);
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  if (!std::filesystem::is_regular_file(from)) throw UserError("cannot copy " + from + " to " + to + ": no such file");
  write_file_atomic(to, read_text_file(from));
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_json_atomic(const std::string& path, const nlohmann::json& value) { write_file_atomic(path, value.dump(2) + "\n"); }

Progress::Progress(bool quiet, double log_seconds) : tty_(isatty(STDOUT_FILENO)), quiet_(quiet), log_seconds_(log_seconds) {}

void Progress::start(const std::string& label, int64_t total_steps) {
  label_ = label;
  total_ = total_steps;
  start_ = last_print_ = std::chrono::steady_clock::now();
}

void Progress::update(int64_t step, double loss, double accuracy, double samples_per_s) {
  if (quiet_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  if (tty_ ? since < 0.1 && step != total_ : since < log_seconds_) return;
  last_print_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double eta = step > 0 ? elapsed / step * (total_ - step) : 0;
  std::string stats = fmt::format("loss {:.4f} acc {:.2f}% {:.0f} samples/s ETA {:.0f}s", loss, 100 * accuracy, samples_per_s, eta);
  if (tty_) {
    const int width = 24;
    int filled = total_ ? static_cast<int>(width * step / total_) : 0;
    std::string bar = std::string(filled, '#') + std::string(width - filled, '.');
    std::printf("\r%s [%s] %ld/%ld %s\033[K", label_.c_str(), bar.c_str(), static_cast<long>(step), static_cast<long>(total_), stats.c_str());
    std::fflush(stdout);
  } else {
    std::printf("%s step %ld/%ld %s\n", label_.c_str(), static_cast<long>(step), static_cast<long>(total_), stats.c_str());
    std::fflush(stdout);
  }
}

void Progress::finish() {
  if (tty_ && !quiet_) {
    std::printf("\r\033[K");
    std::fflush(stdout);
  }
}

}  // namespace shrink
