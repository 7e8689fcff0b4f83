#!/usr/bin/env python3
"""Check `labelflow run --tta 10crop` against an independent ten-crop evaluation.

For every predicted row this recomputes, with Pillow + NumPy + onnxruntime, what
torchvision's

    transforms.Compose([
        transforms.Resize(256),
        transforms.TenCrop(224),        # five crops of the image and of its mirror
        Lambda(stack of ToTensor + Normalize),
    ])

followed by the model and a softmax averaged over the ten views gives, and compares
the class probabilities labelflow wrote (its top-k) with the reference ones.

Usage: check_tta.py MODEL.onnx PHOTOS_DIR ROWS.json
ROWS.json: [{"key": "relative/path.jpg", "top_k": [[label, index, score], ...]}, ...]
Exit status 0 when every score is within 0.02 and every top-1 agrees (or the
reference's two best are within 0.02 of each other); prints the worst difference.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_preprocess_reference import CROP, MEAN, STD, resized_size  # noqa: E402

TOLERANCE = 0.02


def to_tensor(im: Image.Image) -> np.ndarray:
    x = np.asarray(im, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    x = x.transpose(2, 0, 1)
    return (x - MEAN[:, None, None]) / STD[:, None, None]


def five_crop(im: Image.Image) -> list[Image.Image]:
    """torchvision.transforms.functional.five_crop: corners and centre."""
    w, h = im.size
    tl = im.crop((0, 0, CROP, CROP))
    tr = im.crop((w - CROP, 0, w, CROP))
    bl = im.crop((0, h - CROP, CROP, h))
    br = im.crop((w - CROP, h - CROP, w, h))
    top = int(round((h - CROP) / 2.0))
    left = int(round((w - CROP) / 2.0))
    centre = im.crop((left, top, left + CROP, top + CROP))
    return [tl, tr, bl, br, centre]


def ten_crop_probabilities(session: ort.InferenceSession, path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    new_w, new_h = resized_size(*im.size)
    im = im.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)
    views = five_crop(im) + five_crop(im.transpose(Image.FLIP_LEFT_RIGHT))
    inp = session.get_inputs()[0]
    name = inp.name
    if inp.type == "tensor(uint8)":
        # A model that normalises in its graph takes the views' RGB bytes, NHWC.
        batch = np.stack([np.asarray(v, dtype=np.uint8) for v in views])
    else:
        batch = np.stack([to_tensor(v) for v in views]).astype(np.float32)
    logits = session.run(None, {name: batch})[0].astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return p.mean(axis=0)


def main() -> int:
    model, photos, rows_path = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    rows = json.loads(Path(rows_path).read_text())
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    worst = 0.0
    failures = []
    for row in rows:
        ref = ten_crop_probabilities(session, photos / row["key"])
        for label, index, score in row["top_k"]:
            diff = abs(float(ref[index]) - score)
            worst = max(worst, diff)
            if diff > TOLERANCE:
                failures.append(f"{row['key']}: {label} {score:.4f} vs reference {ref[index]:.4f}")
        best = int(np.argmax(ref))
        ours = row["top_k"][0][1]
        if ours != best and abs(ref[best] - ref[ours]) > TOLERANCE:
            failures.append(f"{row['key']}: top-1 {ours} vs reference {best}")
    print(f"{len(rows)} images, worst probability difference {worst:.5f}")
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
