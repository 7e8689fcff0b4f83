#!/usr/bin/env bash
# Train the full-width AlexNet at 224 px on the full Fashion-MNIST on one CUDA GPU,
# in one command, and print one table.
#
# Usage: scripts/gpu-train.sh [FASHION_SRC] [OUT]
#
#   FASHION_SRC  folder with Fashion-MNIST's four IDX files, gzip-compressed or not
#                (default: /usr/share/datasets/fashion-mnist, Debian's
#                dataset-fashion-mnist package)
#   OUT          output folder (default: target/gpu-train); the model is OUT/model,
#                the table OUT/table.txt
#
# The images are written once as PNG folders (scripts/fashion_mnist_to_png.py, needs
# numpy and Pillow) into OUT/data. The run is the default recipe (AdamW, warm-up then
# cosine decay, label smoothing, batch normalisation folded on export), batch 256,
# EPOCHS epochs; the 10 000 test images are scored once at the end.
#
# Environment:
#   LABELFLOW_BIN  a binary built with `--features train` and LABELFLOW_TORCH_CUDA=1
#                  (default target/release/labelflow)
#   PYTHON         Python for the conversion (default python3)
#   EPOCHS         default 15;  BATCH  default 256;  LR  default: the recipe's
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC="${1:-/usr/share/datasets/fashion-mnist}"
OUT="${2:-target/gpu-train}"
BIN="${LABELFLOW_BIN:-target/release/labelflow}"
PY="${PYTHON:-python3}"
EPOCHS="${EPOCHS:-15}"
BATCH="${BATCH:-256}"
say() { echo "gpu-train: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ -x "$BIN" ] || die "$BIN is missing: build with LABELFLOW_TORCH_CUDA=1 cargo build --release --features train"
[ -d "$SRC" ] || die "no Fashion-MNIST at $SRC (apt install dataset-fashion-mnist, or pass the folder)"
mkdir -p "$OUT"
if [ ! -d "$OUT/data/test" ]; then
    say "writing Fashion-MNIST as PNG folders into $OUT/data"
    "$PY" scripts/fashion_mnist_to_png.py "$OUT/data" --src "$SRC" --split both >&2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /' | tee "$OUT/gpu.txt"

extra=()
[ -n "${LR:-}" ] && extra+=(--lr "$LR")
rm -rf "$OUT/model"
start=$(date +%s)
"$BIN" train --device cuda --data "$OUT/data/train" --test "$OUT/data/test" \
    --width 1 --input-size 224 --epochs "$EPOCHS" --batch-size "$BATCH" \
    --out "$OUT/model" --no-progress "${extra[@]}" 2>&1 | tee "$OUT/train.log"
wall=$(( $(date +%s) - start ))

"$PY" - "$OUT/model/card.json" "$wall" <<'PY' | tee "$OUT/table.txt"
import json, sys
card = json.load(open(sys.argv[1])); wall = int(sys.argv[2])
m = card["final_metrics"]
print("| run | epochs | batch | train images | test top-1 | test top-5 | val top-1 | wall |")
print("|---|---|---|---|---|---|---|---|")
print(f"| {card['device']}, width {card['width']}, {card['input_size']} px, {card['optimizer'].split(':')[0]} "
      f"| {card['epochs']} | {card['batch_size']} | {sum(card['train_images_per_class'].values())} "
      f"| {100*card['test_top1']:.2f} % | {100*card['test_top5']:.2f} % | {100*m['val_top1']:.2f} % | {wall} s |")
PY
