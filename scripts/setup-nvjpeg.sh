#!/usr/bin/env bash
# Install nvJPEG for labelflow's GPU JPEG decoder (`--decode gpu|auto`, a build with
# `--features nvjpeg`): PyPI's nvidia-nvjpeg wheel (libnvjpeg.so.13, about 4 MB, no
# CUDA toolkit or CUDA runtime needed), unpacked into third_party/nvjpeg, where
# labelflow looks for it.
#
# Usage: scripts/setup-nvjpeg.sh [DEST]
#
# The last line printed is LABELFLOW_NVJPEG=<the library>, for a DEST elsewhere. The
# NVIDIA driver (libcuda.so.1) comes with the machine's GPU driver, not from here.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION=13.2.3.58
DEST="${1:-$REPO/third_party/nvjpeg}"
LIB="$DEST/nvidia/cu13/lib/libnvjpeg.so.13"
if [[ ! -f "$DEST/.version" ]] || [[ "$(cat "$DEST/.version")" != "$VERSION" ]] || [[ ! -f "$LIB" ]]; then
  echo "setup-nvjpeg: installing nvidia-nvjpeg==$VERSION into $DEST" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "${PYTHON:-python3}" -m pip download -q --disable-pip-version-check --no-deps \
    "nvidia-nvjpeg==$VERSION" -d "$tmp"
  mkdir -p "$DEST"
  "${PYTHON:-python3}" -m zipfile -e "$tmp"/nvidia_nvjpeg-*.whl "$DEST"
  echo "$VERSION" > "$DEST/.version"
fi
[[ -f "$LIB" ]] || { echo "setup-nvjpeg: $LIB is missing after the install" >&2; exit 1; }
echo "LABELFLOW_NVJPEG=$LIB"
