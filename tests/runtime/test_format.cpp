// The model file format without torch: round trip, every truncation and bit flip, newer versions
// and absurd sizes (moved here from tests/test_runtime.cpp so the sanitizer build runs them).
#define XXH_INLINE_ALL  // header-only, as the runtime uses it
#include <xxhash.h>

#include <cmath>

#include "runtime/model_writer.h"
#include "runtime/format.h"
#include "runtime/model_file.h"
#include "tests/runtime/helpers.h"

using namespace shrink;

namespace {

std::vector<uint8_t> small_file() {
  ExportTensor dense{"a.weight", format::DType::F32, {2, 3}, {}};
  for (float v : {1.f, -2.f, 3.f, 0.f, 5.5f, -0.f}) dense.bytes.insert(dense.bytes.end(), (uint8_t*)&v, (uint8_t*)&v + 4);
  ExportTensor sparse{"b.weight", format::DType::S8, {4, 5}, std::vector<uint8_t>(20, 0)};
  sparse.bytes[3] = 7, sparse.bytes[19] = uint8_t(-3);
  return encode_model_file({{"format", "shrink-model"}, {"note", "test"}}, {dense, sparse}, "auto");
}

}  // namespace

CATCH_TEST_CASE("model file round trip, dense and sparse", "[rt_format]") {
  auto bytes = small_file();
  auto f = rt::parse_model_file(bytes.data(), bytes.size(), "mem");
  CATCH_CHECK(f.meta["note"] == "test");
  CATCH_CHECK(f.tensors.at("a.weight").dims == std::vector<int64_t>{2, 3});
  CATCH_CHECK(f.tensors.at("a.weight").f32()[4] == 5.5f);
  CATCH_CHECK(std::signbit(f.tensors.at("a.weight").f32()[5]));  // -0.0 survives bit-exact
  const auto& b = f.tensors.at("b.weight");
  CATCH_CHECK(b.s8()[3] == 7);
  CATCH_CHECK(b.s8()[19] == -3);
  CATCH_CHECK(b.s8()[0] == 0);
  auto dense = encode_model_file({{"format", "shrink-model"}}, {}, "dense");
  CATCH_CHECK(rt::parse_model_file(dense.data(), dense.size(), "mem").tensors.empty());
}

CATCH_TEST_CASE("every kind of damage to a model file is a clear error, never a crash", "[rt_format]") {
  auto good = small_file();
  auto error_of = [](std::vector<uint8_t> b) -> std::string {
    try {
      rt::parse_model_file(b.data(), b.size(), "m.shrink");
    } catch (const rt::Error& e) {
      return e.what();
    }
    return "";
  };
  CATCH_CHECK(error_of({good.begin(), good.begin() + 50}).find("truncated") != std::string::npos);
  CATCH_CHECK(error_of({good.begin(), good.end() - 1}).find("truncated") != std::string::npos);
  auto magic = good;
  magic[0] = 'X';
  CATCH_CHECK(error_of(magic).find("bad magic") != std::string::npos);
  auto flipped = good;
  flipped[good.size() - 2] ^= 1;
  CATCH_CHECK(error_of(flipped).find("checksum") != std::string::npos);
  // Every truncation and every single-bit flip: an error each time (the sanitizer build and the
  // fuzzer check the same for memory safety).
  for (size_t n = 0; n < good.size(); ++n) CATCH_CHECK_FALSE(error_of({good.begin(), good.begin() + n}).empty());
  for (size_t i = 0; i < good.size(); ++i) {
    auto b = good;
    b[i] ^= 0x10;
    CATCH_CHECK_FALSE(error_of(b).empty());
  }
}

CATCH_TEST_CASE("a newer major version and absurd sizes are refused", "[rt_format]") {
  // Written by hand with valid checksums, so the check reached is the one under test.
  ExportTensor t{"x", format::DType::F32, {1}, {0, 0, 128, 63}};
  auto with = [&](auto edit) {
    auto b = encode_model_file({{"format", "shrink-model"}}, {t}, "dense");
    edit(b);
    // recompute every checksum after the edit
    uint64_t mo = format::get_u64(&b[format::kMetaOffsetAt]), ms = format::get_u64(&b[format::kMetaSizeAt]);
    uint64_t to = format::get_u64(&b[format::kTableOffsetAt]), tc = format::get_u64(&b[format::kTensorCountAt]);
    uint64_t dof = format::get_u64(&b[format::kDataOffsetAt]), ds = format::get_u64(&b[format::kDataSizeAt]);
    auto h = [&](uint64_t off, uint64_t size) { return off + size <= b.size() ? XXH3_64bits(b.data() + off, size) : 0; };
    format::put_u64(&b[format::kMetaHashAt], h(mo, ms));
    format::put_u64(&b[format::kTableHashAt], h(to, std::min<uint64_t>(tc, 1000) * format::kEntrySize));
    format::put_u64(&b[format::kDataHashAt], h(dof, ds));
    format::put_u64(&b[format::kHeaderHashAt], XXH3_64bits(b.data(), format::kHeaderHashAt));
    try {
      rt::parse_model_file(b.data(), b.size(), "m");
    } catch (const rt::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CATCH_CHECK(with([](std::vector<uint8_t>&) {}).empty());
  CATCH_CHECK(with([](std::vector<uint8_t>& b) { format::put_u16(&b[format::kMajorAt], 2); }).find("newer shrink (format 2.0)") != std::string::npos);
  CATCH_CHECK(with([](std::vector<uint8_t>& b) { format::put_u64(&b[format::kTensorCountAt], uint64_t(1) << 40); }).find("absurd") != std::string::npos);
  CATCH_CHECK(with([](std::vector<uint8_t>& b) { format::put_u64(&b[format::kMetaSizeAt], uint64_t(1) << 62); }).find("absurd") != std::string::npos);
  CATCH_CHECK(with([&](std::vector<uint8_t>& b) {
                uint64_t to = format::get_u64(&b[format::kTableOffsetAt]);
                format::put_u64(&b[to + format::kDimsAt], uint64_t(1) << 40);
              }).find("absurd shape") != std::string::npos);
  CATCH_CHECK(with([&](std::vector<uint8_t>& b) {
                uint64_t to = format::get_u64(&b[format::kTableOffsetAt]);
                format::put_u64(&b[to + format::kOffsetAt], 1 << 20);
              }).find("outside the data section") != std::string::npos);
}

