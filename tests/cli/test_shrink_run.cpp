// shrink-run as a user meets it (no torch): every flag's bad values, and bad files, give exit
// code 2 and one line naming what is wrong. Models come from the torch-free writer.
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <cstring>
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

Result run(const std::string& args) {
  std::string cmd = std::string(SHRINK_RUN_BIN) + " " + args + " 2>&1";
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
