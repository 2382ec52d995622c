#include "runtime/model_file.h"

#define XXH_INLINE_ALL  // header-only xxhash: the runtime links nothing but oneDNN
#include <xxhash.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace shrink::rt {
namespace {

using namespace shrink::format;

[[noreturn]] void fail(const std::string& name, const std::string& what) { throw ModelFileError(name + ": " + what); }

void check_section(const std::string& name, const char* what, uint64_t offset, uint64_t size, uint64_t file_size) {
  if (offset > file_size || size > file_size - offset)
    fail(name, std::string("truncated or corrupt: the ") + what + " section lies outside the file (offset " + std::to_string(offset) +
                   ", " + std::to_string(size) + " bytes, file " + std::to_string(file_size) + " bytes)");
}

// `size` bytes aligned to 64, freed with the last owner.
std::shared_ptr<uint8_t> aligned_buffer(uint64_t size) {
  void* p = std::aligned_alloc(kAlign, align_up(std::max<uint64_t>(size, 1)));
  if (!p) throw std::bad_alloc();
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
}

// Parses bytes that `backing` keeps alive; dense tensors point into them.
ModelFile parse_view(const uint8_t* p, size_t size, const std::string& name, std::shared_ptr<const void> backing, bool mapped);

}  // namespace

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

namespace {

ModelFile parse_view(const uint8_t* p, size_t size, const std::string& name, std::shared_ptr<const void> backing, bool mapped) {
  ModelFile m;
  m.file_size = size;
  m.backing = backing;
  m.mapped = mapped;
  if (size < kHeaderSize) fail(name, "truncated: " + std::to_string(size) + " bytes is shorter than the header");
  if (std::memcmp(p, kMagic, 8) != 0) fail(name, "not a shrink model file (bad magic)");
  m.major = get_u16(p + kMajorAt);
  m.minor = get_u16(p + kMinorAt);
  if (m.major > kMajor)
    fail(name, "made by a newer shrink (format " + std::to_string(m.major) + "." + std::to_string(m.minor) + "); this runtime reads " +
                   std::to_string(kMajor) + ".x");
  if (m.major < 1) fail(name, "unknown format version 0");
  if (get_u32(p + kHeaderSizeAt) != kHeaderSize) fail(name, "corrupt header (header size)");
  if (XXH3_64bits(p, kHeaderHashAt) != get_u64(p + kHeaderHashAt)) fail(name, "corrupt header (checksum mismatch)");
  if (get_u64(p + kFileSizeAt) != size)
    fail(name, "truncated or padded: the header says " + std::to_string(get_u64(p + kFileSizeAt)) + " bytes, the file has " + std::to_string(size));
  if (get_u32(p + kLayoutAt) > kLayoutVersion) fail(name, "model layout version " + std::to_string(get_u32(p + kLayoutAt)) + " is newer than this runtime reads");
  uint64_t meta_off = get_u64(p + kMetaOffsetAt), meta_size = get_u64(p + kMetaSizeAt);
  uint64_t table_off = get_u64(p + kTableOffsetAt), count = get_u64(p + kTensorCountAt);
  uint64_t data_off = get_u64(p + kDataOffsetAt), data_size = get_u64(p + kDataSizeAt);
  if (meta_size > kMaxMetaSize) fail(name, "corrupt: metadata of " + std::to_string(meta_size) + " bytes is absurd");
  if (count > kMaxTensors) fail(name, "corrupt: " + std::to_string(count) + " tensors is absurd");
  check_section(name, "metadata", meta_off, meta_size, size);
  check_section(name, "tensor table", table_off, count * kEntrySize, size);
  check_section(name, "data", data_off, data_size, size);
  if (data_off % kAlign) fail(name, "corrupt: the data section is not 64-byte aligned");
  // Sections in order, without overlap, and nothing but zero padding between them: every byte of
  // the file is either checksummed or known to be zero.
  uint64_t table_end = table_off + count * kEntrySize;
  if (meta_off < kHeaderSize || table_off < meta_off + meta_size || data_off < table_end || data_off + data_size != size)
    fail(name, "corrupt: sections overlap or are out of order");
  for (auto [from, to] : {std::pair<uint64_t, uint64_t>{kHeaderSize, meta_off}, {meta_off + meta_size, table_off}, {table_end, data_off}})
    for (uint64_t k = from; k < to; ++k)
      if (p[k] != 0) fail(name, "corrupt: non-zero bytes between sections");
  if (XXH3_64bits(p + meta_off, meta_size) != get_u64(p + kMetaHashAt)) fail(name, "corrupt metadata (checksum mismatch)");
  if (XXH3_64bits(p + table_off, count * kEntrySize) != get_u64(p + kTableHashAt)) fail(name, "corrupt tensor table (checksum mismatch)");
  if (XXH3_64bits(p + data_off, data_size) != get_u64(p + kDataHashAt)) fail(name, "corrupt tensor data (checksum mismatch)");
  m.meta = nlohmann::json::parse(p + meta_off, p + meta_off + meta_size, nullptr, false);
  if (m.meta.is_discarded() || !m.meta.is_object()) fail(name, "corrupt metadata (not a JSON object)");

  const uint8_t* data = p + data_off;
  uint64_t total_bytes = 0;  // all tensors, dense
  for (uint64_t i = 0; i < count; ++i) {
    const uint8_t* e = p + table_off + i * kEntrySize;
    std::string tname(reinterpret_cast<const char*>(e + kNameAt), strnlen(reinterpret_cast<const char*>(e + kNameAt), kNameSize));
    std::string where = "tensor " + std::to_string(i) + (tname.empty() ? "" : " (" + tname + ")");
    if (tname.empty() || tname.size() == kNameSize) fail(name, where + ": bad name");
    uint32_t dtype = get_u32(e + kDTypeAt), storage = get_u32(e + kStorageAt), ndim = get_u32(e + kNDimAt);
    if (!known_dtype(dtype)) fail(name, where + ": unknown dtype " + std::to_string(dtype));
    if (storage > 1) fail(name, where + ": unknown storage " + std::to_string(storage));
    if (ndim < 1 || ndim > 4) fail(name, where + ": " + std::to_string(ndim) + " dimensions (1 to 4 allowed)");
    Tensor t;
    t.dtype = static_cast<DType>(dtype);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
      uint64_t v = get_u64(e + kDimsAt + 8 * d);
      if (v == 0 || v > kMaxElements || numel * v > kMaxElements) fail(name, where + ": absurd shape");
      numel *= v;
      t.dims.push_back(static_cast<int64_t>(v));
    }
    uint64_t offset = get_u64(e + kOffsetAt), nbytes = get_u64(e + kBytesAt), elem = dtype_size(t.dtype);
    if (offset % kAlign) fail(name, where + ": data not 64-byte aligned");
    if (offset > data_size || nbytes > data_size - offset) fail(name, where + ": data lies outside the data section");
    const uint8_t* src = data + offset;
    total_bytes += numel * elem;
    if (total_bytes > kMaxTensorBytes)
      fail(name, where + ": the tensors need more than " + std::to_string(kMaxTensorBytes >> 20) + " MiB in all (the runtime's limit)");
    if (storage == uint32_t(Storage::Dense)) {
      if (nbytes != numel * elem) fail(name, where + ": " + std::to_string(nbytes) + " bytes for " + std::to_string(numel) + " elements");
      t.bytes = ByteView{src, nbytes};  // in place: the data section and every offset are 64-byte aligned
      t.owner = backing;
    } else {
      uint64_t mask_bytes = (numel + 7) / 8, nonzeros = 0;
      if (nbytes < mask_bytes) fail(name, where + ": sparse mask truncated");
      for (uint64_t b = 0; b < mask_bytes; ++b) nonzeros += __builtin_popcount(src[b]);
      if (numel % 8 && (src[mask_bytes - 1] >> (numel % 8))) fail(name, where + ": sparse mask has bits past the end");
      if (nbytes != mask_bytes + nonzeros * elem) fail(name, where + ": sparse data size does not match its mask");
      const uint8_t* values = src + mask_bytes;
      auto dense = aligned_buffer(numel * elem);
      std::memset(dense.get(), 0, numel * elem);
      for (uint64_t k = 0, v = 0; k < numel; ++k)
        if (src[k / 8] >> (k % 8) & 1) std::memcpy(dense.get() + k * elem, values + elem * v++, elem);
      t.bytes = ByteView{dense.get(), numel * elem};
      t.owner = std::move(dense);
      t.expanded = true;
    }
    if (!m.tensors.emplace(tname, std::move(t)).second) fail(name, "tensor " + tname + " appears twice");
  }
  // The checksum read every byte: the loader brings back what it packs or uses in place.
  release_pages(m, data, data_size);
  return m;
}

}  // namespace

