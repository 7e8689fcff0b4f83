#!/usr/bin/env python3
"""torchvision's side of the import parity test (tests/integration/torchvision.rs).

Usage: torchvision_parity.py OUT_DIR PHOTOS_DIR [--seed N] [--batch B]

Needs Python with torch, torchvision and onnx (scripts/setup-torchvision.sh). Offline:
the network is torchvision's AlexNet with its own random initialisation
(`alexnet(weights=None)` after `torch.manual_seed(N)`), in eval mode. Writes to OUT_DIR:

  alexnet.pth           torch.save(model.state_dict()) (zip layout, PyTorch >= 1.6)
  alexnet-legacy.pth    the same with _use_new_zipfile_serialization=False (the layout of
                        torchvision's published alexnet-owt-7be5be79.pth)
  alexnet.onnx          torch.onnx.export of the same model (TorchScript exporter)
  inputs.f32            B seeded N(0, 1) tensors, [B, 3, 224, 224] float32 little-endian
  logits.f32            torchvision's forward on them, [B, 1000]
  photos.json           for each image under PHOTOS_DIR (recursive, sorted; the path
                        relative to it): torchvision's full evaluation transform
                        (Resize(256), CenterCrop(224), ToTensor, Normalize, on the
                        upright image: PIL's exif_transpose first, as labelflow decodes
                        upright), then the forward: top-1 index, its softmax score and
                        the five best indices
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("photos")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    import torchvision
    from PIL import Image, ImageOps
    from torchvision import transforms

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = torchvision.models.alexnet(weights=None).eval()
    state = model.state_dict()
    torch.save(state, out / "alexnet.pth")
    torch.save(state, out / "alexnet-legacy.pth", _use_new_zipfile_serialization=False)
    x = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(model, (x,), str(out / "alexnet.onnx"), input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)

    g = torch.Generator().manual_seed(args.seed + 1)
    inputs = torch.randn(args.batch, 3, 224, 224, generator=g)
    with torch.no_grad():
        logits = model(inputs)
    (out / "inputs.f32").write_bytes(inputs.numpy().astype("<f4").tobytes())
    (out / "logits.f32").write_bytes(logits.numpy().astype("<f4").tobytes())

    transform = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    root = Path(args.photos)
    photos = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        with Image.open(path) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        with torch.no_grad():
            probs = torch.softmax(model(transform(img).unsqueeze(0))[0], dim=0)
        top = torch.topk(probs, 5)
        photos[path.relative_to(root).as_posix()] = {
            "top1": int(top.indices[0]),
            "score": float(top.values[0]),
            "top5": [int(i) for i in top.indices],
            "margin": float(top.values[0] - top.values[1]),
        }
    meta = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "seed": args.seed,
        "batch": args.batch,
        "classes": int(logits.shape[1]),
        "photos": photos,
    }
    (out / "photos.json").write_text(json.dumps(meta, indent=1))
    print(f"torchvision {torchvision.__version__}: {len(photos)} photos, "
          f"logits |max| {float(logits.abs().max()):.4g}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
