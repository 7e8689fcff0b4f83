#!/usr/bin/env bash
# `labelflow model import` on a full-size AlexNet, and head-only fine-tuning from it.
#
#   scripts/bench-import.sh [DIR]
#
# Makes a full-size AlexNet with seeded random weights (61.1 M parameters, 1 000
# classes), writes its state_dict as safetensors and as torch.save files in both
# layouts (tests/data/make_torch_state_dict.py, no PyTorch needed), times importing
# each (wall time and peak RSS from /usr/bin/time), checks the three imports are the
# same file (and, when scripts/setup-torchvision.sh has installed torchvision, times
# importing torch.save's and torch.onnx.export's own files of torchvision's AlexNet),
# then fine-tunes the imported model's last layer on the bundled
# Fashion-MNIST subset (tests/data/fashion, 15 epochs) and prints the last epochs.
# The weights are random: the fine-tuning figure shows the plumbing, not accuracy.
#
# DIR (default target/import-measure) holds the files. Needs .venv with onnx and
# numpy (scripts/test.sh makes it), /usr/bin/time, and a labelflow binary built with
# the `train` feature (LABELFLOW_BIN, default target/release/labelflow; built when
# missing, which needs LIBTORCH: see scripts/setup-torch.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
d="${1:-target/import-measure}"
PYTHON="${PYTHON:-.venv/bin/python}"
bin="${LABELFLOW_BIN:-target/release/labelflow}"
if [ ! -x "$bin" ]; then
    cargo build --release --features train --bin labelflow
fi
rm -rf "$d"
mkdir -p "$d"
"$bin" model init --classes 1000 --out "$d/full.onnx"
"$PYTHON" - "$d" <<'PY'
import json, struct, sys
import onnx
from onnx import numpy_helper
d = sys.argv[1]
m = onnx.load(f"{d}/full.onnx")
header, blobs, off = {}, [], 0
for t in m.graph.initializer:
    if not t.name.startswith(("features", "classifier")):
        continue
    b = numpy_helper.to_array(t).astype("<f4").tobytes()
    header[t.name] = {"dtype": "F32", "shape": list(t.dims), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
text = json.dumps(header)
text += " " * ((8 - (8 + len(text)) % 8) % 8)
with open(f"{d}/full.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)))
    f.write(text.encode())
    for b in blobs:
        f.write(b)
PY
"$PYTHON" tests/data/make_torch_state_dict.py --legacy "$d/full.safetensors" "$d/alexnet-legacy.pth"
"$PYTHON" tests/data/make_torch_state_dict.py "$d/full.safetensors" "$d/alexnet-zip.pth"
ls -l "$d"
for f in alexnet-legacy.pth alexnet-zip.pth full.safetensors; do
    /usr/bin/time -f "$f: %e s wall, %M KiB peak RSS" \
        "$bin" model import "$d/$f" --out "$d/imported-$f.onnx" 2>&1 | grep -E "wall|^imported"
done
sha256sum "$d"/imported-*.onnx
# With torchvision at hand (scripts/setup-torchvision.sh), also torch.save's own files of
# torchvision's AlexNet (random weights, offline), in both layouts.
tv_py="${LABELFLOW_TORCHVISION_PYTHON:-third_party/torchvision-venv/bin/python}"
if [ -x "$tv_py" ]; then
    env -u LD_LIBRARY_PATH "$tv_py" tests/data/torchvision_parity.py "$d/torchvision" tests/data/photos
    for f in alexnet-legacy.pth alexnet.pth alexnet.onnx; do
        /usr/bin/time -f "torchvision's $f: %e s wall, %M KiB peak RSS" \
            "$bin" model import "$d/torchvision/$f" --out "$d/torchvision/imported-$f.onnx" 2>&1 | grep -E "wall|^imported"
    done
fi
/usr/bin/time -f "head-only fine-tuning: %e s wall, %M KiB peak RSS" \
    "$bin" train --data tests/data/fashion/train --val tests/data/fashion/val \
    --from "$d/imported-alexnet-legacy.pth.onnx" --head-only --epochs 15 --batch-size 16 \
    --out "$d/head-only" 2>&1 | tail -n 4
