// shrink::image (common/image.h) against Pillow 9.4: tests/runtime/make_images.py writes PNGs and
// JPEGs of every kind with Pillow's convert("L"/"RGB") + resize(BILINEAR) of each as raw bytes, and
// decode -> to_channels -> resize must give those bytes. Then the files it must refuse, cleanly.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>

#include "common/error.h"
#include "common/image.h"
#include "tests/runtime/helpers.h"

using namespace shrink;
using namespace shrink::test;

namespace {

// make_images.py's output, written once per test run (Pillow's start-up is the slow part).
struct PillowImages {
  RtTempDir dir;
  bool written = false;
  PillowImages() {
    const std::string command = "/usr/bin/python3 '" SHRINK_MAKE_IMAGES "' '" + dir.path.string() + "'";
    written = std::system(command.c_str()) == 0;
  }
  std::string image(const std::string& name) const { return dir / ("images/" + name); }
};

const PillowImages& pillow_images() {
  static const PillowImages images;
  CATCH_REQUIRE(images.written);  // needs /usr/bin/python3 with PIL and numpy (scripts/packages: test)
  return images;
}

// One line of cases.txt: IMAGE DECODED_CHANNELS CHANNELS WIDTH HEIGHT EXPECTED_RAW TOLERANCE.
struct Case {
  std::string image;
  int64_t decoded_channels = 0, channels = 0, width = 0, height = 0;
  std::string expected;
  int tolerance = 0;
};

std::vector<Case> read_cases(const PillowImages& images) {
  std::ifstream in(images.dir / "cases.txt");
  std::vector<Case> cases;
  Case c;
  while (in >> c.image >> c.decoded_channels >> c.channels >> c.width >> c.height >> c.expected >> c.tolerance) cases.push_back(c);
  return cases;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int max_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  int most = 0;
  for (size_t i = 0; i < a.size(); ++i) most = std::max(most, std::abs(a[i] - b[i]));
  return most;
}

// The message of the UserError decode(path) raises ("" if it raises none), and what was printed
// to stderr meanwhile: libpng and libjpeg print by default, and must not here.
struct Refusal {
  std::string message, printed;
};

Refusal decode_refusal(const std::string& path, const RtTempDir& dir) {
  std::fflush(stderr);
  const int saved = dup(2);
  FILE* capture = std::fopen((dir / "stderr.txt").c_str(), "w+");
  dup2(fileno(capture), 2);
  Refusal refusal;
  try {
    image::decode(path);
  } catch (const UserError& e) {
    refusal.message = e.what();
  }
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::fclose(capture);
  const std::vector<uint8_t> printed = read_bytes(dir / "stderr.txt");
  refusal.printed.assign(printed.begin(), printed.end());
  return refusal;
}

void write_prefix(const std::string& from, const std::string& to, size_t size) {
  std::vector<uint8_t> bytes = read_bytes(from);
  bytes.resize(std::min(size, bytes.size()));
  write_bytes(to, bytes);
}

}  // namespace

CATCH_TEST_CASE("decode, to_channels and resize give Pillow's bytes for every PNG and JPEG kind", "[image]") {
  const PillowImages& images = pillow_images();
  const std::vector<Case> cases = read_cases(images);
  CATCH_REQUIRE(cases.size() >= 300);
  for (const Case& c : cases) {
    CATCH_INFO(c.image << " as " << c.channels << " channels, resized to " << c.width << " x " << c.height);
    const image::Image decoded = image::decode(c.image);
    CATCH_CHECK(decoded.channels == c.decoded_channels);
    const image::Image resized = image::resize(image::to_channels(decoded, c.channels), c.width, c.height);
    CATCH_CHECK(resized.width == c.width);
    CATCH_CHECK(resized.height == c.height);
    CATCH_CHECK(resized.channels == c.channels);
    const std::vector<uint8_t> expected = read_bytes(c.expected);
    CATCH_REQUIRE(resized.pixels.size() == expected.size());
    CATCH_CHECK(max_difference(resized.pixels, expected) <= c.tolerance);
  }
}

