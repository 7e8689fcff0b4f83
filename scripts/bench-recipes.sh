#!/usr/bin/env bash
# The training recipes side by side on a small labelled set: a 6 000-image
# Fashion-MNIST subset (600 per class; 10 % of it held out for validation by the stable
# hash), a quarter-width AlexNet at 64 px, 15 epochs, on this machine's CPU; each
# model is scored once on the 10 000 test images.
#
# Usage: scripts/bench-recipes.sh [FASHION_SRC] [OUT]
#
#   FASHION_SRC  folder with Fashion-MNIST's IDX files (default
#                /usr/share/datasets/fashion-mnist: apt install dataset-fashion-mnist)
#   OUT          work folder (default target/bench-recipes); the table is OUT/table.md
#
# Environment:
#   LABELFLOW_BIN  default target/release/labelflow
#   PYTHON         Python with numpy and Pillow (default .venv/bin/python, else python3)
#   EPOCHS         default 15
#   INPUT_SIZE     the model's input side in pixels (default 64)
#   WIDTH          the channel multiplier (default 0.25)
#   RUNS           extra runs, one per line: "NAME|FLAGS" (e.g. "bs64|--batch-size 64 --lr 3e-3")
#   APPEND         1 adds the rows to an existing OUT/table.md instead of starting anew
#   BASELINES      0 leaves out the runs that come first otherwise: the paper recipe,
#                  the modern recipe's own numbers (--small-set-below 0) and the
#                  default (no flags)
#   PAD            black border in pixels around every 28 px image (default 0; the data
#                  then goes to OUT/data-pad<PAD>)
#   PER_CLASS      training images per class (default 600; 6000 is the whole training
#                  set, 60 000 images; the data then goes to OUT/data-n<PER_CLASS>…)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC="${1:-/usr/share/datasets/fashion-mnist}"
OUT="${2:-target/bench-recipes}"
BIN="${LABELFLOW_BIN:-target/release/labelflow}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
EPOCHS="${EPOCHS:-15}"
say() { echo "bench-recipes: $*" >&2; }

[ -x "$BIN" ] || { say "error: $BIN is missing (cargo build --release --features train)"; exit 1; }
mkdir -p "$OUT"
PAD="${PAD:-0}"
PER_CLASS="${PER_CLASS:-600}"
DATA="$OUT/data"
[ "$PER_CLASS" = 600 ] || DATA="$DATA-n$PER_CLASS"
[ "$PAD" = 0 ] || DATA="$DATA-pad$PAD"
if [ ! -d "$DATA/train" ]; then
    "$PY" scripts/fashion_mnist_to_png.py "$DATA" --src "$SRC" --split train --per-class "$PER_CLASS" --pad "$PAD" >&2
fi
if [ ! -d "$DATA/test" ]; then
    "$PY" scripts/fashion_mnist_to_png.py "$DATA" --src "$SRC" --split test --pad "$PAD" >&2
fi

runs="${RUNS:-}"
if [ "${BASELINES:-1}" != 0 ]; then
    # The default (the modern recipe, which takes its small-set numbers on these
    # 5 400 images), the modern recipe's own numbers, and the paper's.
    runs="paper|--recipe paper
modern-own|--small-set-below 0
default|
$runs"
fi
if [ ! -s "$OUT/table.md" ] || [ "${APPEND:-0}" != 1 ]; then
    echo "| recipe | flags | test top-1 | val top-1 (last epoch) | train top-1 (last epoch) | wall |" >"$OUT/table.md"
    echo "|---|---|---|---|---|---|" >>"$OUT/table.md"
fi
while IFS='|' read -r name flags; do
    [ -n "$name" ] || continue
    say "$name: $flags"
    rm -rf "$OUT/$name"
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$BIN" train --data "$DATA/train" --test "$DATA/test" --out "$OUT/$name" \
        --width "${WIDTH:-0.25}" --input-size "${INPUT_SIZE:-64}" --epochs "$EPOCHS" --no-progress $flags 2>"$OUT/$name.log"
    wall=$(( $(date +%s) - start ))
    "$PY" - "$OUT/$name/card.json" "$name" "$flags" "$wall" >>"$OUT/table.md" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); m = c["final_metrics"]
flags = f"`{sys.argv[3]}`" if sys.argv[3].strip() else "(no flags)"
print(f"| {sys.argv[2]} | {flags} | {100*c['test_top1']:.2f} % | {100*m['val_top1']:.2f} % "
      f"| {100*m['train_top1']:.2f} % | {float(sys.argv[4]):.0f} s |")
PY
done <<<"$runs"
cat "$OUT/table.md"
