#!/usr/bin/env bash
# Install Python PyTorch + torchvision for the import parity test.
#
# Usage: scripts/setup-torchvision.sh [DEST]
#
#   DEST   virtual environment to install into (default: third_party/torchvision-venv in
#          the repository). A relative DEST is taken relative to the current directory.
#
# The parity test (tests/integration/torchvision.rs) checks that `labelflow model import`
# of torchvision's AlexNet gives torchvision's own logits and labels; it needs torchvision
# itself. PyPI's Linux torch wheel loads its CUDA libraries on `import torch`, even on a
# machine without a GPU, so this installs torch with its dependencies: about 4.8 GB, a
# minute on a fast link. The pins are in scripts/requirements-torchvision.txt; running
# this again is a no-op while that file is unchanged.
#
# The last line printed is
#   LABELFLOW_TORCHVISION_PYTHON=<the environment's python>
#
# Environment:
#   PYTHON   interpreter that creates the virtual environment (default: python3).
#            pip's own settings (index, proxy) apply.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$REPO/scripts/requirements-torchvision.txt"

die() { echo "setup-torchvision: error: $*" >&2; exit 1; }
say() { echo "setup-torchvision: $*" >&2; }

dest="${1:-$REPO/third_party/torchvision-venv}"
case "$dest" in /*) ;; *) dest="$PWD/$dest" ;; esac

py="$dest/bin/python"
if [[ ! -x "$py" ]]; then
  say "creating $dest"
  "${PYTHON:-python3}" -m venv "$dest" || die "could not create $dest (Debian: apt install python3-venv)"
fi

stamp="$dest/.labelflow-torchvision.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  say "installing $(basename "$req") into $dest (about 4.8 GB)"
  "$py" -m pip install --quiet --disable-pip-version-check -r "$req" \
    || die "pip install -r $req failed; check network access to the package index"
  echo "$want" >"$stamp"
else
  say "torchvision already installed in $dest"
fi

# The import is the check that matters: it loads every CUDA library torch needs.
env -u LD_LIBRARY_PATH "$py" -c 'import torch, torchvision, onnx' \
  || die "torch/torchvision do not import in $dest; remove it and run again"

echo "LABELFLOW_TORCHVISION_PYTHON=$py"
