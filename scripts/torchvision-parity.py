#!/usr/bin/env python3
"""Parity of `labelflow model import` with torchvision's own AlexNet, offline.

Usage:
  python scripts/torchvision-parity.py [--bin target/debug/labelflow] [--seed 0]
         [--photos tests/data/photos] [--work target/torchvision-parity]

Builds torchvision.models.alexnet(weights=None) with torchvision's initialisation
seeded by --seed (no download), then:

1. saves its state_dict with torch.save (.pth) and exports it with torch.onnx.export;
2. imports both with `labelflow model import`;
3. feeds the same random tensors to torchvision's forward and to each imported model
   (through ONNX Runtime, the library the batch job runs) and reports the largest
   absolute and relative logit difference and whether every top-1 agrees;
4. labels the fixture photos with `labelflow run` on the imported model and compares
   each photo's top-1 with torchvision's full evaluation transform on the same file
   (PIL: EXIF orientation, RGB, Resize(256) bilinear with antialiasing,
   CenterCrop(224), ToTensor, Normalize with ImageNet's mean and std).

Exits 1 when a logit differs by more than --atol + --rtol·|reference| or a top-1 on
the random tensors differs. Photos whose top two torchvision logits are closer than
the preprocessing difference can honestly flip with random weights; they are
reported, and counted against parity only beyond that margin.

Needs torch, torchvision, onnxruntime, numpy, pillow and pyarrow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("LABELFLOW_BIN", "target/debug/labelflow"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", default="tests/data/photos")
    ap.add_argument("--work", default="target/torchvision-parity")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import pyarrow.parquet as pq
    import torch
    import torchvision
    from PIL import Image, ImageOps
    from torchvision import transforms

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = torchvision.models.alexnet(weights=None).eval()
    pth, tv_onnx = work / "alexnet.pth", work / "torchvision.onnx"
    torch.save(model.state_dict(), pth)
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(tv_onnx),
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    imported = {}
    for name, src in (("pth", pth), ("onnx", tv_onnx)):
        out = work / f"imported-from-{name}.onnx"
        subprocess.run([args.bin, "model", "import", str(src), "--out", str(out)], check=True)
        imported[name] = out

    figures: dict = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "onnxruntime": ort.__version__, "seed": args.seed,
                     "atol": args.atol, "rtol": args.rtol}
    ok = True

    # 1. Logits on the same random tensors.
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(16, 3, 224, 224, generator=g)
    with torch.no_grad():
        ref = model(x).numpy()
    for name, path in imported.items():
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0].name
        got = sess.run(None, {inp: x.numpy()})[0]
        diff = np.abs(got - ref)
        worst_abs = float(diff.max())
        worst_rel = float((diff / np.maximum(np.abs(ref), 1e-12)).max())
        within = bool((diff <= args.atol + args.rtol * np.abs(ref)).all())
        top1 = bool((got.argmax(1) == ref.argmax(1)).all())
        figures[f"logits_{name}"] = {"max_abs": worst_abs, "max_rel": worst_rel,
                                     "ref_abs_max": float(np.abs(ref).max()),
                                     "within_tolerance": within, "top1_equal": top1}
        print(f"import of the {name}: max |Δlogit| {worst_abs:.3g} (largest |logit| "
              f"{np.abs(ref).max():.3g}), within tolerance {within}, top-1 equal {top1}")
        ok &= within and top1

    # 2. Top-1 on the fixture photos: labelflow's preprocessing against torchvision's.
    preds = work / "preds"
    subprocess.run([args.bin, "run", "--input", args.photos, "--output", str(preds),
                    "--model", str(imported["pth"]), "--no-progress"], check=False)
    table = pq.read_table(str(preds), columns=["key", "label_index", "error"]).to_pylist()
    ours = {r["key"]: r["label_index"] for r in table if r["error"] is None}
    tf = transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    root = Path(args.photos)
    rows, agree, close = [], 0, 0
    for p in sorted(q for q in root.rglob("*") if q.suffix.lower() in IMAGE_EXT):
        key = p.relative_to(root).as_posix()
        if key not in ours:
            continue
        img = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        with torch.no_grad():
            logits = model(tf(img).unsqueeze(0))[0]
        top2 = torch.topk(logits, 2)
        margin = float(top2.values[0] - top2.values[1])
        same = int(top2.indices[0]) == ours[key]
        agree += same
        close += (not same) and margin < 0.01 * float(logits.abs().max())
        rows.append({"key": key, "torchvision": int(top2.indices[0]), "labelflow": ours[key],
                     "margin": margin})
    figures["photos"] = {"images": len(rows), "top1_agree": agree, "disagree_within_margin": close,
                         "rows": rows}
    print(f"fixture photos: top-1 agrees on {agree} of {len(rows)}"
          + (f" ({close} of the rest within 1 % of the largest logit)" if close else ""))
    ok &= len(rows) > 0 and agree + close == len(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print("parity:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
