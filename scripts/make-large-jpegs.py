#!/usr/bin/env python3
"""Camera-sized JPEGs for benchmarks: every fixture photo upscaled to 3840x2400 (9.2 MP)
or another size, JPEG quality 90, optionally with Gaussian noise (sigma 8) so the files
carry the fine detail of real photos (about 2.4 MB each instead of 0.7 MB at 9 MP).

Usage: scripts/make-large-jpegs.py OUT_DIR [--noise] [--size WxH]   (needs numpy and pillow)
       --size 6000x4000 gives 24 MP files
Then:  labelflow bench -i OUT_DIR --decode-threads 1 --stage-images 36 --images 72
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data" / "photos"


def main() -> None:
    args = sys.argv[1:]
    noise = "--noise" in args
    size = (3840, 2400)
    if "--size" in args:
        i = args.index("--size")
        try:
            w, h = args[i + 1].lower().split("x")
            size = (int(w), int(h))
        except (IndexError, ValueError):
            sys.exit(__doc__)
        del args[i : i + 2]
    args = [a for a in args if a != "--noise"]
    if len(args) != 1 or args[0].startswith("-"):
        sys.exit(__doc__)
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = sorted(p for p in PHOTOS.rglob("*") if p.is_file())
    for i, path in enumerate(files):
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB").resize(size, Image.BICUBIC)
        if noise:
            a = np.asarray(im).astype(np.float32) + rng.normal(0, 8, (size[1], size[0], 3))
            im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        im.save(out / f"large{i:02d}.jpg", quality=90)
    print(f"{len(files)} JPEGs of {size[0]}x{size[1]} in {out}")


if __name__ == "__main__":
    main()
