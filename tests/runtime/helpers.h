// Helpers shared by the torch-free runtime tests.
#pragma once
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/runtime/model_maker.h"

namespace shrink::test {

// A fresh folder under the system temp dir, removed when the object dies.
struct RtTempDir {
  std::filesystem::path path;
  RtTempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("shrink-rt-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~RtTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// A small residual network the runtime tests load in several settings.
inline constexpr const char* kResidual = "conv(8) relu maxpool(2) conv(8) r=relu conv(8) add(r) relu gap linear(classes)";

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// A /proc/self/status field in KiB (VmRSS, VmHWM).
inline int64_t proc_status_kib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  return -1;
}

}  // namespace shrink::test
