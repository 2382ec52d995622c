// Reading a .shrink file: every length, offset, checksum and shape is checked before use;
// problems are ModelFileError with one line naming the file and what is wrong.
//
// read_model_file maps the file read-only: dense tensors are views into the mapping (which every
// Tensor and the ModelFile keep alive), bitmask tensors are expanded once into their own buffer.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/format.h"
#include "shrink/runtime.hpp"

namespace shrink::rt {

using ModelFileError = Error;

// Read-only bytes owned elsewhere (the mapping, an in-memory copy or an expanded buffer).
struct ByteView {
  const uint8_t* ptr = nullptr;
  size_t count = 0;
  const uint8_t* data() const { return ptr; }
  size_t size() const { return count; }
  bool empty() const { return count == 0; }
  const uint8_t& operator[](size_t i) const { return ptr[i]; }
  const uint8_t* begin() const { return ptr; }
  const uint8_t* end() const { return ptr + count; }
};

struct Tensor {
  format::DType dtype = format::DType::F32;
  std::vector<int64_t> dims;
  ByteView bytes;                      // dense, row-major, 64-byte aligned (sparse storage is expanded at load)
  std::shared_ptr<const void> owner;  // keeps `bytes` alive: the file's mapping or the expanded copy
  bool expanded = false;               // stored as a bitmask in the file, expanded into its own buffer
  SHRINK_RT_API int64_t numel() const;
  const float* f32() const { return reinterpret_cast<const float*>(bytes.data()); }
  const int8_t* s8() const { return reinterpret_cast<const int8_t*>(bytes.data()); }
};

struct ModelFile {
  uint16_t major = 0, minor = 0;
  nlohmann::json meta;
  std::map<std::string, Tensor> tensors;
  uint64_t file_size = 0;
  std::shared_ptr<const void> backing;  // the mapping (or in-memory copy) the dense tensors point into
  bool mapped = false;                  // backing is a read-only mapping of the file
};

// Maps `path` read-only. The file must not be truncated or rewritten in place while mapped (the
// writer renames a new file over the old one, which is safe).
SHRINK_RT_API ModelFile read_model_file(const std::string& path);
// Drops the whole pages inside [p, p + n) of a mapped file from this process's resident memory
// (read again from the file on the next access): for tensors only needed to make packed copies.
// Does nothing when the file is an in-memory copy.
SHRINK_RT_API void release_pages(const ModelFile& file, const void* p, size_t n);
// The same from bytes in memory (`name` is used in messages); what the fuzzer calls. The bytes
// are copied once (into a 64-byte aligned buffer), so the caller's buffer may go away.
SHRINK_RT_API ModelFile parse_model_file(const uint8_t* data, size_t size, const std::string& name);

}  // namespace shrink::rt
