#!/usr/bin/env python3
"""Golden logits from the Python onnxruntime package (CPU execution provider).

Usage: golden_logits.py MODEL.onnx INPUT.f32 N OUT.f32

INPUT.f32 holds N x 3 x 224 x 224 raw little-endian float32 values (NCHW). The model's
first input is fed with it; its first output is written to OUT.f32 as raw
little-endian float32 (for AlexNet: N x 1000 logits). The output shape is printed.
Exit status 2 on a usage or input error.
"""
import sys
from pathlib import Path

import numpy as np


def fail(msg: str) -> "None":
    print(f"golden_logits.py: {msg}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) != 5:
        fail(f"expected 4 arguments, got {len(argv) - 1}\n" + __doc__.strip().splitlines()[2])
    model, input_path, n_text, out_path = argv[1], Path(argv[2]), argv[3], Path(argv[4])
    try:
        n = int(n_text)
    except ValueError:
        fail(f"N must be a positive integer, got {n_text!r}")
    if n <= 0:
        fail(f"N must be a positive integer, got {n}")
    shape = (n, 3, 224, 224)
    expected = int(np.prod(shape)) * 4
    try:
        data = input_path.read_bytes()
    except OSError as e:
        fail(f"cannot read {input_path}: {e}")
    if len(data) != expected:
        fail(f"{input_path} has {len(data)} bytes; {shape} float32 needs {expected}")
    x = np.frombuffer(data, dtype="<f4").reshape(shape).astype(np.float32)

    import onnxruntime as ort

    opts = ort.SessionOptions()
    # Deterministic, single-threaded reference run.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    (y,) = sess.run([sess.get_outputs()[0].name], {name: x})
    y = np.ascontiguousarray(y, dtype="<f4")
    out_path.write_bytes(y.tobytes())
    print(f"onnxruntime {ort.__version__}: {input_path} {list(shape)} -> {out_path} {list(y.shape)}")


if __name__ == "__main__":
    main(sys.argv)
