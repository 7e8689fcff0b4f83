#!/usr/bin/env python3
"""Camera-sized JPEGs for benchmarks: every fixture photo upscaled to 3840x2400 (9.2 MP),
JPEG quality 90, optionally with Gaussian noise (sigma 8) so the files carry the fine
detail of real photos (about 2.4 MB each instead of 0.7 MB).

Usage: scripts/make-large-jpegs.py OUT_DIR [--noise]      (needs numpy and pillow)
Then:  labelflow bench -i OUT_DIR --decode-threads 1 --stage-images 36 --images 72
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data" / "photos"


def main() -> None:
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--noise"):
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    noise = len(sys.argv) == 3
    rng = np.random.default_rng(0)
    files = sorted(p for p in PHOTOS.rglob("*") if p.is_file())
    for i, path in enumerate(files):
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB").resize((3840, 2400), Image.BICUBIC)
        if noise:
            a = np.asarray(im).astype(np.float32) + rng.normal(0, 8, (2400, 3840, 3))
            im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        im.save(out / f"large{i:02d}.jpg", quality=90)
    print(f"{len(files)} JPEGs of 3840x2400 in {out}")


if __name__ == "__main__":
    main()
