#!/usr/bin/env bash
# Install libtorch for building labelflow with the `train` feature.
#
# Usage: scripts/setup-torch.sh [DEST]
#
#   DEST   virtual environment to install into (default: third_party/torch-venv in
#          the repository). A relative DEST is taken relative to the current directory.
#
# labelflow's training job links libtorch through the `tch` crate (tch 0.24.0 needs
# libtorch 2.11.0 exactly). libtorch is taken from the PyPI wheel torch==2.11.0 (the
# CUDA 13.0 build; it runs on CPU too), installed with --no-deps into a dedicated
# virtual environment. On a machine without CUDA, libtorch_cpu.so still needs
# libcudart.so.13 and libcupti.so.13; the small wheels nvidia-cuda-runtime and
# nvidia-cuda-cupti (with cuda-toolkit, the package they install under) provide them.
# The versions are pinned below. Running it again is a no-op once everything is there.
#
# The last two lines printed are
#   LIBTORCH=<the wheel's torch/ folder>           (build time: cargo reads it)
#   LD_LIBRARY_PATH=<libtorch lib + CUDA libs>     (run time: the loader needs it)
#
# Build and test:
#   eval "$(scripts/setup-torch.sh | tail -n2 | sed 's/^/export /')"
#   cargo build --release --features train
#
# With an existing PyTorch 2.11.0 install, skip this script and set LIBTORCH to its
# torch/ folder (python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
# and LD_LIBRARY_PATH to $LIBTORCH/lib.
#
# Environment:
#   PYTHON   interpreter that creates the virtual environment (default: python3).
#            pip's own settings (index, proxy) apply.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION=2.11.0
CUDA_TOOLKIT_VERSION=13.0.2
CUDA_RUNTIME_VERSION=13.0.96
CUDA_CUPTI_VERSION=13.0.85

die() { echo "setup-torch: error: $*" >&2; exit 1; }
say() { echo "setup-torch: $*" >&2; }

dest="${1:-$REPO/third_party/torch-venv}"
case "$dest" in /*) ;; *) dest="$PWD/$dest" ;; esac

[[ "$(uname -s)" == Linux && "$(uname -m)" == x86_64 ]] \
  || die "only Linux x86-64 has a pinned libtorch wheel here; install PyTorch $TORCH_VERSION yourself and set LIBTORCH"

py="$dest/bin/python"
if [[ ! -x "$py" ]]; then
  say "creating $dest"
  "${PYTHON:-python3}" -m venv "$dest" || die "could not create $dest (Debian: apt install python3-venv)"
fi

want="torch==$TORCH_VERSION cuda-toolkit==$CUDA_TOOLKIT_VERSION nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION nvidia-cuda-cupti==$CUDA_CUPTI_VERSION"
stamp="$dest/.labelflow-torch"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  say "installing $want into $dest (about 550 MB)"
  # shellcheck disable=SC2086
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps $want \
    || die "pip install failed; check network access to the package index"
  echo "$want" >"$stamp"
else
  say "torch $TORCH_VERSION already installed in $dest"
fi

site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
libtorch="$site/torch"
[[ -f "$libtorch/lib/libtorch_cpu.so" ]] || die "$libtorch/lib/libtorch_cpu.so is missing; remove $dest and run again"

# Folders holding libcudart.so.13 and libcupti.so.13 (their layout changed between
# releases of the nvidia wheels, so search rather than hard-code).
cuda_dirs="$(find "$site/nvidia" -name 'libcudart.so.13*' -o -name 'libcupti.so.13*' 2>/dev/null \
  | xargs -r -n1 dirname | sort -u | paste -sd:)"
[[ -n "$cuda_dirs" ]] || die "libcudart.so.13 / libcupti.so.13 not found under $site/nvidia"

echo "LIBTORCH=$libtorch"
echo "LD_LIBRARY_PATH=$libtorch/lib:$cuda_dirs"
