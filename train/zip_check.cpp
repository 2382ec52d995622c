#include "train/zip_check.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <vector>

namespace shrink {
namespace {

uint64_t le(const char* p, int bytes) {  // zip fields are little-endian
  uint64_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(p[k]);
  return v;
}

struct Reader {
  std::ifstream in;
  uint64_t size = 0;
  bool read(uint64_t at, char* out, uint64_t n) {
    if (at > size || n > size - at) return false;
    in.seekg(static_cast<std::streamoff>(at));
    return static_cast<bool>(in.read(out, static_cast<std::streamsize>(n)));
  }
};

// Where the central directory starts and how many entries it has: from the end-of-directory
// record (the last 22 bytes, plus a comment), or its zip64 record for large archives.
bool find_directory(Reader& r, uint64_t& offset, uint64_t& entries) {
  if (r.size < 22) return false;
  const uint64_t tail = std::min<uint64_t>(r.size, 22 + 65535);
  std::vector<char> b(tail);
  if (!r.read(r.size - tail, b.data(), tail)) return false;
  for (uint64_t k = tail - 22 + 1; k-- > 0;) {
    if (le(&b[k], 4) != 0x06054b50) continue;
    entries = le(&b[k + 10], 2), offset = le(&b[k + 16], 4);
    if (entries != 0xFFFF && offset != 0xFFFFFFFF) return true;
    if (k < 20 || le(&b[k - 20], 4) != 0x07064b50) return false;  // the zip64 locator precedes the record
    char z[56];
    if (!r.read(le(&b[k - 12], 8), z, 56) || le(z, 4) != 0x06064b50) return false;
    entries = le(z + 32, 8), offset = le(z + 48, 8);
    return true;
  }
  return false;
}

}  // namespace

std::string zip_damage(const std::string& path) {
  Reader r{std::ifstream(path, std::ios::binary)};
  r.in.seekg(0, std::ios::end);
  r.size = static_cast<uint64_t>(r.in.tellg());
  uint64_t at = 0, entries = 0;
  if (!r.in || !find_directory(r, at, entries)) return "";
  std::vector<char> buffer(1 << 20);
  for (uint64_t e = 0; e < entries; ++e) {
    char h[46];
    if (!r.read(at, h, 46) || le(h, 4) != 0x02014b50) return "its zip directory is damaged";
    const uint64_t name_len = le(h + 28, 2), extra_len = le(h + 30, 2), comment_len = le(h + 32, 2);
    std::string name(name_len, '\0');
    std::vector<char> extra(extra_len);
    if (!r.read(at + 46, name.data(), name_len) || !r.read(at + 46 + name_len, extra.data(), extra_len)) return "its zip directory is damaged";
    uint64_t size = le(h + 20, 4), local = le(h + 42, 4);
    // zip64: the sizes and offset that did not fit are in extra field 0x0001, in this order.
    for (uint64_t k = 0; k + 4 <= extra_len; k += 4 + le(&extra[k + 2], 2)) {
      if (le(&extra[k], 2) != 1) continue;
      uint64_t f = k + 4;
      if (le(h + 24, 4) == 0xFFFFFFFF) f += 8;  // uncompressed size
      if (size == 0xFFFFFFFF && f + 8 <= extra_len) size = le(&extra[f], 8), f += 8;
      if (local == 0xFFFFFFFF && f + 8 <= extra_len) local = le(&extra[f], 8);
    }
    at += 46 + name_len + extra_len + comment_len;
    if (le(h + 10, 2) != 0) continue;  // compressed (a TorchScript module's code, never weights): not checked here
    char l[30];
    if (!r.read(local, l, 30) || le(l, 4) != 0x04034b50) return fmt::format("its entry {} is damaged", name);
    uint64_t data = local + 30 + le(l + 26, 2) + le(l + 28, 2);
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t left = size; left > 0;) {
      const uint64_t n = std::min<uint64_t>(left, buffer.size());
      if (!r.read(data, buffer.data(), n)) return fmt::format("its entry {} is cut short", name);
      crc = crc32(crc, reinterpret_cast<const Bytef*>(buffer.data()), static_cast<uInt>(n));
      data += n, left -= n;
    }
    if (crc != le(h + 16, 4)) return fmt::format("its entry {} does not match its checksum", name);
  }
  return "";
}

}  // namespace shrink
