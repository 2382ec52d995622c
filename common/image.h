// PNG and JPEG decoding, channel conversion and bilinear resizing without LibTorch (shrink-run
// reads its inputs with it). The goal is Pillow 9.4's numbers, so that a model trained on
// `Image.open(f).convert("L" or "RGB").resize((w, h), Image.BILINEAR)` sees the same bytes here:
//   resize(to_channels(decode(f), c), w, h) == that, byte for byte (tests/runtime/test_image.cpp).
//
// One deliberate difference: Pillow opens a 16-bit grayscale PNG as mode "I" and convert("L")
// clips it to 255, which turns almost any such image white. decode() instead keeps the high
// byte of every 16-bit sample (v >> 8), as Pillow itself does for 16-bit RGB, RGBA and gray+alpha
// PNGs, so those match Pillow exactly and a 16-bit grayscale image matches Pillow on
// `np.array(im) >> 8`.
//
// Not supported (a UserError says so): CMYK and YCCK JPEGs, JPEGs with other than 1 or 3
// components, images over Pillow's decompression-bomb limit. EXIF orientation is not applied
// (Pillow's open() does not either); gamma and colour profiles are ignored, as Pillow does.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace shrink::image {

// 8-bit pixels, height x width x channels, interleaved, rows without padding.
struct Image {
  int64_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
};

// True when the bytes (a file's first eight suffice) start like a PNG or a JPEG; the name's
// extension is not looked at.
bool starts_like_image(const void* bytes, size_t size);

// The image in `path`, PNG or JPEG by its first bytes: 1 channel for grayscale (gray+alpha loses
// its alpha), 3 for colour (alpha dropped, not blended; palettes expanded). UserError naming the
// file when it cannot be read, is not a PNG or JPEG, is truncated or corrupt, or is unsupported.
Image decode(const std::string& path);
// The same from the file's bytes, already read (`path` names it in errors).
Image decode(const std::vector<uint8_t>& bytes, const std::string& path);

// The pixels channel by channel (C,H,W order, as models take them) into out[channels * height * width].
void to_planar(const Image& image, uint8_t* out);

// Pillow's convert("L") (channels 1: luma in 16-bit fixed point, ITU-R 601-2 weights) or
// convert("RGB") (channels 3: gray replicated) of a 1- or 3-channel image. UserError otherwise.
Image to_channels(const Image& image, int64_t channels);

// Pillow's resize((width, height), Image.BILINEAR) for an image of any channel count: a
// triangle filter widened by the reduction factor (antialiased), in 22-bit fixed point,
// horizontal pass first; a pass whose size does not change is skipped.
Image resize(const Image& image, int64_t width, int64_t height);

}  // namespace shrink::image
