#!/usr/bin/env python3
"""Write torchvision's AlexNet as a file `labelflow model import` reads.

Usage:
  python scripts/export_torchvision_alexnet.py [--weights IMAGENET1K_V1|none]
         [--seed N] [--out alexnet.safetensors] [--onnx alexnet-torchvision.onnx]

--weights IMAGENET1K_V1 (the default) loads the ImageNet-trained weights; torchvision
downloads them once (233 MB, from download.pytorch.org) into its cache, so this needs
internet access. --weights none builds the same network with torchvision's own random
initialisation, seeded with --seed, offline (used to check the import).

The state_dict is written as safetensors (F32) with the PyTorch names
(features.0.weight ... classifier.6.bias), without needing the `safetensors` package.
--onnx also writes torch.onnx.export's ONNX file of the same network (eval mode,
dynamic batch), which `labelflow model import` reads too.

Then:
  labelflow model import alexnet.safetensors --out alexnet.onnx
  labelflow run --input photos/ --output preds/ --model alexnet.onnx

Needs Python with torch and torchvision (pip install torch torchvision).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys


def write_safetensors(path: str, state: dict) -> None:
    header, blobs, offset = {}, [], 0
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        data = tensor.detach().to("cpu").float().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for b in blobs:
            f.write(b)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="IMAGENET1K_V1", help="IMAGENET1K_V1 or none")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (--weights none)")
    ap.add_argument("--out", default="alexnet.safetensors")
    ap.add_argument("--onnx", help="also write torch.onnx.export's ONNX file here")
    args = ap.parse_args(argv)

    import torch
    import torchvision

    torch.manual_seed(args.seed)
    weights = None if args.weights.lower() == "none" else args.weights
    model = torchvision.models.alexnet(weights=weights).eval()
    write_safetensors(args.out, model.state_dict())
    print(f"wrote {args.out} (torchvision {torchvision.__version__}, weights {args.weights})")
    if args.onnx:
        x = torch.zeros(1, 3, 224, 224)
        torch.onnx.export(model, (x,), args.onnx, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
        print(f"wrote {args.onnx}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
