// shrink-load-stats: loads a model with the runtime's public API and prints the load time and
// the process's peak RSS (VmHWM), as JSON; the same source builds against an older runtime, so
// both are measured the same way.
//   shrink-load-stats MODEL [THREADS]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "shrink/runtime.hpp"

namespace {

long status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line, key = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: shrink-load-stats MODEL [THREADS]\n");
    return 2;
  }
  int threads = argc > 2 ? std::stoi(argv[2]) : 1;
  long hwm_before = status_kib("VmHWM"), rss_before = status_kib("VmRSS");
  auto t0 = std::chrono::steady_clock::now();
  try {
    auto m = shrink::rt::Model::load(argv[1], threads);
    double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    long hwm_loaded = status_kib("VmHWM"), rss_loaded = status_kib("VmRSS");
    int64_t per = 1;
    for (int64_t d : m.input_shape()) per *= d;
    std::vector<float> x(per, 0.5f);
    m.predict(x.data(), 1);
    std::printf("{\"load_ms\": %.2f, \"vmhwm_before_kib\": %ld, \"vmhwm_after_load_kib\": %ld, \"vmhwm_after_predict_kib\": %ld, "
                "\"vmrss_before_kib\": %ld, \"vmrss_after_load_kib\": %ld, \"file_bytes\": %llu}\n",
                load_ms, hwm_before, hwm_loaded, status_kib("VmHWM"), rss_before, rss_loaded, static_cast<unsigned long long>(m.file_bytes()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
