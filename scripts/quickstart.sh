#!/usr/bin/env bash
# The embedded default, end to end on this machine — the whole loop on bundled data:
#
#   1. install ONNX Runtime and libtorch (PyPI wheels, once) and build labelflow;
#   2. train a small AlexNet on the bundled Fashion-MNIST subset
#      (tests/data/fashion/train, 300 images, 10 classes);
#   3. label a folder with it (tests/data/fashion/val, 100 images it never saw);
#   4. ask the results questions with SQL: predictions per class, and accuracy per
#      true class (the folder name) — the model's own card and metrics sit beside it.
#
# Usage: scripts/quickstart.sh [--no-train]
#
#   --no-train   skip libtorch and training: make an untrained full-size AlexNet with
#                `labelflow model init` and label the bundled photos with it instead.
#
# Everything goes under out/ (out/fashion-model, out/fashion-preds). Honours
# CARGO_TARGET_DIR.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

train=1
case "${1:-}" in
  "") ;;
  --no-train) train=0 ;;
  *) echo "usage: scripts/quickstart.sh [--no-train]" >&2; exit 2 ;;
esac

# The JPEG decoder's SIMD kernels need nasm at build time (build.rs stops without it).
if [[ "${LABELFLOW_JPEG_SIMD:-}" != off ]] && ! command -v nasm >/dev/null; then
  echo "quickstart: installing nasm (the JPEG decoder's SIMD kernels)" >&2
  sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nasm >/dev/null \
    || { echo "quickstart: could not install nasm; install it (apt-get install nasm) and run again" >&2; exit 2; }
fi

ort_line="$(scripts/setup-ort.sh | tail -n1)"
export "${ort_line?}"
bin="${CARGO_TARGET_DIR:-target}/release/labelflow"

if ((train == 0)); then
  cargo build --release --quiet
  "$bin" doctor
  [[ -f out/alexnet.onnx ]] || "$bin" model init --out out/alexnet.onnx --classes 1000
  # Exit code 1 would mean some images could not be read; the bundled photos all can.
  "$bin" run pipelines/local-folder.toml
  echo
  echo "Predictions per class (labelflow query --data out/preds --name class_counts):"
  "$bin" query --data out/preds --name class_counts --format table
  exit 0
fi

while IFS= read -r line; do
  case "$line" in
    LIBTORCH=*|LD_LIBRARY_PATH=*) export "${line?}" ;;
  esac
done <<<"$(scripts/setup-torch.sh | tail -n2)"
cargo build --release --quiet --features train
"$bin" doctor

echo
echo "== 1. train: a quarter-width AlexNet at 64 px on 300 labelled images (about a minute on 2 cores)"
"$bin" train --data tests/data/fashion/train --val tests/data/fashion/val \
  --out out/fashion-model --width 0.25 --input-size 64 --epochs 30 --batch-size 16 \
  --seed 0 --no-progress

echo
echo "== 2. run: label tests/data/fashion/val with the model just trained"
"$bin" run --model out/fashion-model/model.onnx --input tests/data/fashion/val \
  --output out/fashion-preds --no-progress

echo
echo "== 3. query: predictions per class"
"$bin" query --data out/fashion-preds --name class_counts --format table
echo
echo "== accuracy per true class (the folder name), newest run"
"$bin" query --data out/fashion-preds --format table "
  SELECT split_part(key, '/', 1) AS class,
         count(*) AS images,
         sum(CASE WHEN label = split_part(key, '/', 1) THEN 1 ELSE 0 END) AS correct,
         round(avg(CASE WHEN label = split_part(key, '/', 1) THEN 1.0 ELSE 0.0 END), 2) AS top1
  FROM latest GROUP BY 1 ORDER BY 1"
echo
echo "== the training curve (out/fashion-model/metrics.parquet)"
"$bin" query --data out/fashion-preds --table metrics=out/fashion-model/metrics.parquet \
  --format table "SELECT epoch, round(train_loss, 3) AS train_loss, round(val_top1, 2) AS val_top1 FROM metrics WHERE epoch % 5 = 0 ORDER BY epoch"
