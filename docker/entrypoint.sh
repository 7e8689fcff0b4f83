#!/usr/bin/env bash
# Container entry point: point labelflow at the onnxruntime-gpu library of the image's
# Python environment and put the CUDA/cuDNN libraries from its nvidia-* wheels on the
# loader path, then run labelflow with the container's arguments.
#
# LABELFLOW_PYTHON  the Python whose site-packages hold onnxruntime (default /opt/ort/bin/python)
set -euo pipefail
py="${LABELFLOW_PYTHON:-/opt/ort/bin/python}"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
  lib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | sort | tail -n1 || true)"
  [[ -n "$lib" ]] && export ORT_DYLIB_PATH="$lib"
fi
cuda_dirs=""
for d in "$site"/nvidia/*/lib "$site"/onnxruntime/capi; do
  [[ -d "$d" ]] && cuda_dirs="${cuda_dirs:+$cuda_dirs:}$d"
done
export LD_LIBRARY_PATH="${cuda_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "${LABELFLOW_BIN:-labelflow}" "$@"
