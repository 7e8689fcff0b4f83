#!/usr/bin/env bash
# Time `labelflow query` against DuckDB on the same generated predictions dataset.
#
#   scripts/bench-query.sh [ROWS] [DIR]
#
# ROWS (default 10000000) rows are generated once into DIR (default
# target/bench-predictions/ROWS) by tests/data/make_large_predictions.py. Both engines
# run the shipped sql/class_counts.sql and sql/low_confidence.sql text over the same
# files, with the same `latest` view (plain table for a single run, window otherwise); each query runs 3 times and the best wall time
# counts (labelflow as a process, start-up included; DuckDB in-process, with its
# views created before timing). Needs python with pyarrow, numpy and duckdb
# (PYTHON, default .venv/bin/python) and a release build (LABELFLOW_BIN, default
# target/release/labelflow; built when missing).
set -euo pipefail

cd "$(dirname "$0")/.."
ROWS="${1:-10000000}"
DIR="${2:-target/bench-predictions/$ROWS}"
PYTHON="${PYTHON:-.venv/bin/python}"
BIN="${LABELFLOW_BIN:-target/release/labelflow}"

if [ ! -d "$DIR" ]; then
    "$PYTHON" tests/data/make_large_predictions.py "$ROWS" "$DIR"
fi
if [ ! -x "$BIN" ]; then
    cargo build --release --bin labelflow
fi

"$PYTHON" - "$BIN" "$DIR" "$ROWS" <<'PY'
import os, subprocess, sys, time
import duckdb

bin_, data, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
queries = [("class_counts", {}), ("low_confidence", {"threshold": 0.3})]
threads = os.cpu_count()

def best(f, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out

con = duckdb.connect()
con.execute(f"SET threads = {threads}")
parts = os.path.join(data, "*", "*.parquet").replace("'", "''")
con.execute(f"CREATE VIEW predictions AS SELECT * FROM read_parquet('{parts}', hive_partitioning = true)")
# The same `latest` as labelflow's: with one run folder it is the table itself (a run
# writes each uri once), otherwise the newest row per uri.
runs = [d for d in os.listdir(data) if d.startswith("run_id=")]
if len(runs) == 1:
    con.execute("CREATE VIEW latest AS SELECT * FROM predictions")
else:
    con.execute(
        "CREATE VIEW latest AS SELECT * EXCLUDE (labelflow_rank) FROM ("
        " SELECT *, row_number() OVER (PARTITION BY uri ORDER BY run_id DESC, labelled_at DESC) AS labelflow_rank"
        " FROM predictions) WHERE labelflow_rank = 1"
    )

print(f"{rows} rows at {data}, {threads} threads")
print(f"{'query':<16} {'labelflow s':>12} {'duckdb s':>10} {'ratio':>7}  rows")
for name, params in queries:
    sql = open(f"sql/{name}.sql").read()
    args = [bin_, "query", "--data", data, "--name", name, "--format", "csv"]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    lf, out = best(lambda: subprocess.run(args, check=True, capture_output=True).stdout)
    lf_rows = out.count(b"\n") - 1
    dd, res = best(lambda: con.execute(sql, params).fetchall())
    print(f"{name:<16} {lf:>12.2f} {dd:>10.2f} {lf / dd:>7.2f}  {lf_rows}/{len(res)}")
PY
