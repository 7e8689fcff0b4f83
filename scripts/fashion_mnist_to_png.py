#!/usr/bin/env python3
"""Convert Fashion-MNIST's IDX files into PNG folders, one folder per class.

Usage:
  scripts/fashion_mnist_to_png.py OUT [--src DIR] [--split train|test|both]
                                      [--per-class N] [--skip-per-class K] [--pad P]

Writes OUT/<split>/<class>/<index>.png (28x28 greyscale) where <class> is the
dataset's class name (t-shirt_top, trouser, ...) and <index> the image's position in
its IDX file, zero-padded to 5 digits. --per-class keeps the first N images of each
class (after skipping the first K), so small, disjoint subsets are easy to cut:
  --split train --per-class 30               the fixtures' training images
  --split test --per-class 10                the fixtures' validation images

--pad P adds a black border of P pixels on every side (28+2P square): the batch job's
centre crop (224/256 of the resized side) then cuts the border, not the garment.

--src defaults to Debian's dataset-fashion-mnist package folder
(/usr/share/datasets/fashion-mnist; apt install dataset-fashion-mnist). The files may
be gzip-compressed or not. Needs numpy and Pillow.
"""

import argparse
import gzip
import os
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = [
    "t-shirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
]
PREFIX = {"train": "train", "test": "t10k"}


def open_idx(src: Path, stem: str):
    for name in (f"{stem}.gz", stem):
        p = src / name
        if p.is_file():
            return gzip.open(p, "rb") if name.endswith(".gz") else open(p, "rb")
    sys.exit(f"fashion_mnist_to_png: {src / stem}[.gz] not found "
             "(Debian: apt install dataset-fashion-mnist, or pass --src)")


def read_idx(src: Path, stem: str) -> np.ndarray:
    with open_idx(src, stem) as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    if magic >> 8 != 0x08:
        sys.exit(f"fashion_mnist_to_png: {stem} is not an unsigned-byte IDX file")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def convert(src: Path, out: Path, split: str, per_class, skip: int, pad: int = 0) -> int:
    images = read_idx(src, f"{PREFIX[split]}-images-idx3-ubyte")
    labels = read_idx(src, f"{PREFIX[split]}-labels-idx1-ubyte")
    if len(images) != len(labels):
        sys.exit(f"fashion_mnist_to_png: {len(images)} images but {len(labels)} labels in {split}")
    seen = [0] * len(CLASSES)
    written = 0
    for name in CLASSES:
        (out / split / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        seen[label] += 1
        if seen[label] <= skip:
            continue
        if per_class is not None and seen[label] > skip + per_class:
            continue
        path = out / split / CLASSES[label] / f"{i:05d}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            if pad:
                img = np.pad(img, pad, mode="constant", constant_values=0)
            Image.fromarray(img, mode="L").save(tmp, format="PNG", optimize=True)
            os.replace(tmp, path)
        written += 1
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--split", choices=["train", "test", "both"], default="both")
    ap.add_argument("--per-class", type=int, default=None)
    ap.add_argument("--skip-per-class", type=int, default=0)
    ap.add_argument("--pad", type=int, default=0)
    a = ap.parse_args()
    splits = ["train", "test"] if a.split == "both" else [a.split]
    for split in splits:
        n = convert(a.src, a.out, split, a.per_class, a.skip_per_class, a.pad)
        print(f"{split}: {n} images in {a.out / split}")


if __name__ == "__main__":
    main()
