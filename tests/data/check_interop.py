#!/usr/bin/env python3
"""Read a labelflow predictions dataset with DuckDB, pyarrow and polars.

Usage: check_interop.py DATASET_DIR

Prints one JSON object: for each reader, the row count, the column types (as that
reader names them), the number of error rows and the per-label counts of the rows
without an error. The Rust interop test compares these with `labelflow query`.
"""
import json
import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as ds


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    pattern = str(root / "**" / "*.parquet")
    out = {}

    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)")
    out["duckdb"] = {
        "rows": con.sql(f"SELECT count(*) FROM read_parquet('{pattern}', hive_partitioning = true)").fetchall()[0][0],
        "columns": {n: str(t) for n, t in zip(rel.columns, rel.types)},
        "errors": con.sql(f"SELECT count(*) FROM read_parquet('{pattern}', hive_partitioning = true) WHERE error IS NOT NULL").fetchall()[0][0],
        "labels": dict(con.sql(
            f"SELECT label, count(*) FROM read_parquet('{pattern}', hive_partitioning = true) "
            "WHERE error IS NULL GROUP BY label").fetchall()),
    }

    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    labels = {}
    for label, err in zip(table.column("label").to_pylist(), table.column("error").to_pylist()):
        if err is None:
            labels[label] = labels.get(label, 0) + 1
    out["pyarrow"] = {
        "rows": table.num_rows,
        "columns": {f.name: str(f.type) for f in table.schema},
        "errors": sum(e is not None for e in table.column("error").to_pylist()),
        "labels": labels,
    }

    frame = pl.scan_parquet(pattern, hive_partitioning=True).collect()
    counts = frame.filter(pl.col("error").is_null()).group_by("label").len()
    out["polars"] = {
        "rows": frame.height,
        "columns": {n: str(t) for n, t in frame.schema.items()},
        "errors": frame.filter(pl.col("error").is_not_null()).height,
        "labels": {r[0]: r[1] for r in counts.iter_rows()},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
