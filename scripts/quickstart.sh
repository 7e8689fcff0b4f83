#!/usr/bin/env bash
# The embedded default, end to end on this machine: install ONNX Runtime, build
# labelflow, make an AlexNet, label the bundled photos, and ask the results a question.
#
# Usage: scripts/quickstart.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

ort_line="$(scripts/setup-ort.sh | tail -n1)"
export "${ort_line?}"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/labelflow"

"$bin" doctor
[[ -f out/alexnet.onnx ]] || "$bin" model init --out out/alexnet.onnx --classes 1000
# Exit code 1 would mean some images could not be read; the bundled photos all can.
"$bin" run pipelines/local-folder.toml
echo
echo "Predictions per class (labelflow query --data out/preds --name class_counts):"
"$bin" query --data out/preds --name class_counts --format table
