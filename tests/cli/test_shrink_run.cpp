// shrink-run as a user meets it (no torch): every flag's bad values, and bad files, give exit
// code 2 and one line naming what is wrong. Models come from the torch-free writer.
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <sys/wait.h>

#include "apps/shrink_run_cli.h"
#include "tests/runtime/helpers.h"

using namespace shrink;
using shrink::test::RtTempDir;

namespace {

struct Result {
  int code;
  std::string out;
};

// `environment`: NAME=VALUE assignments for the command, or empty.
Result run(const std::string& args, const std::string& environment = "") {
  std::string cmd = (environment.empty() ? "" : "env " + environment + " ") + SHRINK_RUN_BIN + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  for (size_t n; (n = fread(buf.data(), 1, buf.size(), pipe)) > 0;) out.append(buf.data(), n);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

void write_floats(const std::string& path, const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  shrink::test::write_bytes(path, b);
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// An IDX file of float32 (type 0x0D) or uint8 (0x08) values, big-endian as the format has them.
std::vector<uint8_t> idx_file(const std::vector<uint32_t>& dims, const std::vector<float>& values, uint8_t type = 0x0D) {
  std::vector<uint8_t> b{0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  for (float v : values) {
    if (type == 0x08) {
      b.push_back(static_cast<uint8_t>(v));
      continue;
    }
    uint32_t u;
    std::memcpy(&u, &v, 4);
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(u >> s));
  }
  return b;
}

}  // namespace

CATCH_TEST_CASE("shrink-run: every flag refuses its bad values with exit 2 and one line", "[cli][shrink-run]") {
  RtTempDir dir;
  shrink::test::write_bytes(dir / "m.shrink", shrink::test::make_model("conv(4) relu gap linear(classes)", {1, 8, 8}, 3));
  write_floats(dir / "x.f32", shrink::test::random_inputs(2, 64, 1));
  int tried = 0;
  for (const Flag& f : shrink_run_command_line().flags) {
    std::vector<std::string> bad = f.value.empty() ? std::vector<std::string>{"yes"} : f.rule.bad_examples();
    for (const auto& value : bad) {
      auto r = run(dir / "m.shrink --input " + dir / "x.f32 '--" + f.name + "=" + value + "'");
      CATCH_INFO(f.name << "=" << value << " -> " << r.out);
      CATCH_CHECK(r.code == 2);
      CATCH_CHECK(lines(r.out) == 1);
      CATCH_CHECK(r.out.find("--" + f.name) != std::string::npos);
      ++tried;
    }
  }
  std::printf("shrink-run: %d bad flag values refused\n", tried);
  CATCH_CHECK(run("--help").code == 0);
  CATCH_CHECK(run("--input=" + dir / "x.f32 " + dir / "m.shrink").code == 0);  // --input=FILE is one file
  auto ok = run(dir / "m.shrink --input " + dir / "x.f32 --batch 1 --threads 1");
  CATCH_CHECK(ok.code == 0);
  CATCH_CHECK(lines(ok.out) == 2);
}

CATCH_TEST_CASE("shrink-run: bad files and inputs give exit 2 and one line", "[cli][shrink-run]") {
  RtTempDir dir;
  auto model = shrink::test::make_model("conv(4) relu gap linear(classes)", {1, 8, 8}, 3);
  shrink::test::write_bytes(dir / "m.shrink", model);
  shrink::test::write_bytes(dir / "cut.shrink", std::vector<uint8_t>(model.begin(), model.begin() + model.size() / 2));
  write_floats(dir / "x.f32", shrink::test::random_inputs(2, 64, 1));
  write_floats(dir / "short.f32", shrink::test::random_inputs(1, 10, 1));
  auto nan = shrink::test::random_inputs(2, 64, 1);
  nan[5] = std::numeric_limits<float>::quiet_NaN();
  write_floats(dir / "nan.f32", nan);
  shrink::test::write_bytes(dir / "y.i32", {7, 0, 0, 0, 0, 0, 0, 0});
  shrink::test::write_bytes(dir / "a.png", {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'});  // an image by its first bytes
  shrink::test::write_bytes(dir / "28.idx", idx_file({2, 28, 28}, std::vector<float>(2 * 28 * 28, 1), 0x08));  // 64 values an example, but 28x28
  shrink::test::write_bytes(dir / "huge.idx", idx_file({65536, 65536, 65536, 8192}, {}));                    // a header whose sizes overflow
  shrink::test::write_bytes(dir / "half.idx", idx_file({2}, {1.5f, 0}));
  struct Case {
    std::string args, expect;
  } cases[] = {
      {dir / "none.shrink --input " + dir / "x.f32", "cannot open"},
      {dir / "cut.shrink --input " + dir / "x.f32", "truncated"},
      {dir / "m.shrink --input " + dir / "none.f32", "no such file"},
      {dir / "m.shrink --input " + dir / "short.f32", "not a whole number of float32 examples"},
      {dir / "m.shrink --input " + dir / "nan.f32", "NaN"},
      {dir / "m.shrink --input " + dir / "x.f32 --labels " + dir / "y.i32", "label 7 is outside [0, 3)"},
      {dir / "m.shrink --input " + dir / "x.f32 --logits " + dir / "no/such/dir/l.f32", "cannot write"},
      {dir / "m.shrink --input " + dir / "28.idx", "IDX examples of shape 1x28x28 (as C,H,W), but the model's input is 1x8x8"},
      {dir / "m.shrink --input " + dir / "huge.idx", "truncated or padded IDX data"},
      {dir / "m.shrink --input " + dir / "x.f32 --labels " + dir / "half.idx", "labels must be integers"},
      {dir / "m.shrink --input " + dir / "a.png", "not trained on images"},
      {dir / "m.shrink --input " + dir / "a.png " + dir / "x.f32", "images or raw examples, not both"},
      {dir / "m.shrink", "--input FILE... is required"},
      {"--input " + dir / "x.f32 " + dir / "m.shrink", "MODEL is missing: it goes before --input"},
      {"--input " + dir / "x.f32", "usage: shrink-run MODEL"},
  };
  for (const auto& c : cases) {
    auto r = run(c.args);
    CATCH_INFO(c.args << " -> " << r.out);
    CATCH_CHECK(r.code == 2);
    CATCH_CHECK(lines(r.out) == 1);
    CATCH_CHECK(r.out.find(c.expect) != std::string::npos);
  }
}

CATCH_TEST_CASE("shrink-run: an int8 model gives the same logits, to the bit, when oneDNN may use no VNNI", "[cli][shrink-run]") {
  // DNNL_MAX_CPU_ISA=AVX2 (or AVX512_CORE) makes oneDNN take the kernels of a CPU without VNNI,
  // whose int8 sums are not exact: the runtime then runs int8 convs and linears on floats
  // (runtime/ops/weighted.h). Same bytes as the native kernels on any CPU, VNNI or not: an
  // inverted-residual block with a residual add (s8 inputs too), a grouped conv, a max pool, a conv over 256
  // channels whose sums could pass 2^24 (oneDNN's reference int8 kernel there), a linear.
  RtTempDir dir;
  const char* spec =
      "conv(16) relu6 conv(48,k=1) relu6 dwconv(k=3,s=2) relu6 p=conv(16,k=1) conv(48,k=1) relu6 dwconv(k=3) relu6 conv(16,k=1) add(p) "
      "conv(32,k=3,g=4) relu maxpool(2) conv(256,k=1) relu conv(8,k=3) relu gap linear(24) relu linear(classes)";
  shrink::test::MakeOptions options{true, 0.3, true, "dense", 41, false};
  shrink::test::write_bytes(dir / "m.shrink", shrink::test::make_model(spec, {3, 14, 14}, 10, options));
  auto x = shrink::test::random_inputs(32, 3 * 14 * 14, 41);
  for (float& v : x) v *= 4;
  write_floats(dir / "x.f32", x);
  auto logits = [&](const std::string& isa, const std::string& batch) {
    const std::string out = dir / ("y_" + isa + "_" + batch + ".f32");
    auto r = run(dir / "m.shrink --input " + dir / "x.f32 --batch " + batch + " --logits " + out, isa.empty() ? "" : "DNNL_MAX_CPU_ISA=" + isa);
    CATCH_INFO(r.out);
    CATCH_REQUIRE(r.code == 0);
    return file_bytes(out);
  };
  for (const std::string batch : {"1", "32"}) {
    const auto native = logits("", batch);
    CATCH_CHECK(logits("AVX2", batch) == native);
    CATCH_CHECK(logits("AVX512_CORE", batch) == native);
  }
}

CATCH_TEST_CASE("shrink-run: IDX examples of H,W,C are read as training reads them (C,H,W)", "[cli][shrink-run]") {
  RtTempDir dir;
  shrink::test::write_bytes(dir / "m.shrink", shrink::test::make_model("conv(4) relu gap linear(classes)", {3, 4, 5}, 3));
  const int64_t n = 2, C = 3, H = 4, W = 5;
  auto chw = shrink::test::random_inputs(n, C * H * W, 1);
  std::vector<float> hwc(chw.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) hwc[(i * H * W + p) * C + c] = chw[(i * C + c) * H * W + p];
  write_floats(dir / "x.f32", chw);
  shrink::test::write_bytes(dir / "x.idx", idx_file({2, 4, 5, 3}, hwc));
  shrink::test::write_bytes(dir / "chw.idx", idx_file({2, 3, 4, 5}, chw));
  auto raw = run(dir / "m.shrink --input " + dir / "x.f32 --logits " + dir / "raw.f32");
  auto idx = run(dir / "m.shrink --input " + dir / "x.idx --logits " + dir / "idx.f32");
  CATCH_REQUIRE(raw.code == 0);
  CATCH_REQUIRE(idx.code == 0);
  CATCH_CHECK(file_bytes(dir / "raw.f32") == file_bytes(dir / "idx.f32"));
  auto wrong = run(dir / "m.shrink --input " + dir / "chw.idx");  // the same count, another shape: refused, not re-cut
  CATCH_CHECK(wrong.code == 2);
  CATCH_CHECK(wrong.out.find("IDX examples of shape 5x3x4") != std::string::npos);
}

namespace {

// A NumPy .npy file (format 1.0) of `descr` values with `shape`.
std::vector<uint8_t> npy_file(const std::string& descr, const std::string& shape, const std::vector<uint8_t>& data, bool fortran = false) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
  header.resize(((10 + header.size() + 1 + 63) / 64) * 64 - 10 - 1, ' ');
  header += '\n';
  std::vector<uint8_t> b{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, uint8_t(header.size() & 255), uint8_t(header.size() >> 8)};
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

}  // namespace

CATCH_TEST_CASE("shrink-run: NumPy arrays (float32, float64, uint8) are read with their shape checked", "[cli][shrink-run]") {
  RtTempDir dir;
  shrink::test::write_bytes(dir / "m.shrink", shrink::test::make_model("conv(4) relu gap linear(classes)", {3, 4, 5}, 3));
  auto x = shrink::test::random_inputs(2, 60, 1);
  std::vector<double> x64(x.begin(), x.end());
  std::vector<uint8_t> x8(120);
  for (size_t k = 0; k < x8.size(); ++k) x8[k] = uint8_t(k * 7);
  std::vector<float> x8_scaled(x8.begin(), x8.end());
  for (float& v : x8_scaled) v /= 255.0f;
  write_floats(dir / "x.f32", x);
  write_floats(dir / "x8.f32", x8_scaled);
  shrink::test::write_bytes(dir / "x.npy", npy_file("<f4", "(2, 3, 4, 5)", bytes_of(x)));
  shrink::test::write_bytes(dir / "x64.npy", npy_file("<f8", "(2, 3, 4, 5)", bytes_of(x64)));
  shrink::test::write_bytes(dir / "one.npy", npy_file("<f4", "(3, 4, 5)", bytes_of(std::vector<float>(x.begin(), x.begin() + 60))));
  shrink::test::write_bytes(dir / "x8.npy", npy_file("|u1", "(2, 3, 4, 5)", x8));
  auto logits = [&](const std::string& file) {
    auto r = run(dir / "m.shrink --input " + dir / file + " --logits " + dir / (file + ".out"));
    CATCH_INFO(file << ": " << r.out);
    CATCH_REQUIRE(r.code == 0);
    return file_bytes(dir / (file + ".out"));
  };
  const auto raw = logits("x.f32");
  CATCH_CHECK(logits("x.npy") == raw);
  CATCH_CHECK(logits("x64.npy") == raw);  // float32 values held as float64
  CATCH_CHECK(logits("one.npy") == raw.substr(0, raw.size() / 2));
  CATCH_CHECK(logits("x8.npy") == logits("x8.f32"));
  // Another shape of the same size, a type, an order and a length it does not read: refused.
  shrink::test::write_bytes(dir / "hwc.npy", npy_file("<f4", "(2, 4, 5, 3)", bytes_of(x)));
  shrink::test::write_bytes(dir / "i32.npy", npy_file("<i4", "(2, 3, 4, 5)", bytes_of(x)));
  shrink::test::write_bytes(dir / "f.npy", npy_file("<f4", "(2, 3, 4, 5)", bytes_of(x), true));
  const auto x_bytes = bytes_of(x);
  shrink::test::write_bytes(dir / "cut.npy", npy_file("<f4", "(2, 3, 4, 5)", std::vector<uint8_t>(x_bytes.begin(), x_bytes.begin() + 100)));
  shrink::test::write_bytes(dir / "big.npy", npy_file("<f4", "(99999999999999999999, 3)", x_bytes));
  for (const auto& [file, expect] : std::vector<std::pair<std::string, std::string>>{
           {"hwc.npy", "a NumPy array of shape 2x4x5x3, but the model reads N,3x4x5"},
           {"i32.npy", "NumPy dtype '<i4'"},
           {"f.npy", "Fortran-order"},
           {"cut.npy", "truncated or padded NumPy data"},
           {"big.npy", "a NumPy shape entry out of range"}}) {
    auto r = run(dir / "m.shrink --input " + dir / file);
    CATCH_INFO(file << ": " << r.out);
    CATCH_CHECK(r.code == 2);
    CATCH_CHECK(lines(r.out) == 1);
    CATCH_CHECK(r.out.find(expect) != std::string::npos);
  }
}
