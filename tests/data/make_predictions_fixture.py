#!/usr/bin/env python3
"""Write the small predictions fixture the SQL tests run against.

    python tests/data/make_predictions_fixture.py [OUTDIR]

OUTDIR defaults to tests/data (beside this script). It writes

    OUTDIR/predictions/run_id=<RUN>/part-*.parquet   two runs, three part files
    OUTDIR/predictions/run_id=<RUN>/part-00002.parquet#1   a staging file (not data)
    OUTDIR/predictions/_runs/<RUN>.json              run summaries (not data)
    OUTDIR/truth.csv                                 human labels (uri,label)

with exactly the predictions schema of src/schema.rs. The output is deterministic:
rerunning the script rewrites the same rows. The rows are chosen by hand so that the
expected results in sql/expected/ can be checked by reading the table below:

- run A (older model) labels 20 images, run B (newer model) 18 of them; for
  fish/f03.jpg and misc02.jpg the newest row is therefore run A's;
- errors: a decode error in both runs, a decode error only in A (fixed in B), a fetch
  error only in B;
- misc02.jpg is a dog whose top-5 does not contain "dog" (a top-5 miss);
- dogs/d06.jpg has no human label in truth.csv.
"""

import hashlib
import json
import os
import shutil
import sys
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq

CLASSES = ["cat", "dog", "bird", "fish", "horse", "fox"]
BUCKET = "s3://pets-bucket/"

RUN_A = "20261127T213000Z-ab12cd"
RUN_B = "20261201T090000Z-ef34aa"
MODEL_A = "alexnet-imagenet"
MODEL_B = "alexnet-pets-ft"

# key, human label (None: not in truth.csv), run A, run B.
# A prediction is (top-1 label, score, second label, score, [label absent from top-5]),
# an error string, or None when the run did not see the image.
IMAGES = [
    ("cats/indoor/c01.jpg", "cat", ("cat", 0.91, "dog", 0.05), ("cat", 0.95, "fox", 0.02)),
    ("cats/indoor/c02.jpg", "cat", ("dog", 0.45, "cat", 0.40), ("cat", 0.62, "dog", 0.30)),
    ("cats/indoor/c03.jpg", "cat", ("cat", 0.28, "fox", 0.25), ("cat", 0.29, "fox", 0.27)),
    ("cats/outdoor/c04.jpg", "cat", ("fox", 0.55, "cat", 0.30), ("fox", 0.51, "cat", 0.44)),
    ("cats/outdoor/c05.jpg", "cat", ("cat", 0.88, "dog", 0.06), "fetch: connection reset after 10 retries"),
    ("dogs/d01.jpg", "dog", ("dog", 0.97, "cat", 0.01), ("dog", 0.98, "fox", 0.01)),
    ("dogs/d02.jpg", "dog", ("dog", 0.70, "fox", 0.20), ("dog", 0.81, "fox", 0.10)),
    ("dogs/d03.jpg", "dog", ("cat", 0.50, "dog", 0.35), ("dog", 0.55, "cat", 0.40)),
    ("dogs/d04.jpg", "dog", ("dog", 0.33, "horse", 0.30), ("horse", 0.36, "dog", 0.34)),
    ("dogs/d05.jpg", "dog", "decode: truncated JPEG data", "decode: truncated JPEG data"),
    ("dogs/d06.jpg", None, ("dog", 0.76, "cat", 0.12), ("dog", 0.79, "cat", 0.11)),
    ("birds/b01.jpg", "bird", ("bird", 0.93, "fish", 0.03), ("bird", 0.96, "fish", 0.02)),
    ("birds/b02.jpg", "bird", ("bird", 0.60, "fox", 0.20), ("bird", 0.66, "cat", 0.15)),
    ("birds/b03.jpg", "bird", ("fish", 0.40, "bird", 0.38), ("bird", 0.47, "fish", 0.45)),
    ("birds/b04.png", "bird", "decode: unsupported PNG color type 7", ("bird", 0.25, "fish", 0.22)),
    ("fish/f01.jpg", "fish", ("fish", 0.99, "bird", 0.005), ("fish", 0.99, "bird", 0.004)),
    ("fish/f02.jpg", "fish", ("fish", 0.52, "bird", 0.31), ("bird", 0.49, "fish", 0.41)),
    ("fish/f03.jpg", "fish", ("fish", 0.21, "horse", 0.19), None),
    ("misc01.jpg", "horse", ("horse", 0.85, "dog", 0.08), ("horse", 0.90, "dog", 0.05)),
    ("misc02.jpg", "dog", ("fox", 0.35, "cat", 0.30, "dog"), None),
]

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

