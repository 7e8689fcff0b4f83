#!/usr/bin/env python3
"""Daft and Ray Data on the same images and ONNX model as labelflow's bench.

Usage: peers.py --model M.onnx --input DIR --batch-size B --threads T --output DIR
                [--peers daft,ray] [--device cpu|cuda]

Each peer runs the pipeline its own documentation shows for batch image
classification, end to end from files to Parquet:

- Daft:     download -> decode_image -> resize -> a class UDF holding an onnxruntime
            session (batched) -> write_parquet, on the native runner with T threads;
- Ray Data: read_images(size=...) -> map_batches with a callable class holding the
            session -> write_parquet, on a local cluster given T CPUs explicitly (the
            inference actor takes one, the reads the rest, so they are not starved).

Both resize straight to the model's crop (their documented resize), which is less
work than labelflow's resize-shorter-side + centre crop. The model is fed as it asks:
uint8 RGB [N, S, S, 3] when it normalises in its graph, else the normalised float
tensor. Timing starts once the engine is up (imports, ray.init excluded) and ends
when the Parquet files are written. Prints one JSON object on the last line:
{"daft": {"images", "seconds", "version", "settings"}, "ray": {...}}.
A peer that is not installed is reported as {"error": "..."}; exits 2 only when no
peer could run.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
DEFAULTS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "layout": "nchw", "pixel_range": "unit", "crop": 224}
TOP_K = 5


def log(msg):
    print(f"peers: {msg}", file=sys.stderr, flush=True)


def providers(device):
    if device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_for(model, device, threads=0):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, opts, providers=providers(device))


def feed_of(model):
    """How the model is fed: its crop, whether it takes bytes, its normalisation."""
    s = session_for(model, "cpu")
    meta = s.get_modelmeta().custom_metadata_map
    spec = {**DEFAULTS, **json.loads(meta.get("labelflow.preprocess", "{}"))}
    inp = s.get_inputs()[0]
    spec["bytes"] = inp.type == "tensor(uint8)"
    spec["input"] = inp.name
    return spec


def model_input(images, feed):
    """uint8 [N, S, S, 3] RGB -> what the model takes."""
    x = np.ascontiguousarray(images, dtype=np.uint8)
    if feed["bytes"]:
        return x
    x = x.astype(np.float32)
    if feed["pixel_range"] == "unit":
        x = x / np.float32(255.0)
    x = (x - np.asarray(feed["mean"], np.float32)) / np.asarray(feed["std"], np.float32)
    if feed["layout"] == "nchw":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def top_k(logits):
    """Softmax top-k class indices and scores per row."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    idx = np.argsort(-p, axis=1)[:, :TOP_K]
    return idx, np.take_along_axis(p, idx, axis=1)


def list_images(folder):
    return sorted(str(p) for p in Path(folder).rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def run_daft(args, feed, paths):
    import daft
    from daft import col
    from daft.functions import decode_image, download, resize

    daft.set_runner_native(num_threads=args.threads)
    crop, model, device, intra = feed["crop"], args.model, args.device, args.intra_threads

    @daft.cls
    class Classify:
        def __init__(self):
            self.session = session_for(model, device, intra)

        @daft.method.batch(return_dtype=daft.DataType.list(daft.DataType.int64()),
                           batch_size=args.batch_size)
        def __call__(self, images):
            x = model_input(np.stack(images.to_pylist()), feed)
            (logits,) = self.session.run(None, {feed["input"]: x})
            idx, _ = top_k(logits)
            return idx.tolist()

    uris = ["file://" + os.path.abspath(p) for p in paths]
    t = time.perf_counter()
    df = daft.from_pydict({"uri": uris})
    df = df.with_column("image", decode_image(download(col("uri"), on_error="null"),
                                              on_error="null", mode="RGB"))
    df = df.where(col("image").not_null())
    df = df.with_column("image", resize(col("image"), crop, crop))
    df = df.with_column("top5", Classify()(col("image")))
    df = df.exclude("image")
    written = df.write_parquet(os.path.join(args.output, "daft"))
    seconds = time.perf_counter() - t
    rows = daft.read_parquet(os.path.join(args.output, "daft", "*.parquet")).count_rows()
    del written
    return {"images": rows, "seconds": seconds, "version": daft.__version__,
            "settings": f"native runner, {args.threads} threads, batch {args.batch_size}"}


def run_ray(args, feed, paths):
    import ray

    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        crop, model, device, intra = feed["crop"], args.model, args.device, args.intra_threads

        class Classify:
            def __init__(self):
                self.session = session_for(model, device, intra)

            def __call__(self, batch):
                x = model_input(batch["image"], feed)
                (logits,) = self.session.run(None, {feed["input"]: x})
                idx, score = top_k(logits)
                return {"path": batch["path"], "top5": idx, "score": score[:, 0]}

        gpus = 1 if device.startswith("cuda") else 0
        t = time.perf_counter()
        ds = ray.data.read_images(paths, size=(crop, crop), mode="RGB", include_paths=True,
                                  ignore_missing_paths=True)
        ds = ds.map_batches(Classify, batch_size=args.batch_size, batch_format="numpy",
                            concurrency=1, num_cpus=1 if not gpus else 0, num_gpus=gpus)
        out = os.path.join(args.output, "ray")
        ds.write_parquet(out)
        seconds = time.perf_counter() - t
        rows = ray.data.read_parquet(out).count()
        return {"images": rows, "seconds": seconds, "version": ray.__version__,
                "settings": f"local cluster, num_cpus={args.threads}, one inference actor "
                            f"(num_cpus={0 if gpus else 1}, num_gpus={gpus}), batch {args.batch_size}"}
    finally:
        ray.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--intra-threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--peers", default="daft,ray")
    ap.add_argument("--output", required=True)
    args = ap.parse_args()
    os.makedirs(args.output, exist_ok=True)

    feed = feed_of(args.model)
    paths = list_images(args.input)
    if not paths:
        log(f"no images in {args.input}")
        sys.exit(2)
    log(f"{len(paths)} images, crop {feed['crop']}, {'uint8' if feed['bytes'] else 'float32'} input")
    report = {"onnxruntime": ort.__version__}
    ran = 0
    for name in [p.strip() for p in args.peers.split(",") if p.strip()]:
        fn = {"daft": run_daft, "ray": run_ray}.get(name)
        if fn is None:
            report[name] = {"error": f"unknown peer {name!r} (daft, ray)"}
            continue
        try:
            report[name] = fn(args, feed, paths)
            ran += 1
            r = report[name]
            log(f"{name} {r['version']}: {r['images']} images in {r['seconds']:.2f} s "
                f"({r['images'] / max(r['seconds'], 1e-9):.1f} img/s)")
        except ImportError as e:
            report[name] = {"error": f"{name} is not installed ({e}); "
                                     "scripts/setup-peers.sh installs it"}
            log(report[name]["error"])
        except Exception as e:  # noqa: BLE001 - one peer failing does not end the bench
            report[name] = {"error": f"{name} failed: {type(e).__name__}: {e}"}
            log(report[name]["error"])
    print(json.dumps(report))
    sys.exit(0 if ran else 2)


if __name__ == "__main__":
    main()
