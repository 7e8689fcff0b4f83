#!/usr/bin/env python3
"""Generate a large predictions dataset for timing queries (not a test fixture).

    python tests/data/make_large_predictions.py N OUTDIR [FILES] [RUNS]

writes N rows with the predictions schema (src/schema.rs) as FILES part files
(default 10) under OUTDIR/run_id=<RUN>/, 1000 classes, ~0.5% error rows, scores
spread so that a few percent fall below 0.3. With RUNS > 1 (default 1) the N rows are
split evenly over RUNS run folders whose uris overlap: run r labels the images
[r·N/(2·RUNS), r·N/(2·RUNS) + N/RUNS), so each later run relabels half of the
previous one's images and adds as many new ones (what `latest` has to resolve).
Deterministic for given N, FILES and RUNS. 10M rows take about a minute and ~1 GB.
"""

import hashlib
import os
import sys
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RUN = "20261201T090000Z-bench0"
MODEL = "alexnet-imagenet"
CLASSES = np.array([f"class_{i:04d}" for i in range(1000)], dtype=object)

TOP_K_ITEM = pa.field(
    "item",
    pa.struct(
        [
            pa.field("label", pa.string(), nullable=False),
            pa.field("index", pa.int32(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
        ]
    ),
    nullable=False,
)
TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("etag", pa.string()),
        pa.field("version", pa.string()),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("last_modified", TS),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("label", pa.string()),
        pa.field("label_index", pa.int32()),
        pa.field("score", pa.float32()),
        pa.field("top_k", pa.list_(TOP_K_ITEM)),
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_sha256", pa.string(), nullable=False),
        pa.field("labelled_at", TS, nullable=False),
        pa.field("error", pa.string()),
    ]
)


def part(start, n, rng, run=0):
    ids = np.arange(start, start + n)
    keys = [f"dir_{i % 997:03d}/img_{i:09d}.jpg" for i in ids]
    failed = rng.random(n) < 0.005
    ok = ~failed

    # Top-5 class indices (distinct per row) and decreasing scores.
    idx = rng.integers(0, 1000, size=(n, 5), dtype=np.int32)
    for j in range(1, 5):
        idx[:, j] = (idx[:, 0] + 1 + j * 7 + rng.integers(0, 100, size=n)) % 1000
    idx[:, 1:] = np.where(idx[:, 1:] == idx[:, :1], (idx[:, 1:] + 500) % 1000, idx[:, 1:])
    top1 = rng.beta(5, 2, size=n).astype(np.float32)
    rest = (1.0 - top1)[:, None] * np.array([0.5, 0.25, 0.15, 0.1], dtype=np.float32)
    scores = np.concatenate([top1[:, None], np.minimum(rest, top1[:, None])], axis=1)

    flat_idx = idx.reshape(-1)
    values = pa.StructArray.from_arrays(
        [
            pa.array(CLASSES[flat_idx], type=pa.string()),
            pa.array(flat_idx, type=pa.int32()),
            pa.array(scores.reshape(-1).astype(np.float32), type=pa.float32()),
        ],
        fields=list(TOP_K_ITEM.type),
    )
    offsets = pa.array(np.arange(0, 5 * n + 1, 5, dtype=np.int32))
    top_k = pa.ListArray.from_arrays(offsets, values, type=SCHEMA.field("top_k").type, mask=pa.array(failed))

    def masked(values, typ):
        return pa.array(values, type=typ, mask=failed)

    labelled_at = (np.datetime64("2026-12-01T09:00:00", "us") + np.timedelta64(run, "D")
                   + (ids * 3_000).astype("timedelta64[us]"))
    columns = {
        "uri": pa.array(["s3://bench-bucket/" + k for k in keys], type=pa.string()),
        "key": pa.array(keys, type=pa.string()),
        "etag": pa.array([f"{i:032x}" for i in ids], type=pa.string()),
        "version": pa.nulls(n, type=pa.string()),
        "size_bytes": pa.array(50_000 + (ids * 7919) % 400_000, type=pa.int64()),
        "last_modified": pa.array(np.full(n, np.datetime64("2026-11-01T00:00:00", "us")), type=TS),
        "width": masked(np.full(n, 640, dtype=np.int32), pa.int32()),
        "height": masked(np.full(n, 480, dtype=np.int32), pa.int32()),
        "label": masked(CLASSES[idx[:, 0]], pa.string()),
        "label_index": masked(idx[:, 0], pa.int32()),
        "score": masked(top1, pa.float32()),
        "top_k": top_k,
        "model": pa.array(np.full(n, MODEL, dtype=object), type=pa.string()),
        "model_sha256": pa.array(np.full(n, hashlib.sha256(MODEL.encode()).hexdigest(), dtype=object), type=pa.string()),
        "labelled_at": pa.array(labelled_at, type=TS),
        "error": pa.array(np.where(failed, "decode: truncated JPEG data", None), type=pa.string()),
    }
    assert ok.sum() + failed.sum() == n
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    total = int(sys.argv[1])
    out = sys.argv[2]
    files = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    per_run = -(-total // runs)
    written = 0
    for r in range(runs):
        run_id = RUN if runs == 1 else f"2026120{1 + r}T090000Z-bench{r}"
        folder = os.path.join(out, f"run_id={run_id}")
        os.makedirs(folder, exist_ok=True)
        rows = min(per_run, total - written)
        first = r * per_run // 2
        per_file = -(-rows // files)
        done = 0
        for f in range(files):
            n = min(per_file, rows - done)
            if n <= 0:
                break
            rng = np.random.default_rng(r * 1000 + f)
            table = part(first + done, n, rng, r)
            pq.write_table(
                table,
                os.path.join(folder, f"part-{f:05d}.parquet"),
                compression="zstd",
                row_group_size=128 * 1024,
                use_compliant_nested_type=False,
            )
            done += n
            print(f"{folder}/part-{f:05d}.parquet: {n} rows", file=sys.stderr)
        written += done
    print(f"{written} rows in {runs} run(s) at {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
