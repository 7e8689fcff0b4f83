#!/usr/bin/env bash
# The GPU check: on a CUDA machine, in under 8 minutes, one table of the figures that
# say whether the GPU is fed — `labelflow doctor`; the GPU's own inference rate at batch
# 64 and 256 in fp32, tf32 and fp16; end to end with CPU decoding and with nvJPEG
# decoding, on the fixture photos and on 9 MP photos; the GPU's busy share during each
# end-to-end run; this host's CPU decode+preprocess rate; and the peers (Daft, Ray
# Data) on the same GPU where their venv is installed.
#
# Usage: scripts/gpu-check.sh [OUT]
#
#   OUT   folder for the logs (default: target/gpu-check); the table is OUT/table.txt
#
# ONNX Runtime's CUDA build is found, in order, from ORT_DYLIB_PATH, the project-local
# third_party/onnxruntime-gpu (scripts/setup-ort.sh --gpu), or a Python onnxruntime-gpu
# install (labelflow's own search); `labelflow doctor` prints which library it loaded.
# nvJPEG comes from LABELFLOW_NVJPEG or third_party/nvjpeg (scripts/setup-nvjpeg.sh);
# without it, or in a binary built without `--features nvjpeg`, the GPU-decode rows say
# why and show "-".
#
# Environment:
#   LABELFLOW_BIN  the binary (default target/release/labelflow, built with
#                  --features nvjpeg when missing)
#   PYTHON         Python with numpy and pillow for making the 9 MP photos (default
#                  .venv/bin/python, else python3)
#   IMAGES_E2E     images in each end-to-end run (default 2000)
#   BUDGET         seconds each bench may take (default 70)
#
# What to read: `e2e ÷ decode` is the end-to-end rate over the rate at which this
# host's cores decode and preprocess the same images on the CPU; ≥ 0.8 with CPU decode
# means the GPU is not what limits the run. With GPU decode on 9 MP photos, compare the
# end-to-end rate with the CPU-decode row's (the target is ≥ 3×). `busy %` is
# nvidia-smi's utilisation sampled every 200 ms during the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-target/gpu-check}"
mkdir -p "$OUT"
BIN="${LABELFLOW_BIN:-target/release/labelflow}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
E2E="${IMAGES_E2E:-2000}"
BUDGET="${BUDGET:-70}"
CORES="$(nproc)"
STAGE=$((CORES * 40))

say() { echo "gpu-check: $*" >&2; }

if [ -z "${ORT_DYLIB_PATH:-}" ] && [ -e third_party/onnxruntime-gpu/lib/libonnxruntime.so ]; then
    export ORT_DYLIB_PATH="$PWD/third_party/onnxruntime-gpu/lib/libonnxruntime.so"
fi
if [ -z "${LABELFLOW_NVJPEG:-}" ] && [ -e third_party/nvjpeg/nvidia/cu13/lib/libnvjpeg.so.13 ]; then
    export LABELFLOW_NVJPEG="$PWD/third_party/nvjpeg/nvidia/cu13/lib/libnvjpeg.so.13"
fi
if [ ! -x "$BIN" ]; then
    say "building $BIN"
    cargo build --release --bin labelflow --features nvjpeg
fi

PHOTOS=tests/data/photos
LARGE="$OUT/large"
if [ ! -d "$LARGE" ] || [ -z "$(ls -A "$LARGE")" ]; then
    say "making 9 MP JPEGs in $LARGE"
    "$PY" scripts/make-large-jpegs.py "$LARGE"
fi

say "doctor"
"$BIN" doctor 2>&1 | tee "$OUT/doctor.txt" >&2

# bench NAME ARGS...: one `labelflow bench`, its GPU utilisation sampled alongside.
bench() {
    local name="$1"; shift
    say "bench $name: $*"
    local smi=""
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 \
            >"$OUT/smi-$name.txt" 2>/dev/null &
        smi=$!
    fi
    timeout "$BUDGET" "$BIN" bench --no-progress --stage-images "$STAGE" --decode-threads "$CORES" "$@" \
        >"$OUT/bench-$name.txt" 2>"$OUT/bench-$name.err" || {
        say "bench $name failed (exit $?); see $OUT/bench-$name.err"
        tail -n 3 "$OUT/bench-$name.err" >&2
    }
    [ -n "$smi" ] && kill "$smi" 2>/dev/null || true
}