void release_pages(const ModelFile& file, const void* p, size_t n) {
  // Only the mapping refaults from the file: MADV_DONTNEED on heap memory (a sparse tensor's
  // expanded copy) would turn its bytes into zeros.
  const auto* base = static_cast<const uint8_t*>(file.backing.get());
  const auto* at = static_cast<const uint8_t*>(p);
  if (!file.mapped || n == 0 || at < base || at + n > base + file.file_size) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t from = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page, to = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (to > from) ::madvise(reinterpret_cast<void*>(from), to - from, MADV_DONTNEED);  // a private read-only mapping: refaults from the file
}

ModelFile parse_model_file(const uint8_t* data, size_t size, const std::string& name) {
  auto copy = aligned_buffer(size);
  if (size) std::memcpy(copy.get(), data, size);
  return parse_view(copy.get(), size, name, copy, false);
}

ModelFile read_model_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ModelFileError(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ModelFileError(path + ": cannot open (not a regular file)");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return parse_view(nullptr, 0, path, nullptr, false);  // reports the truncation
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping stays valid without the descriptor
  if (p == MAP_FAILED) throw ModelFileError(path + ": cannot map (" + std::strerror(errno) + ")");
  std::shared_ptr<const void> mapping(p, [size](const void* q) { ::munmap(const_cast<void*>(q), size); });
  return parse_view(static_cast<const uint8_t*>(p), size, path, mapping, true);
}

}  // namespace shrink::rt
