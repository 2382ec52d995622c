// PNG (libpng 1.6) and JPEG (libjpeg-turbo) decoding, Pillow's convert("L"/"RGB") and its
// bilinear resize (image.h says what matches Pillow and what does not).
//
// libpng and libjpeg report an error by calling a handler that must not return, and they are C:
// a C++ exception must not unwind through them. So every call into a library happens in a small
// function that first sets a jump point and owns no C++ object: the handler stores the library's
// message and longjmps back there, that function returns false, and its caller, which owns all
// memory through destructors, throws the UserError. Warnings go nowhere (stderr stays clean).
#include "common/image.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>  // jpeglib.h uses FILE without including it
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

#include "common/error.h"

namespace shrink::image {
namespace {

// Pillow refuses an image over 2 * Image.MAX_IMAGE_PIXELS (DecompressionBombError); so do we,
// from the header, before a hostile file makes us allocate gigabytes.
constexpr int64_t kMaxPixels = 2 * (int64_t{1024} * 1024 * 1024 / 4 / 3);

enum class Format { png, jpeg, unknown };

// By signature, as Pillow's PngImagePlugin and JpegImagePlugin accept files.
Format format_of(const uint8_t* bytes, size_t size) {
  static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  static const uint8_t jpeg[3] = {0xff, 0xd8, 0xff};
  if (size >= sizeof png && std::memcmp(bytes, png, sizeof png) == 0) return Format::png;
  if (size >= sizeof jpeg && std::memcmp(bytes, jpeg, sizeof jpeg) == 0) return Format::jpeg;
  return Format::unknown;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw UserError(path + ": is a folder, not an image file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(path + ": cannot open the image file (" + std::strerror(errno) + ")");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw UserError(path + ": cannot read the image file (" + std::strerror(errno) + ")");
  return bytes;
}

void check_size(const std::string& path, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0) throw UserError(path + ": the image has no pixels");
  if (width * height > kMaxPixels)
    throw UserError(path + ": " + std::to_string(width) + " x " + std::to_string(height) + " pixels is over the limit of " +
                    std::to_string(kMaxPixels) + " (Pillow's decompression-bomb limit)");
}

Image blank_image(int64_t width, int64_t height, int64_t channels) {
  Image image{width, height, channels, {}};
  image.pixels.resize(static_cast<size_t>(width * height * channels));
  return image;
}

// ---- PNG -------------------------------------------------------------------------------------

// What libpng's callbacks reach through their user pointers: the file's bytes and the message.
struct PngSource {
  const uint8_t* data = nullptr;
  size_t size = 0, offset = 0;
  char message[256] = "";
};

void png_read_from_memory(png_structp png, png_bytep out, size_t count) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (count > source->size - source->offset) png_error(png, "the file ends early");
  std::memcpy(out, source->data + source->offset, count);
  source->offset += count;
}

void png_on_error(png_structp png, png_const_charp message) {
  auto* source = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(source->message, sizeof source->message, "%s", message);
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // Pillow ignores them as well

// libpng's read structs for one file, destroyed on every path.
struct PngReader {
  PngSource source;
  png_structp png = nullptr;
  png_infop info = nullptr;
  explicit PngReader(const std::vector<uint8_t>& bytes) {
    source.data = bytes.data();
    source.size = bytes.size();
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_on_error, png_on_warning);
    if (png) info = png_create_info_struct(png);
    if (!info) {
      png_destroy_read_struct(&png, nullptr, nullptr);
      throw std::bad_alloc();
    }
  }
  ~PngReader() { png_destroy_read_struct(&png, &info, nullptr); }
  PngReader(const PngReader&) = delete;
  PngReader& operator=(const PngReader&) = delete;
};

// Reads the header and asks libpng for 8-bit gray or RGB rows whatever the file holds.
// False on a libpng error (the message is in reader.source). No C++ objects here: see the top.
bool png_start(PngReader& reader, int& passes) {
  if (setjmp(png_jmpbuf(reader.png))) return false;
  png_set_read_fn(reader.png, &reader.source, png_read_from_memory);
  png_read_info(reader.png, reader.info);
  if (png_get_color_type(reader.png, reader.info) == PNG_COLOR_TYPE_PALETTE)
    png_set_packing(reader.png);    // palette: one index a byte, looked up by colours_of
  else
    png_set_expand(reader.png);     // gray of 1, 2, 4 bits -> 8 (0..255, as Pillow)
  png_set_strip_16(reader.png);     // 16 bits -> the high byte, as Pillow's ";16B" unpackers
  png_set_strip_alpha(reader.png);  // Pillow's convert("L"/"RGB") drops alpha, blends nothing
  passes = png_set_interlace_handling(reader.png);
  png_read_update_info(reader.png, reader.info);
  return true;
}

// Each pass of an interlaced image fills in more pixels of the same rows.
bool png_read_pixels(PngReader& reader, int passes, Image& image) {
  if (setjmp(png_jmpbuf(reader.png))) return false;
  const size_t row_bytes = static_cast<size_t>(image.width * image.channels);
  for (int pass = 0; pass < passes; ++pass)
    for (int64_t y = 0; y < image.height; ++y) png_read_row(reader.png, image.pixels.data() + y * row_bytes, nullptr);
  return true;
}

// The RGB image a palette image's indices name. An index past the palette makes the file invalid:
// libpng would paint it black and Pillow gray, and neither is the image.
Image colours_of(const std::string& path, const PngReader& reader, const Image& indices) {
  png_colorp palette = nullptr;
  int colours = 0;
  png_get_PLTE(reader.png, reader.info, &palette, &colours);  // libpng refuses a palette image without one
  Image rgb = blank_image(indices.width, indices.height, 3);
  for (size_t k = 0; k < indices.pixels.size(); ++k) {
    const int i = indices.pixels[k];
    if (i >= colours)
      throw UserError(path + ": invalid PNG: a pixel indexes colour " + std::to_string(i) + " of a palette of " + std::to_string(colours));
    rgb.pixels[3 * k] = palette[i].red, rgb.pixels[3 * k + 1] = palette[i].green, rgb.pixels[3 * k + 2] = palette[i].blue;
  }
  return rgb;
}

Image decode_png(const std::string& path, const std::vector<uint8_t>& bytes) {
  PngReader reader(bytes);
  int passes = 1;
  auto fail = [&] { return UserError(path + ": corrupt or truncated PNG: " + reader.source.message); };
  if (!png_start(reader, passes)) throw fail();
  const int64_t width = png_get_image_width(reader.png, reader.info);
  const int64_t height = png_get_image_height(reader.png, reader.info);
  const int channels = png_get_channels(reader.png, reader.info);
  check_size(path, width, height);
  if ((channels != 1 && channels != 3) || png_get_bit_depth(reader.png, reader.info) != 8 ||
      png_get_rowbytes(reader.png, reader.info) != static_cast<size_t>(width * channels))
    throw std::logic_error(path + ": libpng's transforms did not give 8-bit gray or RGB rows");
  Image image = blank_image(width, height, channels);
  if (!png_read_pixels(reader, passes, image)) throw fail();
  if (png_get_color_type(reader.png, reader.info) == PNG_COLOR_TYPE_PALETTE) return colours_of(path, reader, image);
  return image;  // trailing chunks are not read: Pillow does not need IEND either
}

// ---- JPEG ------------------------------------------------------------------------------------

// libjpeg's error manager first, so that the pointer libjpeg hands back finds the rest.
struct JpegErrors {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
};

[[noreturn]] void jpeg_on_error(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings about damaged data are ignored, as Pillow does, except a file that ends early: libjpeg
// would pad it with gray where Pillow raises "image file is truncated".
void jpeg_on_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

void jpeg_print_nothing(j_common_ptr) {}

// libjpeg's decompressor for one file. Zeroed, so destroying it is safe even when creating it failed.
struct JpegReader {
  JpegErrors errors;
  jpeg_decompress_struct cinfo{};
  JpegReader() {
    cinfo.err = jpeg_std_error(&errors.manager);
    errors.manager.error_exit = jpeg_on_error;
    errors.manager.emit_message = jpeg_on_message;
    errors.manager.output_message = jpeg_print_nothing;
  }
  ~JpegReader() { jpeg_destroy_decompress(&cinfo); }
  JpegReader(const JpegReader&) = delete;
  JpegReader& operator=(const JpegReader&) = delete;
};

// False on a libjpeg error (the message is in reader.errors). No C++ objects here: see the top.
bool jpeg_read_header_from(JpegReader& reader, const std::vector<uint8_t>& bytes) {
  if (setjmp(reader.errors.jump)) return false;
  jpeg_create_decompress(&reader.cinfo);
  jpeg_mem_src(&reader.cinfo, bytes.data(), bytes.size());
  jpeg_read_header(&reader.cinfo, TRUE);
  return true;
}

bool jpeg_read_pixels(JpegReader& reader, Image& image) {
  if (setjmp(reader.errors.jump)) return false;
  jpeg_start_decompress(&reader.cinfo);
  const size_t row_bytes = static_cast<size_t>(image.width * image.channels);
  while (reader.cinfo.output_scanline < reader.cinfo.output_height) {
    JSAMPROW row = image.pixels.data() + reader.cinfo.output_scanline * row_bytes;
    jpeg_read_scanlines(&reader.cinfo, &row, 1);
  }
  return true;  // ~JpegReader's jpeg_destroy_decompress needs no jpeg_finish_decompress first
}

// Pillow's choices: 1 component -> "L", 3 -> "RGB" with libjpeg's defaults (islow DCT, fancy
// upsampling; Pillow changes them only for draft()); 4 (CMYK, YCCK) is refused here.
J_COLOR_SPACE jpeg_output_space(const std::string& path, const jpeg_decompress_struct& cinfo) {
  if (cinfo.num_components == 1) return JCS_GRAYSCALE;
  if (cinfo.num_components == 3) return JCS_RGB;
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  throw UserError(path + ": unsupported JPEG: " +
                  (cmyk ? std::string("CMYK colour") : std::to_string(cinfo.num_components) + " colour components") +
                  " (only grayscale and RGB JPEGs are read; save it as RGB)");
}

Image decode_jpeg(const std::string& path, const std::vector<uint8_t>& bytes) {
  JpegReader reader;
  auto fail = [&] { return UserError(path + ": corrupt or truncated JPEG: " + reader.errors.message); };
  if (!jpeg_read_header_from(reader, bytes)) throw fail();
  reader.cinfo.out_color_space = jpeg_output_space(path, reader.cinfo);
  check_size(path, reader.cinfo.image_width, reader.cinfo.image_height);
  Image image = blank_image(reader.cinfo.image_width, reader.cinfo.image_height, reader.cinfo.num_components);
  if (!jpeg_read_pixels(reader, image)) throw fail();
  return image;
}

// ---- resampling ------------------------------------------------------------------------------

// Pillow's fixed point for 8-bit images (Resample.c, PRECISION_BITS = 32 - 8 - 2): weights times
// 2^22 leave 2 bits of headroom for sums whose rounded weights overshoot 1.
constexpr int kPrecisionBits = 22;

// One pass's weights: output i reads inputs [first[i], first[i] + count[i]) with
// weights[i * stride + k], in fixed point.
struct Taps {
  std::vector<int> first, count;
  std::vector<int32_t> weights;
  int stride = 0;
};

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// The real-valued weights of output i, normalized to sum 1, into w[0, count); Pillow's order of
// operations, so every double comes out the same (the image is compiled with -ffp-contract=off).
void output_weights(int64_t in_size, double scale, double support, double inverse_filter_scale, int64_t i, int& first, int& count,
                    double* w) {
  const double center = (static_cast<double>(i) + 0.5) * scale;
  first = std::max(0, static_cast<int>(center - support + 0.5));  // (int) truncates, as Pillow's
  count = std::min(static_cast<int>(in_size), static_cast<int>(center + support + 0.5)) - first;
  double total = 0.0;
  for (int k = 0; k < count; ++k) {
    w[k] = triangle((static_cast<double>(k + first) - center + 0.5) * inverse_filter_scale);
    total += w[k];
  }
  for (int k = 0; k < count && total != 0.0; ++k) w[k] /= total;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear (triangle) filter: its support
// of 1 input pixel widens by the reduction factor when shrinking, so every input pixel counts.
Taps bilinear_taps(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;
  Taps taps;
  taps.stride = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.first.resize(out_size);
  taps.count.resize(out_size);
  taps.weights.assign(static_cast<size_t>(out_size * taps.stride), 0);
  std::vector<double> w(taps.stride);
  for (int64_t i = 0; i < out_size; ++i) {
    output_weights(in_size, scale, support, 1.0 / filter_scale, i, taps.first[i], taps.count[i], w.data());
    for (int k = 0; k < taps.count[i]; ++k) {
      const double fixed = w[k] * (1 << kPrecisionBits);
      taps.weights[i * taps.stride + k] = static_cast<int32_t>(fixed < 0 ? fixed - 0.5 : fixed + 0.5);
    }
  }
  return taps;
}

// Pillow starts each sum at one half (rounding) and floors the shift, then clips to 0..255.
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);
uint8_t clip8(int32_t sum) { return static_cast<uint8_t>(std::clamp(sum >> kPrecisionBits, 0, 255)); }

Image resample_horizontal(const Image& in, int64_t width) {
  const Taps taps = bilinear_taps(in.width, width);
  const int64_t c = in.channels;
  Image out = blank_image(width, in.height, c);
  for (int64_t y = 0; y < in.height; ++y) {
    const uint8_t* row = in.pixels.data() + y * in.width * c;
    uint8_t* out_row = out.pixels.data() + y * width * c;
    for (int64_t x = 0; x < width; ++x) {
      const int32_t* w = taps.weights.data() + x * taps.stride;
      for (int64_t ch = 0; ch < c; ++ch) {
        int32_t sum = kHalf;
        for (int k = 0; k < taps.count[x]; ++k) sum += row[(taps.first[x] + k) * c + ch] * w[k];
        out_row[x * c + ch] = clip8(sum);
      }
    }
  }
  return out;
}

Image resample_vertical(const Image& in, int64_t height) {
  const Taps taps = bilinear_taps(in.height, height);
  const int64_t row_size = in.width * in.channels;
  Image out = blank_image(in.width, height, in.channels);
  for (int64_t y = 0; y < height; ++y) {
    const int32_t* w = taps.weights.data() + y * taps.stride;
    const uint8_t* first_row = in.pixels.data() + taps.first[y] * row_size;
    uint8_t* out_row = out.pixels.data() + y * row_size;
    for (int64_t i = 0; i < row_size; ++i) {
      int32_t sum = kHalf;
      for (int k = 0; k < taps.count[y]; ++k) sum += first_row[k * row_size + i] * w[k];
      out_row[i] = clip8(sum);
    }
  }
  return out;
}

void check_image(const Image& image, const char* what) {
  if (image.width <= 0 || image.height <= 0 || image.channels <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width * image.height * image.channels))
    throw std::invalid_argument(std::string(what) + ": the Image's sizes do not match its pixels");
}

}  // namespace

