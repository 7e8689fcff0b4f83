#!/usr/bin/env bash
# Install the peers of `labelflow bench --peers` — Daft and Ray Data, with onnxruntime,
# numpy and Pillow, the versions in scripts/requirements-peers.txt — into their own
# virtual environment (default third_party/peers-venv, where the bench looks first).
#
# Usage: scripts/setup-peers.sh [DEST]
#
# The last line printed is LABELFLOW_PEERS_PYTHON=<the venv's python>. On a CUDA host,
# install onnxruntime-gpu==1.31.1 into the venv instead of onnxruntime for the peers to
# use the GPU. Running it again is a no-op once everything is there.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO/third_party/peers-venv}"
REQS="$REPO/scripts/requirements-peers.txt"
stamp="$DEST/.labelflow-peers"
if [[ ! -f "$stamp" ]] || ! cmp -s "$REQS" "$stamp"; then
  echo "setup-peers: installing $(grep -vc '^#' "$REQS") packages into $DEST (about 400 MB)" >&2
  "${PYTHON:-python3}" -m venv "$DEST"
  "$DEST/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  cp "$REQS" "$stamp"
fi
echo "LABELFLOW_PEERS_PYTHON=$DEST/bin/python"
