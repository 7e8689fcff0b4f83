#!/usr/bin/env python3
"""Check an ONNX model written by labelflow.

Usage: check_onnx.py MODEL.onnx [MODEL.onnx ...]

For each model: onnx.checker.check_model(path, full_check=True) (structure and shape
inference), the labelflow metadata contract (labelflow.classes / preprocess / output),
then one onnxruntime CPU run on a random batch of 2 (uint8 RGB [2, H, W, 3] for a
model whose graph normalises its input, float32 [2, 3, H, W] otherwise), which must
give float32 logits of
shape [2, N] with N = len(labelflow.classes), all finite. When the model has an
adaptive-average-pool stage (`avgpool*` nodes: input sizes other than 224), its output
is also compared with PyTorch's adaptive_avg_pool2d definition computed in numpy, and
LRN nodes (paper variant) with the paper's formula (alpha 1e-4 not divided by size).
For a uint8 input, the centred tensor the graph makes (`input.centred`) and the
first convolution's folded weights are compared with ToTensor + Normalize in numpy.
Exits 1 if any model fails.
"""

import json
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort


def adaptive_avg_pool(x: np.ndarray, out: int) -> np.ndarray:
    """PyTorch's adaptive_avg_pool2d: bin i covers [floor(i*n/out), ceil((i+1)*n/out))."""
    n, c, h, w = x.shape
    y = np.empty((n, c, out, out), dtype=np.float64)
    for i in range(out):
        r0, r1 = (i * h) // out, -(-((i + 1) * h) // out)
        for j in range(out):
            c0, c1 = (j * w) // out, -(-((j + 1) * w) // out)
            y[:, :, i, j] = x[:, :, r0:r1, c0:c1].astype(np.float64).mean(axis=(2, 3))
    return y


def run_probe(model: onnx.ModelProto, names: list, batch: np.ndarray) -> list:
    """Runs the model with intermediate values `names` as its outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {"input": batch})


def check_lrn(model: onnx.ModelProto, batch: np.ndarray) -> str:
    """The first LRN must compute the paper's b = a / (2 + 1e-4 * sum of a^2 over 5
    neighbouring channels)^0.75 (ONNX's alpha is the paper's alpha times size)."""
    lrns = [n for n in model.graph.node if n.op_type == "LRN"]
    if not lrns:
        return "no LRN"
    a, b = run_probe(model, [lrns[0].input[0], lrns[0].output[0]], batch)
    a64 = a.astype(np.float64)
    sq = np.pad(a64 * a64, ((0, 0), (2, 2), (0, 0), (0, 0)))
    window = sum(sq[:, k : k + a.shape[1]] for k in range(5))
    expected = a64 / (2.0 + 1e-4 * window) ** 0.75
    np.testing.assert_allclose(b, expected, rtol=1e-5, atol=1e-6)
    return f"{len(lrns)} LRN match the paper's formula"


def check_avgpool(model: onnx.ModelProto, batch: np.ndarray) -> str:
    nodes = {n.name: n for n in model.graph.node}
    if "avgpool" in nodes:
        source, how = nodes["avgpool"].input[0], "AveragePool"
    elif "avgpool.0" in nodes:
        source, how = nodes["avgpool.0"].input[1], "MatMul"
    else:
        return "no avgpool stage"
    features, pooled = run_probe(model, [source, "avgpool.out"], batch)
    expected = adaptive_avg_pool(features, 6)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)
    return f"avgpool {how} {features.shape[2]}x{features.shape[3]}->6x6 matches adaptive_avg_pool2d"


def check_normalisation(model: onnx.ModelProto, batch: np.ndarray, pre: dict) -> str:
    """A uint8 model's first nodes must centre the pixels on the mean (NCHW), and its
    first convolution must run on its own weights scaled by (1/255 or 1) / std per input
    channel: together ToTensor + Normalize, folded."""
    if batch.dtype != np.uint8:
        return "float input"
    scale = 1.0 / 255.0 if pre.get("pixel_range", "unit") == "unit" else 1.0
    mean = np.array(pre.get("mean", [0.485, 0.456, 0.406]), dtype=np.float64)
    std = np.array(pre.get("std", [0.229, 0.224, 0.225]), dtype=np.float64)
    centred, folded = run_probe(model, ["input.centred", "input.features.0.weight"], batch)
    want = batch.astype(np.float64).transpose(0, 3, 1, 2) - (mean / scale)[None, :, None, None]
    np.testing.assert_allclose(centred, want, rtol=1e-6, atol=1e-4)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    want_w = weights["features.0.weight"].astype(np.float64) * (scale / std)[None, :, None, None]
    np.testing.assert_allclose(folded, want_w, rtol=1e-5, atol=1e-8)
    return "uint8 input centred in the graph, 1/std folded into the first convolution"


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
    rng = np.random.default_rng(0)
    if inp.type == "tensor(uint8)":
        if meta.get("labelflow.input", "").split(",")[0] != "uint8-rgb-nhwc":
            raise ValueError(f"a uint8 input without labelflow.input saying so: {meta.get('labelflow.input')!r}")
        _, height, width, channels = inp.shape
        batch = rng.integers(0, 256, size=(2, height, width, 3), dtype=np.uint8)
    else:
        _, channels, height, width = inp.shape
        batch = rng.standard_normal((2, 3, height, width), dtype=np.float32)
    if (channels, height, width) != (3, pre["crop"], pre["crop"]):
        raise ValueError(f"input shape {inp.shape} does not match crop {pre['crop']}")
    (logits,) = session.run(["logits"], {"input": batch})
    if logits.shape != (2, len(classes)) or logits.dtype != np.float32:
        raise ValueError(f"logits {logits.dtype} {logits.shape}, expected float32 (2, {len(classes)})")
    if not np.isfinite(logits).all():
        raise ValueError("logits are not all finite")
    notes = f"{check_avgpool(model, batch)}; {check_lrn(model, batch)}; {check_normalisation(model, batch, pre)}"
    print(
        f"ok {path}: {meta.get('labelflow.architecture')} width {meta.get('labelflow.width')} "
        f"input {list(inp.shape)} -> logits {list(logits.shape)} "
        f"(ir {model.ir_version}, opset {model.opset_import[0].version}, "
        f"{len(model.graph.initializer)} initializers, logits std {logits.std():.3g}; {notes})"
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
