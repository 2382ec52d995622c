// Writing a .shrink file (docs/format.md). No torch: tests and the fuzzer's corpus use it too.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "runtime/format.h"

namespace shrink {

struct ExportTensor {
  std::string name;
  format::DType dtype = format::DType::F32;
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;  // dense, row-major
};

// storage: "dense", "sparse" (bitmask + nonzeros) or "auto" (the smaller, per tensor).
// Written to a temporary name, synced and renamed (common/file_io.h); a failed write (no space,
// a file-size limit) is a UserError naming the file and keeps the previous one.
// encode_model_file returns the file's bytes (for tests and the fuzzer).
std::vector<uint8_t> encode_model_file(const nlohmann::json& meta, const std::vector<ExportTensor>& tensors, const std::string& storage);
void write_model_file(const std::string& path, const nlohmann::json& meta, const std::vector<ExportTensor>& tensors, const std::string& storage);

}  // namespace shrink
