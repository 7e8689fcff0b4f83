#!/usr/bin/env bash
# Time `labelflow query` against DuckDB on the same generated predictions dataset.
#
#   scripts/bench-query.sh [ROWS] [RUNS] [DIR]
#
# ROWS (default 10000000) rows in RUNS runs (default 1; with more, each run relabels
# half of the previous one's images) are generated once into DIR (default
# target/bench-predictions/ROWS-RUNS) by tests/data/make_large_predictions.py. Both engines
# run the shipped sql/class_counts.sql and sql/low_confidence.sql text over the same
# files. `latest` means the same rows in both: the table itself for a single run;
# otherwise the newest run's row per uri — labelflow's view, and for DuckDB both the
# row_number() window and the aggregate-and-join form, the faster one counting. Each query runs 3 times and the best wall time
# counts (labelflow as a process, start-up included; DuckDB in-process, with its
# views created before timing). Needs python with pyarrow, numpy and duckdb
# (PYTHON, default .venv/bin/python) and a release build (LABELFLOW_BIN, default
# target/release/labelflow; built when missing).
set -euo pipefail

cd "$(dirname "$0")/.."
ROWS="${1:-10000000}"
RUNS="${2:-1}"
DIR="${3:-target/bench-predictions/$ROWS-$RUNS}"
PYTHON="${PYTHON:-.venv/bin/python}"
BIN="${LABELFLOW_BIN:-target/release/labelflow}"

if [ ! -d "$DIR" ]; then
    "$PYTHON" tests/data/make_large_predictions.py "$ROWS" "$DIR" 10 "$RUNS"
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
# The same `latest` rows as labelflow's: with one run folder the table itself (a run
# writes each uri once), otherwise the newest run's row per uri, in two forms.
runs = [d for d in os.listdir(data) if d.startswith("run_id=")]
if len(runs) == 1:
    latest_forms = {"table": "SELECT * FROM predictions"}
else:
    latest_forms = {
        "window": "SELECT * EXCLUDE (labelflow_rank) FROM ("
        " SELECT *, row_number() OVER (PARTITION BY uri ORDER BY run_id DESC, labelled_at DESC) AS labelflow_rank"
        " FROM predictions) WHERE labelflow_rank = 1",
        "join": "SELECT p.* FROM predictions p JOIN ("
        " SELECT uri, max(run_id) AS newest FROM predictions GROUP BY uri) n"
        " ON p.uri = n.uri AND p.run_id = n.newest",
    }

print(f"{rows} rows in {len(runs)} run(s) at {data}, {threads} threads")
print(f"{'query':<16} {'labelflow s':>12} {'duckdb s':>10} {'ratio':>7}  rows  (duckdb's latest)")
for name, params in queries:
    sql = open(f"sql/{name}.sql").read()
    args = [bin_, "query", "--data", data, "--name", name, "--format", "csv"]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    lf, out = best(lambda: subprocess.run(args, check=True, capture_output=True).stdout)
    lf_rows = out.count(b"\n") - 1
    timed = []
    for form, view in latest_forms.items():
        con.execute(f"CREATE OR REPLACE VIEW latest AS {view}")
        dd, res = best(lambda: con.execute(sql, params).fetchall())
        timed.append((dd, form, res))
    dd, form, res = min(timed, key=lambda t: t[0])
    print(f"{name:<16} {lf:>12.2f} {dd:>10.2f} {lf / dd:>7.2f}  {lf_rows}/{len(res)}  ({form})")
PY
