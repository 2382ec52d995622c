#include "runtime/model_writer.h"

#include <xxhash.h>

#include "common/error.h"
#include "common/file_io.h"

namespace shrink {
namespace {

using namespace shrink::format;

// Bitmask of the nonzero elements followed by their values.
std::vector<uint8_t> sparse_bytes(const ExportTensor& t) {
  uint64_t elem = dtype_size(t.dtype), n = t.bytes.size() / elem;
  std::vector<uint8_t> out((n + 7) / 8, 0);
  for (uint64_t k = 0; k < n; ++k) {
    bool nonzero = false;
    for (uint64_t b = 0; b < elem; ++b) nonzero |= t.bytes[k * elem + b] != 0;  // -0.0f counts as nonzero: bit-exact
    if (!nonzero) continue;
    out[k / 8] |= uint8_t(1u << (k % 8));
    out.insert(out.end(), t.bytes.begin() + k * elem, t.bytes.begin() + (k + 1) * elem);
  }
  return out;
}

}  // namespace

std::vector<uint8_t> encode_model_file(const nlohmann::json& meta, const std::vector<ExportTensor>& tensors, const std::string& storage) {
  std::string meta_text = meta.dump();
  std::vector<uint8_t> table(tensors.size() * kEntrySize, 0), data;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ExportTensor& t = tensors[i];
    if (t.name.empty() || t.name.size() >= kNameSize) throw UserError("export: tensor name '" + t.name + "' must be 1 to 63 characters");
    if (t.dims.empty() || t.dims.size() > 4) throw UserError("export: tensor " + t.name + " must have 1 to 4 dimensions");
    std::vector<uint8_t> sparse = storage == "dense" ? std::vector<uint8_t>{} : sparse_bytes(t);
    bool use_sparse = storage == "sparse" || (storage == "auto" && sparse.size() < t.bytes.size());
    const std::vector<uint8_t>& payload = use_sparse ? sparse : t.bytes;
    uint8_t* e = table.data() + i * kEntrySize;
    std::memcpy(e + kNameAt, t.name.data(), t.name.size());
    put_u32(e + kDTypeAt, static_cast<uint32_t>(t.dtype));
    put_u32(e + kStorageAt, static_cast<uint32_t>(use_sparse ? Storage::Bitmask : Storage::Dense));
    put_u32(e + kNDimAt, static_cast<uint32_t>(t.dims.size()));
    for (size_t d = 0; d < t.dims.size(); ++d) put_u64(e + kDimsAt + 8 * d, static_cast<uint64_t>(t.dims[d]));
    data.resize(align_up(data.size()), 0);
    put_u64(e + kOffsetAt, data.size());
    put_u64(e + kBytesAt, payload.size());
    data.insert(data.end(), payload.begin(), payload.end());
  }
  uint64_t meta_off = kHeaderSize, table_off = align_up(meta_off + meta_text.size()), data_off = align_up(table_off + table.size());
  std::vector<uint8_t> file(data_off + data.size(), 0);
  std::memcpy(file.data() + kMagicAt, kMagic, 8);
  put_u16(file.data() + kMajorAt, kMajor);
  put_u16(file.data() + kMinorAt, kMinor);
  put_u32(file.data() + kHeaderSizeAt, kHeaderSize);
  put_u64(file.data() + kFileSizeAt, file.size());
  put_u64(file.data() + kMetaOffsetAt, meta_off);
  put_u64(file.data() + kMetaSizeAt, meta_text.size());
  put_u64(file.data() + kTableOffsetAt, table_off);
  put_u64(file.data() + kTensorCountAt, tensors.size());
  put_u64(file.data() + kDataOffsetAt, data_off);
  put_u64(file.data() + kDataSizeAt, data.size());
  put_u32(file.data() + kLayoutAt, kLayoutVersion);
  std::memcpy(file.data() + meta_off, meta_text.data(), meta_text.size());
  if (!table.empty()) std::memcpy(file.data() + table_off, table.data(), table.size());
  if (!data.empty()) std::memcpy(file.data() + data_off, data.data(), data.size());
  put_u64(file.data() + kMetaHashAt, XXH3_64bits(file.data() + meta_off, meta_text.size()));
  put_u64(file.data() + kTableHashAt, XXH3_64bits(file.data() + table_off, table.size()));
  put_u64(file.data() + kDataHashAt, XXH3_64bits(file.data() + data_off, data.size()));
  put_u64(file.data() + kHeaderHashAt, XXH3_64bits(file.data(), kHeaderHashAt));
  return file;
}

void write_model_file(const std::string& path, const nlohmann::json& meta, const std::vector<ExportTensor>& tensors, const std::string& storage) {
  auto bytes = encode_model_file(meta, tensors, storage);
  write_file_atomic(path, bytes.data(), bytes.size());  // whole or not at all; the previous file kept on failure
}

}  // namespace shrink