for batch in 64 256; do
    for precision in fp32 tf32 fp16; do
        bench "infer-$precision-$batch" --input "$PHOTOS" --device cuda --batch-size "$batch" \
            --precision "$precision" --images 0
    done
done
for set in photos large; do
    dir="$PHOTOS"; [ "$set" = large ] && dir="$LARGE"
    for decode in cpu gpu; do
        bench "e2e-$set-$decode" --input "$dir" --device cuda --batch-size 256 --precision tf32 \
            --decode "$decode" --images "$E2E"
    done
    bench "e2e-$set-cpuonly" --input "$dir" --device cpu --batch-size 64 --images "$((E2E / 10))"
done
PEERS_PY="${LABELFLOW_PEERS_PYTHON:-third_party/peers-venv/bin/python}"
if [ -x "$PEERS_PY" ]; then
    bench "peers" --input "$PHOTOS" --device cuda --batch-size 256 --images "$E2E" --peers \
        --peers-python "$PEERS_PY"
fi

rate() { # FILE ROW-PREFIX: img/s of the row starting with the prefix (3rd column from the right)
    awk -v p="$2" 'index($0, p) == 1 { print $(NF - 2); exit }' "$1" 2>/dev/null
}
busy() { # NAME: mean GPU utilisation, %
    awk '{ s += $1; n++ } END { if (n) printf "%.0f", s / n; else print "-" }' "$OUT/smi-$1.txt" 2>/dev/null || echo -
}
ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "-" }'; }

{
    printf '%-26s %12s %12s %12s %12s %8s\n' run "decode img/s" "inference" "end-to-end" "e2e÷decode" "busy %"
    for batch in 64 256; do
        for precision in fp32 tf32 fp16; do
            n="infer-$precision-$batch"; f="$OUT/bench-$n.txt"
            printf '%-26s %12s %12s %12s %12s %8s\n' "inference $precision b$batch" \
                "$(rate "$f" "decode+preprocess ($CORES thr)" || true)" "$(rate "$f" inference-only || true)" - - "$(busy "$n")"
        done
    done
    for set in photos large; do
        for decode in cpu gpu cpuonly; do
            n="e2e-$set-$decode"; f="$OUT/bench-$n.txt"
            images="$E2E"; [ "$decode" = cpuonly ] && images=$((E2E / 10))
            dec="$(rate "$f" "decode+preprocess ($CORES thr)" || true)"
            e2e="$(rate "$f" "end-to-end ($images images)" || true)"
            label="$set, $decode decode"; [ "$decode" = cpuonly ] && label="$set, all on CPU"
            printf '%-26s %12s %12s %12s %12s %8s\n' "$label" "${dec:--}" "$(rate "$f" inference-only || true)" \
                "${e2e:--}" "$(ratio "$e2e" "$dec")" "$(busy "$n")"
        done
        gpu="$(rate "$OUT/bench-e2e-$set-gpu.txt" "end-to-end ($E2E images)" || true)"
        cpu="$(rate "$OUT/bench-e2e-$set-cpu.txt" "end-to-end ($E2E images)" || true)"
        echo "  $set: GPU decode ÷ CPU decode end to end: $(ratio "$gpu" "$cpu")"
    done
    if [ -f "$OUT/bench-peers.txt" ]; then
        echo
        sed -n '/labelflow end to end (model load/,$p' "$OUT/bench-peers.txt"
    else
        echo "peers: not run (no $PEERS_PY; scripts/setup-peers.sh, with onnxruntime-gpu in that venv)"
    fi
    echo
    grep -h "GPU JPEG decoder\|nvJPEG" "$OUT"/bench-e2e-*-gpu.err 2>/dev/null | sort -u | head -3 || true
    echo "images: $PHOTOS ($(ls -R "$PHOTOS" | grep -c '\.'), cycled) and $LARGE ($(ls "$LARGE" | wc -l) 9 MP JPEGs, cycled); $CORES decode threads"
    grep -E "^(ONNX Runtime|version|providers|CUDA|cuDNN|GPUs)" "$OUT/doctor.txt" || true
} | tee "$OUT/table.txt"
