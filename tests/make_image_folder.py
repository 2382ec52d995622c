"""Writes the image folder of tests/test_datasets.cpp ("[folder]") and Pillow's view of it.

usage: /usr/bin/python3 make_image_folder.py ROOT C H W [clean]

ROOT/train/CLASS/* and ROOT/test/CLASS/*: three classes (one with a space in its name), each a
mix of grayscale, RGB, palette and RGBA PNGs and RGB and grayscale JPEGs of different sizes,
extensions in any case, plus a hidden file and a text file that the reader skips (not with
`clean`: what torchvision's ImageFolder reads too).
ROOT.expected/SPLIT.u8: every image of the split, in the reader's order (classes sorted, then file
names sorted), as a torchvision user gets it: Image.open(f).convert("L" or "RGB")
.resize((W, H), Image.BILINEAR), stored C,H,W; ROOT.expected/SPLIT.labels: one byte per image.
"""
import os
import sys

import numpy as np
from PIL import Image

root, C, H, W = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
clean = sys.argv[5:] == ["clean"]
rng = np.random.default_rng(7)
classes = ["ankle boot", "bag", "coat"]


def pixels(h, w, channels, label):
    """A class-dependent gradient plus noise, so every rounding shows."""
    ramp = np.linspace(40 * label, 255, w)[None, :, None] * np.linspace(0.3, 1.0, h)[:, None, None]
    return np.clip(ramp + rng.integers(-40, 40, (h, w, channels)), 0, 255).astype(np.uint8)


def write(path, label, kind):
    h, w = [(19, 23), (28, 28), (33, 17), (12, 40)][rng.integers(0, 4)]
    if kind == "gray.png":
        Image.fromarray(pixels(h, w, 1, label)[:, :, 0], "L").save(path + ".png")
    elif kind == "rgb.PNG":
        Image.fromarray(pixels(h, w, 3, label), "RGB").save(path + ".PNG")
    elif kind == "palette.png":
        Image.fromarray(pixels(h, w, 3, label), "RGB").quantize(16).save(path + ".png")
    elif kind == "rgba.png":
        Image.fromarray(pixels(h, w, 4, label), "RGBA").save(path + ".png")
    elif kind == "rgb.JPG":
        Image.fromarray(pixels(h, w, 3, label), "RGB").save(path + ".JPG", quality=90)
    else:
        Image.fromarray(pixels(h, w, 1, label)[:, :, 0], "L").save(path + ".jpeg", quality=90)


kinds = ["gray.png", "rgb.PNG", "palette.png", "rgba.png", "rgb.JPG", "gray.jpeg"]
os.makedirs(root + ".expected", exist_ok=True)
for split, per_class in (("train", 6), ("test", 3)):
    for label, name in enumerate(classes):
        folder = os.path.join(root, split, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            write(os.path.join(folder, f"img{i:02d}"), label, kinds[(i + label) % len(kinds)])
        if not clean:
            open(os.path.join(folder, ".hidden.png"), "w").write("not an image, and hidden")
            open(os.path.join(folder, "notes.txt"), "w").write("not an image")
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, split, name)
        for f in sorted(os.listdir(folder)):
            if f.startswith(".") or not f.lower().endswith((".png", ".jpg", ".jpeg")):
                continue
            im = Image.open(os.path.join(folder, f)).convert("L" if C == 1 else "RGB").resize((W, H), Image.BILINEAR)
            images.append(np.array(im).reshape(H, W, C).transpose(2, 0, 1))
            labels.append(label)
    np.stack(images).astype(np.uint8).tofile(os.path.join(root + ".expected", split + ".u8"))
    np.array(labels, np.uint8).tofile(os.path.join(root + ".expected", split + ".labels"))
