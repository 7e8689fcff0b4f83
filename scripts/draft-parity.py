#!/usr/bin/env python3
"""How far Pillow's DCT-scaled decoding (`draft()`) moves the preprocessed tensor from
the reference transform on the full-size image, per JPEG in a folder.

Usage: scripts/draft-parity.py DIR      (needs numpy and pillow)

For each file: mean absolute difference (normalised units) between the reference
(tests/data/reference/make_preprocess_reference.py: full decode, Resize(256) bilinear,
CenterCrop(224), ImageNet normalisation) and the same transform after
`draft("RGB", (k*256, k*256))`, for k = 1 (what `draft()` users do: stop at the
target) and k = 2 (keep twice the target, as labelflow's scaled decoding does). Compare
with labelflow's own figure in tests/integration/decode.rs
(scaled_jpeg_decoding_matches_the_reference_transform).
"""
import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location(
    "reference", ROOT / "tests" / "data" / "reference" / "make_preprocess_reference.py")
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)


def tensor(path, draft_factor=None):
    with Image.open(path) as im:
        if draft_factor:
            im.draft("RGB", (draft_factor * reference.RESIZE, draft_factor * reference.RESIZE))
        im = ImageOps.exif_transpose(im).convert("RGB")
    w, h = im.size
    r, c = reference.RESIZE, reference.CROP
    size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
    im = im.resize(size, Image.Resampling.BILINEAR)
    top, left = int(round((size[1] - c) / 2.0)), int(round((size[0] - c) / 2.0))
    x = np.asarray(im.crop((left, top, left + c, top + c)), dtype=np.uint8).astype(np.float32) / 255.0
    return ((x - reference.MEAN) / reference.STD).transpose(2, 0, 1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = []
    for p in sorted(Path(sys.argv[1]).glob("*.jp*g")):
        full = tensor(p)
        d1 = float(np.abs(tensor(p, 1) - full).mean())
        d2 = float(np.abs(tensor(p, 2) - full).mean())
        rows.append((d1, d2))
        print(f"{p.name:<24} draft to 1x target {d1:.4f}   draft to 2x target {d2:.4f}")
    if rows:
        a = np.array(rows)
        print(f"range over {len(rows)} files: 1x {a[:, 0].min():.4f}-{a[:, 0].max():.4f}, "
              f"2x {a[:, 1].min():.4f}-{a[:, 1].max():.4f}")


if __name__ == "__main__":
    main()
