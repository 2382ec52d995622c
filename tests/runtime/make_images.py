"""Writes the images of tests/runtime/test_image.cpp and Pillow's answers for them.

usage: /usr/bin/python3 make_images.py OUT_DIR

OUT_DIR/images/: PNGs and JPEGs of every kind shrink::image reads (small, with noise, so that
every rounding shows). OUT_DIR/cases.txt: one line per comparison,
  IMAGE DECODED_CHANNELS CHANNELS WIDTH HEIGHT EXPECTED_RAW TOLERANCE
where EXPECTED_RAW holds Pillow's Image.open(IMAGE).convert("L" or "RGB").resize((WIDTH, HEIGHT),
Image.BILINEAR).tobytes(). A 16-bit grayscale PNG is the deliberate exception (common/image.h):
Pillow clips it to 255, so its reference is the 16-bit array scaled to its high byte (>> 8).
"""
import os
import struct
import sys
import warnings
import zlib

import numpy as np
from PIL import Image

warnings.simplefilter("ignore")  # Pillow warns about palette transparency given as bytes
rng = np.random.default_rng(20240611)


def noisy(height, width, channels, top=256, dtype=np.uint8):
    """A gradient plus noise: smooth parts and sharp edges, every value range covered."""
    ramp = np.linspace(0, top - 1, width)[None, :, None] * np.linspace(0.2, 1.0, height)[:, None, None]
    noise = rng.integers(-top // 4, top // 4, (height, width, channels))
    return np.clip(ramp + noise, 0, top - 1).astype(dtype)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_by_hand(path, pixels, bit_depth, color_type, interlaced=False):
    """For what Pillow cannot write: 16-bit RGB, and Adam7 interlacing (filter 0 on every row)."""
    height, width = pixels.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes if interlaced else [(0, 0, 1, 1)]:
        part = pixels[y0::dy, x0::dx]
        if part.size:
            raw += b"".join(b"\0" + row.astype(dtype).tobytes() for row in part)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, int(interlaced))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_palette_index_past_end(path):
    """An invalid PNG: a two-colour palette, and pixels that index colours 2 to 5 too."""
    raw = b"".join(b"\0" + bytes([(x + y) % 6 for x in range(5)]) for y in range(4))
    header = struct.pack(">IIBBBBB", 5, 4, 8, 3, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", bytes([10, 20, 30, 200, 100, 50])) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def palette_image(height, width, colors):
    image = Image.fromarray(rng.integers(0, colors, (height, width), dtype=np.uint8), "P")
    image.putpalette(rng.integers(0, 256, 3 * colors).tolist())
    return image


def write_images(folder):
    """{file name: what shrink::image::decode gives (1 or 3 channels)}; Pillow writes all it can."""
    def save(name, image, **options):
        image.save(os.path.join(folder, name), **options)
    save("gray.png", Image.fromarray(noisy(29, 41, 1)[..., 0], "L"))
    save("rgb.png", Image.fromarray(noisy(29, 41, 3), "RGB"))
    save("bilevel.png", Image.fromarray(noisy(19, 23, 1)[..., 0] > 127).convert("1"))
    save("gray_trns.png", Image.fromarray(noisy(21, 30, 1)[..., 0], "L"), transparency=40)
    save("palette.png", palette_image(21, 33, 256))
    save("palette_trns.png", palette_image(21, 33, 200), transparency=bytes(rng.integers(0, 256, 200).tolist()))
    save("palette4_trns.png", palette_image(17, 26, 16), transparency=3)  # written with 4 bits a pixel
    save("gray_alpha.png", Image.fromarray(noisy(22, 31, 2), "LA"))
    save("rgba.png", Image.fromarray(noisy(22, 31, 4), "RGBA"))
    save("gray16.png", Image.fromarray(noisy(23, 27, 1, 65536, np.uint16)[..., 0], "I;16"))
    write_png_by_hand(os.path.join(folder, "rgb16.png"), noisy(23, 27, 3, 65536, np.uint16), 16, 2)
    write_png_by_hand(os.path.join(folder, "interlaced.png"), noisy(19, 21, 3), 8, 2, interlaced=True)
    rgb = Image.fromarray(noisy(23, 37, 3), "RGB")
    save("rgb.jpg", rgb, quality=90)  # 4:2:0, so chroma edges of an odd size matter
    save("rgb422.jpg", rgb, quality=90, subsampling=1)
    save("progressive.jpg", rgb, quality=90, progressive=True)
    save("gray.jpg", Image.fromarray(noisy(23, 37, 1)[..., 0], "L"), quality=90)
    save("UPPER.PNG", Image.fromarray(noisy(13, 17, 3), "RGB"))
    save("UPPER.JPG", Image.fromarray(noisy(13, 17, 3), "RGB"), quality=90)
    save("png_named.jpg", Image.fromarray(noisy(13, 17, 1)[..., 0], "L"), format="PNG")  # content decides
    Image.fromarray(noisy(9, 11, 3), "RGB").convert("CMYK").save(os.path.join(folder, "cmyk.jpg"))  # refused
    write_palette_index_past_end(os.path.join(folder, "palette_past_end.png"))  # refused
    gray = ("gray", "bilevel", "gray_trns", "gray_alpha", "gray16", "png_named")
    refused = ("cmyk.jpg", "palette_past_end.png")
    return {name: 1 if name.split(".")[0] in gray else 3 for name in sorted(os.listdir(folder)) if name not in refused}


def reference(path):
    """Pillow's image, except a 16-bit grayscale one: its high byte (common/image.h says why)."""
    image = Image.open(path)
    if image.mode in ("I", "I;16"):
        return Image.fromarray((np.array(image).astype(np.uint32) >> 8).astype(np.uint8), "L")
    return image


def target_sizes(width, height):
    """Identity, one pass only (each way), shrinking by non-integer and large factors,
    enlarging, a different aspect ratio, a single pixel."""
    return [(width, height), (width - 3, height), (width, height + 4), (round(width / 2.7), round(height / 1.9)),
            (7, 5), (round(width * 2.3), round(height * 1.7)), (height + 5, max(1, width // 3)), (1, 1)]


def main(out):
    images = os.path.join(out, "images")
    expected = os.path.join(out, "expected")
    os.makedirs(images)
    os.makedirs(expected)
    lines = []
    for name, decoded_channels in write_images(images).items():
        source = reference(os.path.join(images, name))
        for channels, mode in ((1, "L"), (3, "RGB")):
            converted = source.convert(mode)
            for width, height in target_sizes(*converted.size):
                raw = os.path.join(expected, f"{len(lines)}.raw")
                with open(raw, "wb") as f:
                    f.write(converted.resize((width, height), Image.BILINEAR).tobytes())
                lines.append(f"{os.path.join(images, name)} {decoded_channels} {channels} {width} {height} {raw} 0\n")
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main(sys.argv[1])