namespace {
// What shrink-run asks of a file it has read: does it start like a PNG or a JPEG?
bool starts_like_image_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(8, '\0');
  in.read(&head[0], 8);
  return image::starts_like_image(head.data(), static_cast<size_t>(in.gcount()));
}
}  // namespace

CATCH_TEST_CASE("starts_like_image knows PNG and JPEG by their first bytes, not by their names", "[image]") {
  const PillowImages& images = pillow_images();
  CATCH_CHECK(starts_like_image_file(images.image("UPPER.PNG")));
  CATCH_CHECK(starts_like_image_file(images.image("UPPER.JPG")));
  CATCH_CHECK(starts_like_image_file(images.image("png_named.jpg")));
  RtTempDir dir;
  std::ofstream(dir / "x.png") << "not an image\n";
  std::ofstream(dir / "empty.jpg");
  CATCH_CHECK_FALSE(starts_like_image_file(dir / "x.png"));
  CATCH_CHECK_FALSE(starts_like_image_file(dir / "empty.jpg"));
}

CATCH_TEST_CASE("a truncated, corrupt, unsupported or non-image file gives one line naming it, and prints nothing", "[image]") {
  const PillowImages& images = pillow_images();
  RtTempDir dir;
  std::ofstream(dir / "x.png") << "not an image\n";
  std::ofstream(dir / "empty.png");
  // name -> the words the message must hold
  std::vector<std::pair<std::string, std::string>> refused = {
      {dir / "x.png", "not a PNG or JPEG"}, {dir / "empty.png", "empty"}, {dir / "missing.png", "cannot open"},
      {dir.path.string(), "folder"}, {images.image("cmyk.jpg"), "unsupported JPEG: CMYK"},
      {images.image("palette_past_end.png"), "invalid PNG: a pixel indexes colour 2 of a palette of 2"}};
  for (const char* name : {"rgb.png", "interlaced.png", "rgb.jpg", "progressive.jpg", "gray.jpg"}) {
    const size_t size = read_bytes(images.image(name)).size();
    const std::string kind = std::string(name).find(".png") != std::string::npos ? "PNG" : "JPEG";
    for (size_t keep : {size / 10, size / 2, size * 9 / 10}) {
      const std::string cut = dir / ("cut" + std::to_string(keep) + "_" + name);
      write_prefix(images.image(name), cut, keep);
      refused.emplace_back(cut, "corrupt or truncated " + kind);
    }
  }
  // One flipped byte in the middle of a PNG's compressed data fails its checksum.
  std::vector<uint8_t> flipped = read_bytes(images.image("rgb.png"));
  flipped[flipped.size() / 2] ^= 0x55;
  write_bytes(dir / "flipped.png", flipped);
  refused.emplace_back(dir / "flipped.png", "corrupt or truncated PNG");
  for (const auto& [path, words] : refused) {
    CATCH_INFO(path);
    const Refusal refusal = decode_refusal(path, dir);
    CATCH_CHECK(refusal.message.rfind(path + ": ", 0) == 0);
    CATCH_CHECK(refusal.message.find(words) != std::string::npos);
    CATCH_CHECK(refusal.message.find('\n') == std::string::npos);
    CATCH_CHECK(refusal.printed.empty());
  }
}

CATCH_TEST_CASE("to_channels and resize refuse channel counts and sizes they cannot make", "[image]") {
  image::Image gray{2, 2, 1, {0, 64, 128, 255}};
  CATCH_CHECK_THROWS_AS(image::to_channels(gray, 2), UserError);
  CATCH_CHECK_THROWS_AS(image::to_channels(image::Image{1, 1, 4, {1, 2, 3, 4}}, 3), UserError);
  CATCH_CHECK_THROWS_AS(image::resize(gray, 0, 3), UserError);
  CATCH_CHECK_THROWS_AS(image::resize(gray, 3, -1), UserError);
  CATCH_CHECK(image::resize(gray, 2, 2).pixels == gray.pixels);
  CATCH_CHECK(image::to_channels(gray, 3).pixels == std::vector<uint8_t>{0, 0, 0, 64, 64, 64, 128, 128, 128, 255, 255, 255});
}
