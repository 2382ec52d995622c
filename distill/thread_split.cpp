#include "distill/thread_split.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <stdexcept>

namespace shrink {

std::vector<std::pair<int, int>> split_candidates(int threads) {
  std::vector<int> student;
  if (threads <= 8) {
    for (int s = 1; s < threads; ++s) student.push_back(s);
  } else {
    for (int s : {1, threads / 4, threads / 2, 3 * threads / 4, threads - 1}) student.push_back(s);
    student.erase(std::unique(student.begin(), student.end()), student.end());
  }
  std::vector<std::pair<int, int>> splits;
  for (int s : student) splits.emplace_back(s, threads - s);
  return splits;
}

ThreadSplit choose_thread_split(int threads, bool allow_serial, const std::function<double(int)>& student_ms,
                                const std::function<double(int)>& teacher_ms) {
  if (threads < 1) throw std::invalid_argument("choose_thread_split: threads must be at least 1");
  std::map<int, double> student, teacher;  // each count timed once
  auto time = [](std::map<int, double>& cache, const std::function<double(int)>& ms, int n) {
    auto it = cache.find(n);
    return it != cache.end() ? it->second : cache[n] = ms(n);
  };
  ThreadSplit best;
  best.student_threads = best.teacher_threads = threads;
  best.serial_ms = best.batch_ms = time(student, student_ms, threads) + time(teacher, teacher_ms, threads);
  if (!allow_serial) best.batch_ms = std::numeric_limits<double>::infinity();
  constexpr double kSideBySideMargin = 0.9;
  for (auto [s, t] : split_candidates(threads)) {
    const double ms = std::max(time(student, student_ms, s), time(teacher, teacher_ms, t));
    if (ms < (best.ahead || !allow_serial ? best.batch_ms : kSideBySideMargin * best.batch_ms)) best = {true, s, t, ms, best.serial_ms};
  }
  if (!best.ahead && !allow_serial) throw std::invalid_argument("choose_thread_split: side by side needs at least 2 threads");
  return best;
}

double median_ms(const std::function<void()>& fn, int reps) {
  fn();
  std::vector<double> ms;
  for (int k = 0; k < reps; ++k) {
    auto start = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::string describe(const ThreadSplit& split, int threads) {
  auto plural = [](int n) { return fmt::format("{} thread{}", n, n == 1 ? "" : "s"); };
  if (!split.ahead) return fmt::format("student and teacher one after the other on {}: {:.1f} ms a batch", plural(threads), split.serial_ms);
  return fmt::format("student on {}, teacher beside it on {}: {:.1f} ms a batch (one after the other on {}: {:.1f} ms)", plural(split.student_threads),
                     plural(split.teacher_threads), split.batch_ms, plural(threads), split.serial_ms);
}

}  // namespace shrink
