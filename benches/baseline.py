#!/usr/bin/env python3
"""The hand-rolled Python pipeline labelflow is compared with (`labelflow bench --baseline`).

What a user writes without labelflow: PIL + NumPy preprocessing (torchvision's
Resize/CenterCrop/ToTensor/Normalize, computed exactly as in
tests/data/reference/make_preprocess_reference.py) in a multiprocessing.Pool, onnxruntime
in the main process, predictions written with pyarrow. Prints one JSON object (the
last line of stdout); progress goes to stderr.
"""
import argparse
import io
import json
import math
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

try:
    import numpy as np
    import onnxruntime as ort
    import PIL
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageOps
except ImportError as e:
    print(f"baseline: missing Python package {e.name!r}; "
          "pip install pillow numpy onnxruntime pyarrow", file=sys.stderr)
    sys.exit(2)

# Defaults of labelflow's PreprocessSpec (src/preprocess.rs): ImageNet's.
DEFAULTS = {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "channel_order": "rgb", "layout": "nchw",
            "pixel_range": "unit"}
TOP_K = 5
SPEC = None  # set in main(); fork-started workers inherit it


def log(msg):
    print(f"baseline: {msg}", file=sys.stderr, flush=True)


def model_spec(session):
    """The model's "labelflow.preprocess" metadata, missing fields taking ImageNet's
    values; without metadata, crop = input H and resize = round(crop * 256 / 224)."""
    meta = session.get_modelmeta().custom_metadata_map
    if "labelflow.preprocess" in meta:
        spec = {**DEFAULTS, **json.loads(meta["labelflow.preprocess"])}
    else:
        inp = session.get_inputs()[0]
        h = inp.shape[1] if inp.type == "tensor(uint8)" else inp.shape[2]  # NHWC / NCHW
        crop = h if isinstance(h, int) and h > 0 else DEFAULTS["crop"]
        spec = {**DEFAULTS, "crop": crop, "resize": max(crop, round(crop * 256 / 224))}
    spec["logits"] = meta.get("labelflow.output", "logits").lower() not in ("probabilities", "probs")
    # A uint8 input takes the crop's RGB bytes (NHWC); the graph normalises them.
    spec["bytes"] = session.get_inputs()[0].type == "tensor(uint8)"
    return spec


def preprocess(src, draft=False):
    """File path or file object -> float32 tensor of one image (CHW unless NHWC), or
    its uint8 RGB crop (HWC) for a model that normalises in its graph."""
    resize, crop = SPEC["resize"], SPEC["crop"]
    with Image.open(src) as im:
        if draft:
            # JPEG DCT-scaled decoding (no-op for other formats). Pillow picks the
            # largest factor a in {8,4,2,1} with a <= min(w // R, h // R) = short // R,
            # so the decoded shorter side ceil(short / a) stays >= R whatever the
            # aspect or EXIF orientation: requesting (R, R) is enough.
            im.draft("RGB", (resize, resize))
        im = ImageOps.exif_transpose(im).convert("RGB")
    w, h = im.size
    # torchvision Resize(int): shorter side -> resize, longer side truncated.
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    im = im.resize(size, Image.Resampling.BILINEAR)  # antialiased when downscaling
    # torchvision CenterCrop: round-half-even offsets.
    top = int(round((size[1] - crop) / 2.0))
    left = int(round((size[0] - crop) / 2.0))
    im = im.crop((left, top, left + crop, top + crop))
    if SPEC["bytes"]:
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    x = np.asarray(im, dtype=np.uint8).astype(np.float32)
    if SPEC["pixel_range"] == "unit":
        x = x / np.float32(255.0)
    x = (x - np.asarray(SPEC["mean"], np.float32)) / np.asarray(SPEC["std"], np.float32)
    if SPEC["channel_order"] == "bgr":
        x = x[:, :, ::-1]  # mean/std are given in RGB order, so reorder afterwards
    if SPEC["layout"] == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def worker(path):
    """Pool task: (tensor, None) or (None, error message); a bad file never raises."""
    try:
        return preprocess(path), None
    except Exception as e:  # noqa: BLE001 - any decode failure becomes a row
        return None, f"{type(e).__name__}: {e}"


def list_images(folder):
    """Files under `folder` (recursive, sorted) that Pillow opens and fully decodes."""
    out = []
    for p in sorted(q for q in Path(folder).rglob("*") if q.is_file()):
        try:
            with Image.open(p) as im:
                im.load()
            out.append(str(p))
        except Exception:  # noqa: BLE001
            pass
    return out


def memory_mib(pids):
    """Proportional set size (Pss) summed over `pids`, MiB: memory shared between the
    forked workers counts once. Falls back to VmRSS where smaps_rollup is missing."""
    total = 0
    for pid in pids:
        for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
            try:
                with open(f"/proc/{pid}/{name}") as f:
                    line = next((l for l in f if l.startswith(key)), None)
            except OSError:
                continue
            if line:
                total += int(line.split()[1])
                break
    return total / 1024.0


