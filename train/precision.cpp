#include "train/precision.h"

#include <ATen/autocast_mode.h>

#include <fstream>
#include <sstream>

namespace shrink {
namespace {

// The bf16 compute flags /proc/cpuinfo lists for this CPU (Linux), space-separated.
std::string bf16_cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string flag, found;
    while (words >> flag)
      if (flag == "amx_bf16" || flag == "avx512_bf16") found += (found.empty() ? "" : " ") + flag;
    return found;
  }
  return "";
}

}  // namespace

Precision resolve_precision(const std::string& asked) {
  Precision p{asked, bf16_cpu_flags()};
  if (asked == "auto") p.name = p.cpu_flags.empty() ? "fp32" : "bf16";
  return p;
}

Bf16Autocast::Bf16Autocast(bool on) : on_(on) {
  if (!on_) return;
  was_enabled_ = at::autocast::is_cpu_enabled();
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
}

Bf16Autocast::~Bf16Autocast() {
  if (!on_) return;
  at::autocast::set_cpu_enabled(was_enabled_);
  if (!was_enabled_) at::autocast::clear_cache();
}

}  // namespace shrink
