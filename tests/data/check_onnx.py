#!/usr/bin/env python3
"""Check an ONNX model written by labelflow.

Usage: check_onnx.py MODEL.onnx [MODEL.onnx ...]

For each model: onnx.checker.check_model(path, full_check=True) (structure and shape
inference), the labelflow metadata contract (labelflow.classes / preprocess / output),
then one onnxruntime CPU run on a random batch of 2, which must give float32 logits of
shape [2, N] with N = len(labelflow.classes), all finite. Exits 1 if any model fails.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def check(path: str) -> None:
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    classes = json.loads(meta["labelflow.classes"])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ValueError("labelflow.classes is not a JSON array of strings")
    pre = json.loads(meta["labelflow.preprocess"])
    if meta.get("labelflow.output") != "logits":
        raise ValueError(f"labelflow.output is {meta.get('labelflow.output')!r}, expected 'logits'")

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    if inp.name != "input" or out.name != "logits":
        raise ValueError(f"input/output are {inp.name!r}/{out.name!r}, expected 'input'/'logits'")
    _, channels, height, width = inp.shape
    if (channels, height, width) != (3, pre["crop"], pre["crop"]):
        raise ValueError(f"input shape {inp.shape} does not match crop {pre['crop']}")
    batch = np.random.default_rng(0).standard_normal((2, 3, height, width), dtype=np.float32)
    (logits,) = session.run(["logits"], {"input": batch})
    if logits.shape != (2, len(classes)) or logits.dtype != np.float32:
        raise ValueError(f"logits {logits.dtype} {logits.shape}, expected float32 (2, {len(classes)})")
    if not np.isfinite(logits).all():
        raise ValueError("logits are not all finite")
    print(
        f"ok {path}: {meta.get('labelflow.architecture')} width {meta.get('labelflow.width')} "
        f"input {list(inp.shape)} -> logits {list(logits.shape)} "
        f"(ir {model.ir_version}, opset {model.opset_import[0].version}, "
        f"{len(model.graph.initializer)} initializers, logits std {logits.std():.3g})"
    )


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        try:
            check(path)
        except Exception as e:  # report every model, then fail
            print(f"FAIL {path}: {type(e).__name__}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