bool starts_like_image(const void* bytes, size_t size) { return format_of(static_cast<const uint8_t*>(bytes), size) != Format::unknown; }

Image decode(const std::string& path) { return decode(read_file(path), path); }

Image decode(const std::vector<uint8_t>& bytes, const std::string& path) {
  switch (format_of(bytes.data(), bytes.size())) {
    case Format::png: return decode_png(path, bytes);
    case Format::jpeg: return decode_jpeg(path, bytes);
    case Format::unknown: break;
  }
  throw UserError(path + (bytes.empty() ? ": the file is empty, not a PNG or JPEG image"
                                        : ": not a PNG or JPEG image (its first bytes are neither signature)"));
}

void to_planar(const Image& image, uint8_t* out) {
  check_image(image, "to_planar");
  const int64_t pixels = image.width * image.height, C = image.channels;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t p = 0; p < pixels; ++p) out[c * pixels + p] = image.pixels[p * C + c];
}

Image to_channels(const Image& image, int64_t channels) {
  check_image(image, "to_channels");
  if (image.channels == channels && (channels == 1 || channels == 3)) return image;
  const int64_t pixels = image.width * image.height;
  Image out = blank_image(image.width, image.height, channels);
  const uint8_t* in = image.pixels.data();
  if (image.channels == 3 && channels == 1) {
    // Pillow's L24: ITU-R 601-2 weights in 16-bit fixed point (they sum to 65536), rounded.
    for (int64_t p = 0; p < pixels; ++p, in += 3)
      out.pixels[p] = static_cast<uint8_t>((in[0] * 19595 + in[1] * 38470 + in[2] * 7471 + 0x8000) >> 16);
    return out;
  }
  if (image.channels == 1 && channels == 3) {
    for (int64_t p = 0; p < pixels; ++p) std::fill_n(out.pixels.data() + p * 3, 3, in[p]);
    return out;
  }
  throw UserError("cannot convert a " + std::to_string(image.channels) + "-channel image to " + std::to_string(channels) +
                  " channels: only 1 (grayscale) and 3 (RGB) are supported");
}

Image resize(const Image& image, int64_t width, int64_t height) {
  check_image(image, "resize");
  if (width <= 0 || height <= 0 || width * height > kMaxPixels)
    throw UserError("cannot resize an image to " + std::to_string(width) + " x " + std::to_string(height) + " pixels");
  // As Pillow: a pass whose size is unchanged is skipped (not run as an identity filter).
  const bool horizontal = width != image.width, vertical = height != image.height;
  if (horizontal && vertical) return resample_vertical(resample_horizontal(image, width), height);
  if (horizontal) return resample_horizontal(image, width);
  if (vertical) return resample_vertical(image, height);
  return image;
}

}  // namespace shrink::image
