// teacher.ahead = auto: whether a runtime teacher's forward of the next batch runs beside the
// student's step (on the loader's thread), and how the job's threads are split between the two,
// chosen by timing the student's step and the teacher's forward at each thread count before
// training. On 2 cores a small student trains no faster on 2 threads than on 1, so student and
// teacher on one thread each can beat both running one after the other on 2; on a large student
// the serial loop wins. Measuring decides; nothing is assumed about the CPU.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace shrink {

struct ThreadSplit {
  bool ahead = false;  // the teacher runs beside the student's step
  int student_threads = 1, teacher_threads = 1;
  double batch_ms = 0;   // predicted milliseconds per batch of the choice
  double serial_ms = 0;  // ... of student and teacher one after the other on all threads
};

// The (student, teacher) thread counts tried side by side on `threads` threads: every split up to
// 8 threads, then five spread over the range.
std::vector<std::pair<int, int>> split_candidates(int threads);

// The fastest way to run a step: serial on all threads (when allow_serial), or side by side at one
// of split_candidates, predicted at the slower of the two. A split must predict at least 10% less
// time than serial to be chosen: running side by side shares caches and memory bandwidth, which
// timing each alone does not see. `student_ms(n)` and `teacher_ms(n)` time one batch on n threads.
ThreadSplit choose_thread_split(int threads, bool allow_serial, const std::function<double(int)>& student_ms,
                                const std::function<double(int)>& teacher_ms);

// Median milliseconds of `reps` calls of fn, after one call not timed (warm-up).
double median_ms(const std::function<void()>& fn, int reps);

// "student 1 thread, teacher 1 thread beside it: 7.4 ms a batch (serial on 2 threads: 11.0 ms)".
std::string describe(const ThreadSplit& split, int threads);

}  // namespace shrink
