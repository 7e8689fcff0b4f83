#!/usr/bin/env python3
"""Reference tensors for the evaluation preprocessing (torchvision's ImageNet transform).

For every file under tests/data/photos (recursively, sorted by relative path) this
computes, with Pillow + NumPy only, exactly what

    transforms.Compose([
        transforms.Resize(256),                       # interpolation=BILINEAR (PIL)
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406],
                             std=[0.229, 0.224, 0.225]),
    ])

produces for `ImageOps.exif_transpose(Image.open(path)).convert("RGB")`, and writes it to
tests/data/reference/preprocess/<relative path, "/" replaced by "__">.f32 as raw
little-endian float32 in CHW order, shape [3, 224, 224]. `manifest.json` beside the
tensors lists each file with its shape, dtype, sha256 and the intermediate sizes.

Usage: tests/data/reference/make_preprocess_reference.py   (no arguments)
       tests/data/reference/make_preprocess_reference.py --one IMAGE OUT.f32
           the same tensor for one image anywhere (used by the large-JPEG parity test)
"""
import sys
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parent / "photos"
OUT = HERE / "preprocess"

RESIZE = 256
CROP = 224
MEAN_LIST = [0.485, 0.456, 0.406]
STD_LIST = [0.229, 0.224, 0.225]
MEAN = np.array(MEAN_LIST, dtype=np.float32)
STD = np.array(STD_LIST, dtype=np.float32)


def resized_size(w: int, h: int, size: int = RESIZE) -> tuple[int, int]:
    """torchvision.transforms.functional._compute_resized_output_size with size=[256]:
    the shorter side becomes `size`, the longer one int(size * long / short)
    (truncation, not rounding). Returns (new_w, new_h)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def center_crop_box(w: int, h: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """torchvision.transforms.functional.center_crop: top = int(round((h - 224) / 2.0)),
    left likewise. Python's round() rounds half to even (round(79.5) == 80,
    round(80.5) == 80). Returns a PIL box (left, top, right, bottom)."""
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return left, top, left + crop, top + crop


def preprocess(path: Path) -> tuple[np.ndarray, dict]:
    # torchvision's pil_loader: Image.open(...).convert("RGB"), with EXIF orientation
    # applied first (the project honours the orientation tag).
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
    w, h = im.size

    # transforms.Resize(256) -> F.resize -> F_pil.resize -> img.resize((w, h), BILINEAR).
    # Pillow's BILINEAR is a separable triangle filter whose support widens with the
    # downscale factor (antialiasing); reducing_gap stays None as in torchvision.
    new_w, new_h = resized_size(w, h)
    im = im.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)

    # transforms.CenterCrop(224) -> F.center_crop -> F_pil.crop -> img.crop(box).
    box = center_crop_box(new_w, new_h)
    im = im.crop(box)

    # transforms.ToTensor(): HWC uint8 -> CHW float32, divided by 255 (in float32).
    x = np.asarray(im, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    x = x.transpose(2, 0, 1)

    # transforms.Normalize(mean, std): (x - mean) / std per channel, in float32.
    x = (x - MEAN[:, None, None]) / STD[:, None, None]
    x = np.ascontiguousarray(x, dtype="<f4")
    assert x.shape == (3, CROP, CROP) and x.dtype == np.float32

    info = {
        "source_size": [w, h],
        "resized_size": [new_w, new_h],
        "crop_box": list(box),
    }
    return x, info


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.glob("*.f32"):
        stale.unlink()
    files = sorted(p for p in PHOTOS.rglob("*") if p.is_file())
    entries = []
    for path in files:
        rel = path.relative_to(PHOTOS).as_posix()
        x, info = preprocess(path)
        data = x.tobytes()
        name = rel.replace("/", "__") + ".f32"
        (OUT / name).write_bytes(data)
        entries.append({
            "file": rel,
            "tensor": name,
            "dtype": "float32",
            "byte_order": "little",
            "layout": "CHW",
            "shape": list(x.shape),
            "sha256": hashlib.sha256(data).hexdigest(),
            **info,
        })
        print(f"{rel}: {info['source_size']} -> {info['resized_size']} crop {info['crop_box']}")
    manifest = {
        "transform": "exif_transpose, convert RGB, Resize(256, BILINEAR), CenterCrop(224), "
                     "ToTensor, Normalize(ImageNet mean/std)",
        "mean": MEAN_LIST,
        "std": STD_LIST,
        "photos_root": "tests/data/photos",
        "files": entries,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        tensor, _ = preprocess(Path(sys.argv[2]))
        Path(sys.argv[3]).write_bytes(tensor.tobytes())
    else:
        main()
