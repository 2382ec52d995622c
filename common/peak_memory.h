// The process's peak resident memory, as Linux keeps it (VmHWM in /proc/self/status); no torch.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

namespace shrink {

// The peak resident set so far in KB (0 where /proc is not there).
inline int64_t peak_rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  return 0;
}

// Starts the peak over from the current resident set (to measure one step after another).
inline void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace shrink