class PeakMemory(threading.Thread):
    """Samples the memory of this process and the pool's workers every 50 ms."""

    def __init__(self, pool):
        super().__init__(daemon=True)
        self.pool, self.peak, self.done = pool, 0.0, threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            pids = [os.getpid()] + [p.pid for p in getattr(self.pool, "_pool", [])]
            self.peak = max(self.peak, memory_mib(pids))


def infer(session, x, fixed_batch):
    """Output rows for the batch `x`, zero-padded when the model's batch is fixed."""
    n = len(x)
    if fixed_batch and n < fixed_batch:
        x = np.concatenate([x, np.zeros((fixed_batch - n, *x.shape[1:]), x.dtype)])
    return session.run(None, {session.get_inputs()[0].name: x})[0][:n]


def main():
    global SPEC
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--images", type=int, required=True)
    ap.add_argument("--stage-images", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--intra-threads", type=int, default=0)
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    B, K, N = max(1, args.batch_size), max(1, args.stage_images), max(0, args.images)

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.intra_threads > 0:
        opts.intra_op_num_threads = args.intra_threads
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    SPEC = model_spec(session)
    batch_dim = session.get_inputs()[0].shape[0]
    fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    paths = list_images(args.input)
    if not paths:
        print(f"baseline: no decodable images in {args.input}", file=sys.stderr)
        sys.exit(2)
    log(f"{len(paths)} images, resize {SPEC['resize']}, crop {SPEC['crop']}")
    report = {"procs": args.procs, "intra_threads": args.intra_threads, "batch_size": B,
              "resize": SPEC["resize"], "crop": SPEC["crop"],
              "pillow": PIL.__version__, "onnxruntime": ort.__version__}

    # 1-2. Single-process decode+preprocess from bytes already in memory (as labelflow's
    # stage measurement does), plain and with JPEG draft mode.
    # The same images in the same order as labelflow's bench: every file, cycled.
    blobs = [Path(p).read_bytes() for p in paths]
    for key, draft in (("decode_full", False), ("decode_draft", True)):
        t = time.perf_counter()
        for i in range(K):
            preprocess(io.BytesIO(blobs[i % len(blobs)]), draft)
        report[key] = {"images": K, "seconds": time.perf_counter() - t}
        log(f"{key}: {K / report[key]['seconds']:.1f} img/s")

    # 3. Inference only, on one real preprocessed batch; one untimed warm-up call.
    x = np.stack([preprocess(io.BytesIO(blobs[i % len(blobs)])) for i in range(B)])
    infer(session, x, fixed_batch)
    calls = math.ceil(K / B)
    t = time.perf_counter()
    for _ in range(calls):
        infer(session, x, fixed_batch)
    report["inference_only"] = {"images": calls * B, "seconds": time.perf_counter() - t}
    log(f"inference_only: {calls * B / report['inference_only']['seconds']:.1f} img/s")
    del blobs, x

    # 4. End to end: decode in a process pool, infer + softmax + top-k in this process.
    items = [paths[i % len(paths)] for i in range(N)]
    cols = {"uri": [], "label": [], "score": [], "top_k": [], "error": []}
    pending = []  # (uri, tensor) awaiting a full batch

    def flush():
        if not pending:
            return
        out = infer(session, np.stack([t for _, t in pending]), fixed_batch).astype(np.float32)
        if SPEC["logits"]:
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        top = np.argsort(-out, axis=1, kind="stable")[:, :TOP_K]
        for (uri, _), idx, row in zip(pending, top, out):
            cols["uri"].append(uri)
            cols["label"].append(int(idx[0]))
            cols["score"].append(float(row[idx[0]]))
            cols["top_k"].append([int(i) for i in idx])
            cols["error"].append(None)
        pending.clear()

    failed = 0
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    t = time.perf_counter()
    with ctx.Pool(max(1, args.procs)) as pool:
        peak = PeakMemory(pool)
        peak.start()
        for uri, (tensor, err) in zip(items, pool.imap(worker, items, chunksize=8)):
            if err is not None:
                failed += 1
                for k, v in (("uri", uri), ("label", None), ("score", None),
                             ("top_k", None), ("error", err)):
                    cols[k].append(v)
                continue
            pending.append((uri, tensor))
            if len(pending) == B:
                flush()
        flush()
        peak.done.set()
        peak.join()
    schema = pa.schema([("uri", pa.string()), ("label", pa.int32()), ("score", pa.float32()),
                        ("top_k", pa.list_(pa.int32())), ("error", pa.string())])
    os.makedirs(args.output, exist_ok=True)
    pq.write_table(pa.table(cols, schema=schema),
                   os.path.join(args.output, "predictions.parquet"))
    seconds = time.perf_counter() - t
    # Sampled (getrusage's ru_maxrss would carry the launching process's peak over
    # exec and give the largest worker, not the sum).
    report["end_to_end"] = {"images": N, "seconds": seconds, "failed": failed,
                            "peak_rss_mib": round(peak.peak, 1)}
    log(f"end_to_end: {N / seconds:.1f} img/s, {failed} failed")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
