// The .shrink model file (docs/format.md): constants and byte-level helpers shared by the
// exporter (writer) and the runtime (reader). Little-endian, whatever the host.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

namespace shrink::format {

constexpr char kMagic[8] = {'S', 'H', 'R', 'I', 'N', 'K', 'M', 'F'};
constexpr uint16_t kMajor = 1, kMinor = 0;
constexpr uint32_t kLayoutVersion = 1;  // how the metadata describes a model (second version level)
constexpr uint64_t kHeaderSize = 128, kEntrySize = 128, kAlign = 64, kNameSize = 64;
constexpr uint64_t kMaxMetaSize = 16u << 20, kMaxTensors = 100000, kMaxElements = uint64_t(1) << 31;
// Caps on what a file may ask the runtime for (docs/format.md): a refused size is an error, not an OOM.
constexpr uint64_t kMaxTensorBytes = uint64_t(4) << 30;                // all tensors together, dense (sparse expanded)
constexpr uint64_t kMaxActivationBytesPerExample = uint64_t(256) << 20;  // every layer's output for one example, as f32
constexpr uint64_t kMaxInputElements = uint64_t(1) << 26;              // one example's input
constexpr int64_t kMaxClasses = int64_t(1) << 24;
constexpr int64_t kMaxImageSide = int64_t(1) << 15;                     // height and width of every image a layer sees

// Append-only: values are never reused or renumbered.
enum class DType : uint32_t { F32 = 1, S8 = 2, U8 = 3, S32 = 4 };
enum class Storage : uint32_t { Dense = 0, Bitmask = 1 };  // bitmask: ceil(n/8) mask bytes, then the nonzeros

inline uint64_t dtype_size(DType t) { return t == DType::F32 || t == DType::S32 ? 4 : 1; }
inline bool known_dtype(uint32_t t) { return t >= 1 && t <= 4; }

// Header field offsets.
enum HeaderField : uint64_t {
  kMagicAt = 0, kMajorAt = 8, kMinorAt = 10, kHeaderSizeAt = 12, kFileSizeAt = 16, kMetaOffsetAt = 24, kMetaSizeAt = 32,
  kTableOffsetAt = 40, kTensorCountAt = 48, kDataOffsetAt = 56, kDataSizeAt = 64, kMetaHashAt = 72, kTableHashAt = 80,
  kDataHashAt = 88, kLayoutAt = 96, kHeaderHashAt = 120
};
// Tensor entry field offsets.
enum EntryField : uint64_t { kNameAt = 0, kDTypeAt = 64, kStorageAt = 68, kNDimAt = 72, kDimsAt = 80, kOffsetAt = 112, kBytesAt = 120 };

inline void put_u16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v), p[1] = uint8_t(v >> 8); }
inline void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline uint16_t get_u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t get_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// Whether `path` starts like a .shrink model file (its magic bytes, whatever its name).
inline bool is_model_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[sizeof kMagic] = {};
  in.read(magic, sizeof magic);
  return in && std::equal(magic, magic + sizeof magic, kMagic);
}

}  // namespace shrink::format
