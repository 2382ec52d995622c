// IDX files (MNIST family): magic 0,0,type,rank, then rank big-endian uint32 dims, then data
// (big-endian for multi-byte types). zlib reads gzip'd and raw files alike.
#include <fmt/format.h>
#include <zlib.h>

#include <filesystem>

#include "common/error.h"
#include "datasets/formats.h"

namespace shrink {
namespace {

struct GzFile {
  gzFile f;
  explicit GzFile(const std::string& path) : f(gzopen(path.c_str(), "rb")) {}
  ~GzFile() {
    if (f) gzclose(f);
  }
  bool read(void* out, size_t n) {
    auto* p = static_cast<char*>(out);
    while (n > 0) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n, 1u << 30));
      int got = gzread(f, p, chunk);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<size_t>(got);
    }
    return true;
  }
};

}  // namespace

torch::Tensor read_idx_tensor(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw UserError(fmt::format("{}: no such file", path));
  GzFile file(path);
  unsigned char head[4];
  if (!file.f || !file.read(head, 4)) throw UserError(fmt::format("{}: too short to be an IDX file", path));
  if (head[0] != 0 || head[1] != 0 || head[3] < 1 || head[3] > 4) throw UserError(fmt::format("{}: not an IDX file (bad magic)", path));
  torch::ScalarType type;
  size_t elem;
  switch (head[2]) {
    case 0x08: type = torch::kUInt8; elem = 1; break;
    case 0x09: type = torch::kInt8; elem = 1; break;
    case 0x0B: type = torch::kInt16; elem = 2; break;
    case 0x0C: type = torch::kInt32; elem = 4; break;
    case 0x0D: type = torch::kFloat32; elem = 4; break;
    case 0x0E: type = torch::kFloat64; elem = 8; break;
    default: throw UserError(fmt::format("{}: unknown IDX data type 0x{:02x}", path, head[2]));
  }
  std::vector<int64_t> dims(head[3]);
  for (auto& d : dims) {
    unsigned char b[4];
    if (!file.read(b, 4)) throw UserError(fmt::format("{}: truncated IDX header", path));
    d = (int64_t(b[0]) << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
  }
  uint64_t total = elem;
  for (int64_t d : dims) {  // checked before multiplying: four 32-bit dimensions overflow 64 bits
    if (d != 0 && total > (uint64_t(1) << 36) / static_cast<uint64_t>(d))
      throw UserError(fmt::format("{}: IDX dimensions {} are absurdly large", path, shape_string(dims)));
    total *= static_cast<uint64_t>(d);
  }
  // What the file can hold, known before allocating what its header claims: the bytes after the
  // header, or deflate's largest expansion (1032x) of a gzip'd file's size.
  const uint64_t file_bytes = std::filesystem::file_size(path), header = 4 + 4 * dims.size();
  const uint64_t most = gzdirect(file.f) ? file_bytes - std::min(file_bytes, header) : 1032 * file_bytes;
  const auto truncated = [&] { return UserError(fmt::format("{}: truncated: expected {} bytes of data for shape {}", path, total, shape_string(dims))); };
  if (total > most) throw truncated();
  auto t = torch::empty(dims, type);
  if (!file.read(t.data_ptr(), total)) throw truncated();
  if (elem > 1) {  // big-endian on disk
    auto bytes = t.view(torch::kUInt8).view({-1, static_cast<int64_t>(elem)});
    bytes.copy_(bytes.flip(1));
  }
  return t;
}

std::shared_ptr<MemorySource> read_idx(const std::string& images_path, const std::string& labels_path, bool* eight_bit) {
  auto images = read_idx_tensor(images_path);
  if (eight_bit) *eight_bit = images.scalar_type() == torch::kUInt8;
  auto labels = read_idx_tensor(labels_path);
  if (images.dim() < 2) throw UserError(fmt::format("{}: expected images [N,H,W], got {}", images_path, shape_string(images.sizes().vec())));
  if (labels.dim() != 1 || labels.size(0) != images.size(0))
    throw UserError(fmt::format("{}: expected {} labels, got shape {}", labels_path, images.size(0), shape_string(labels.sizes().vec())));
  if (labels.is_floating_point()) throw UserError(fmt::format("{}: labels must be integers", labels_path));
  torch::Tensor x = images.to(torch::kFloat32);
  if (images.scalar_type() == torch::kUInt8) x.div_(255.0);
  if (x.dim() == 2) x = x.unsqueeze(1).unsqueeze(1);       // [N,F] -> [N,1,1,F]
  else if (x.dim() == 3) x = x.unsqueeze(1);               // [N,H,W] -> [N,1,H,W]
  else if (x.dim() == 4) x = x.permute({0, 3, 1, 2});      // [N,H,W,C] -> [N,C,H,W]
  return std::make_shared<MemorySource>(x, labels.to(torch::kInt64), images_path);
}

}  // namespace shrink
