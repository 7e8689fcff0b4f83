#!/usr/bin/env bash
# The GPU check: on a CUDA machine, in under 8 minutes, `labelflow doctor`, then
# `labelflow bench` on CUDA at batch 64 and 256 and on CPU over the same images, and
# one table of the figures that say whether the GPU is fed.
#
# Usage: scripts/gpu-check.sh [IMAGES] [OUT]
#
#   IMAGES  folder of images (default: the fixture photos as 9 MP JPEGs, made once by
#           scripts/make-large-jpegs.py into target/gpu-check/large)
#   OUT     folder for the logs (default: target/gpu-check); the table is OUT/table.txt
#
# ONNX Runtime's CUDA build is found, in order, from ORT_DYLIB_PATH, the project-local
# third_party/onnxruntime-gpu (scripts/setup-ort.sh --gpu), or a Python onnxruntime-gpu
# install (labelflow's own search); `labelflow doctor` prints which library it loaded
# and the CUDA and cuDNN it found.
#
# Environment:
#   LABELFLOW_BIN  the binary (default target/release/labelflow, built when missing)
#   PYTHON         Python with numpy and pillow for making the images (default .venv/bin/python, else python3)
#   IMAGES_E2E     images in each end-to-end run (default 2000)
#
# What to read in the table: `e2e ÷ decode` is the end-to-end rate over the rate at
# which this host's cores decode and preprocess the same images; ≥ 0.8 means the GPU is
# not what limits the run. `inference` is the GPU's own rate on ready batches.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${2:-target/gpu-check}"
mkdir -p "$OUT"
BIN="${LABELFLOW_BIN:-target/release/labelflow}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
E2E="${IMAGES_E2E:-2000}"
CORES="$(nproc)"

say() { echo "gpu-check: $*" >&2; }

if [ -z "${ORT_DYLIB_PATH:-}" ] && [ -e third_party/onnxruntime-gpu/lib/libonnxruntime.so ]; then
    export ORT_DYLIB_PATH="$PWD/third_party/onnxruntime-gpu/lib/libonnxruntime.so"
fi
if [ ! -x "$BIN" ]; then
    say "building $BIN"
    cargo build --release --bin labelflow
fi

IMAGES="${1:-}"
if [ -z "$IMAGES" ]; then
    IMAGES="$OUT/large"
    if [ ! -d "$IMAGES" ] || [ -z "$(ls -A "$IMAGES")" ]; then
        say "making camera-sized JPEGs in $IMAGES"
        "$PY" scripts/make-large-jpegs.py "$IMAGES"
    fi
fi

say "doctor"
"$BIN" doctor 2>&1 | tee "$OUT/doctor.txt"

bench() { # NAME DEVICE BATCH
    say "bench $1 ($2, batch $3)"
    timeout 150 "$BIN" bench --input "$IMAGES" --device "$2" --batch-size "$3" \
        --images "$E2E" --stage-images "$((CORES * 40))" --decode-threads "$CORES" \
        >"$OUT/bench-$1.txt" 2>"$OUT/bench-$1.err" || {
        say "bench $1 failed (exit $?); see $OUT/bench-$1.err"
        tail -n 5 "$OUT/bench-$1.err" >&2
    }
}
bench cuda-64 cuda 64
bench cuda-256 cuda 256
bench cpu-64 cpu 64

rate() { # FILE ROW-PREFIX: img/s of the row starting with the prefix (3rd column from the right)
    awk -v p="$2" 'index($0, p) == 1 { print $(NF - 2); exit }' "$1" 2>/dev/null
}

{
    printf '%-10s %6s %14s %12s %12s %14s\n' device batch "decode img/s" "inference" "end-to-end" "e2e ÷ decode"
    for run in cuda-64 cuda-256 cpu-64; do
        f="$OUT/bench-$run.txt"
        dec="$(rate "$f" "decode+preprocess ($CORES thr)")"
        inf="$(rate "$f" "inference-only")"
        e2e="$(rate "$f" "end-to-end ($E2E images)")"
        ratio="$(awk -v a="${e2e:-0}" -v b="${dec:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
        printf '%-10s %6s %14s %12s %12s %14s\n' "${run%-*}" "${run##*-}" "${dec:--}" "${inf:--}" "${e2e:--}" "$ratio"
    done
    echo
    echo "images: $IMAGES ($(ls "$IMAGES" | wc -l) files, cycled), $E2E per end-to-end run, $CORES decode threads"
    grep -E "^(ONNX Runtime|version|providers|CUDA|cuDNN|GPUs)" "$OUT/doctor.txt" || true
} | tee "$OUT/table.txt"