# Exactly src/schema.rs::predictions().
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


def top_k(pred):
    """Five (label, index, score) entries, best first: the two named ones, then three
    of the other classes (leaving out the absent class, or the last one) with part of
    the remaining probability mass, each below the second score."""
    first, s1, second, s2 = pred[:4]
    absent = pred[4] if len(pred) > 4 else None
    rest = [c for c in CLASSES if c not in (first, second, absent)]
    if absent is None:
        rest = rest[:3]
    residual = 1.0 - s1 - s2
    entries = [(first, s1), (second, s2)]
    shares = ((0.4, 0.8), (0.3, 0.6), (0.2, 0.4))
    entries += [(c, round(min(residual * w, s2 * f), 4)) for c, (w, f) in zip(rest, shares)]
    scores = [s for _, s in entries]
    assert scores == sorted(scores, reverse=True), (pred, entries)
    assert len(entries) == 5
    return [{"label": c, "index": CLASSES.index(c), "score": s} for c, s in entries]


def row(i, key, pred, run, model, labelled_at):
    uri = BUCKET + key
    base = {
        "uri": uri,
        "key": key,
        "etag": hashlib.md5(key.encode()).hexdigest(),
        "version": None,
        "size_bytes": 20_000 + 1_337 * i,
        "last_modified": datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc) + timedelta(minutes=i),
        "model": model,
        "model_sha256": hashlib.sha256(model.encode()).hexdigest(),
        "labelled_at": labelled_at + timedelta(seconds=i),
    }
    if isinstance(pred, str):
        base.update(width=None, height=None, label=None, label_index=None, score=None, top_k=None, error=pred)
    else:
        base.update(
            width=640 + 16 * (i % 5),
            height=480,
            label=pred[0],
            label_index=CLASSES.index(pred[0]),
            score=pred[1],
            top_k=top_k(pred),
            error=None,
        )
    return base


def write(rows, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, path, compression="zstd", use_compliant_nested_type=False)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    root = os.path.join(out, "predictions")
    shutil.rmtree(root, ignore_errors=True)

    at_a = datetime(2026, 11, 27, 21, 30, tzinfo=timezone.utc)
    at_b = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    rows_a, rows_b = [], []
    for i, (key, _, a, b) in enumerate(IMAGES):
        if a is not None:
            rows_a.append(row(i, key, a, RUN_A, MODEL_A, at_a))
        if b is not None:
            rows_b.append(row(i, key, b, RUN_B, MODEL_B, at_b))

    dir_a = os.path.join(root, f"run_id={RUN_A}")
    dir_b = os.path.join(root, f"run_id={RUN_B}")
    write(rows_a, os.path.join(dir_a, "part-00000.parquet"))
    write(rows_b[:9], os.path.join(dir_b, "part-00000.parquet"))
    write(rows_b[9:], os.path.join(dir_b, "part-00001.parquet"))

    # Not data: a part still being written (relabels c03 as a confident fox; if a
    # reader picked it up, class counts and the latest view would change) ...
    staging = dict(rows_b[2])
    staging.update(label="fox", label_index=CLASSES.index("fox"), score=0.99, labelled_at=at_b + timedelta(days=1))
    write([staging], os.path.join(dir_b, "part-00002.parquet#1"))
    # ... and the run summaries.
    os.makedirs(os.path.join(root, "_runs"), exist_ok=True)
    for run, rows, model in ((RUN_A, rows_a, MODEL_A), (RUN_B, rows_b, MODEL_B)):
        summary = {
            "run_id": run,
            "model": model,
            "images": len(rows),
            "errors": sum(r["error"] is not None for r in rows),
        }
        with open(os.path.join(root, "_runs", f"{run}.json"), "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
            f.write("\n")

    with open(os.path.join(out, "truth.csv"), "w") as f:
        f.write("uri,label\n")
        for key, truth, _, _ in IMAGES:
            if truth is not None:
                f.write(f"{BUCKET}{key},{truth}\n")


if __name__ == "__main__":
    main()
