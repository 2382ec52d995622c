// Reading a .shrink file: every length, offset, checksum and shape is checked before use;
// problems are ModelFileError with one line naming the file and what is wrong.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/format.h"
#include "shrink/runtime.hpp"

namespace shrink::rt {

using ModelFileError = Error;

struct Tensor {
  format::DType dtype = format::DType::F32;
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;  // dense, row-major (sparse storage is expanded at load)
  SHRINK_RT_API int64_t numel() const;
  const float* f32() const { return reinterpret_cast<const float*>(bytes.data()); }
  const int8_t* s8() const { return reinterpret_cast<const int8_t*>(bytes.data()); }
};

struct ModelFile {
  uint16_t major = 0, minor = 0;
  nlohmann::json meta;
  std::map<std::string, Tensor> tensors;
  uint64_t file_size = 0;
};

SHRINK_RT_API ModelFile read_model_file(const std::string& path);
// The same from bytes in memory (`name` is used in messages); what the fuzzer calls.
SHRINK_RT_API ModelFile parse_model_file(const uint8_t* data, size_t size, const std::string& name);

}  // namespace shrink::rt
