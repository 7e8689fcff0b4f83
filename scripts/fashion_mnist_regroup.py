#!/usr/bin/env python3
"""Write a `uri,label` manifest that regroups Fashion-MNIST's 10 classes into 5.

Usage: scripts/fashion_mnist_regroup.py FOLDER OUT.csv

FOLDER is a folder-per-class tree made by scripts/fashion_mnist_to_png.py (e.g.
.../train or .../test). The new label set, for trying head-only fine-tuning
(`labelflow train --from MODEL.onnx --head-only --data OUT.csv`):

    top              t-shirt_top, pullover, shirt
    bottom_or_dress  trouser, dress
    outerwear        coat
    footwear         sandal, sneaker, ankle_boot
    bag              bag

URIs are written relative to OUT.csv's folder when FOLDER is below it, else absolute.
"""
import os
import sys
from pathlib import Path

GROUPS = {
    "t-shirt_top": "top",
    "pullover": "top",
    "shirt": "top",
    "trouser": "bottom_or_dress",
    "dress": "bottom_or_dress",
    "coat": "outerwear",
    "sandal": "footwear",
    "sneaker": "footwear",
    "ankle_boot": "footwear",
    "bag": "bag",
}


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    folder, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    rows = []
    for cls in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        if cls not in GROUPS:
            print(f"error: {folder / cls} is not a Fashion-MNIST class folder", file=sys.stderr)
            return 2
        for f in sorted((folder / cls).iterdir()):
            if f.is_file():
                try:
                    uri = f.relative_to(out.parent).as_posix()
                except ValueError:
                    uri = f.as_posix()
                rows.append(f"{uri},{GROUPS[cls]}")
    out.write_text("uri,label\n" + "\n".join(rows) + "\n")
    print(f"{out}: {len(rows)} images in {len(set(GROUPS.values()))} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
