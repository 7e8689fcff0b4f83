#!/usr/bin/env bash
# Listing at scale: keys per second and resident memory while `labelflow bench
# --listing` streams a large listing, from a local tree and from the S3 server.
#
#   scripts/bench-listing.sh [LOCAL_KEYS] [S3_KEYS]
#
# LOCAL_KEYS (default 1000000) empty files are made once under
# target/bench-listing/local-LOCAL_KEYS (1000 per folder); S3_KEYS (default 100000)
# empty objects are put into a bucket of a fresh S3 server (moto, started by
# scripts/with-servers.py --only s3). 0 skips that part. Listing reads every key
# (no extension filter), page by page; the report prints keys/s, peak RSS and RSS
# sampled every 50 000 keys (flat = streamed); for S3 it then times boto3 listing the
# same bucket (the server's own pace). Needs .venv (scripts/test.sh makes
# it) and a labelflow binary (LABELFLOW_BIN, default target/release/labelflow,
# built when missing).
set -euo pipefail

cd "$(dirname "$0")/.."
LOCAL_KEYS="${1:-1000000}"
S3_KEYS="${2:-100000}"
PYTHON="${PYTHON:-.venv/bin/python}"
BIN="${LABELFLOW_BIN:-target/release/labelflow}"

if [ ! -x "$BIN" ]; then
    cargo build --release --bin labelflow
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); binary: $BIN"

if [ "$LOCAL_KEYS" -gt 0 ]; then
    tree="target/bench-listing/local-$LOCAL_KEYS"
    if [ ! -f "$tree/.complete" ]; then
        echo "making $LOCAL_KEYS empty files under $tree"
        rm -rf "$tree"
        "$PYTHON" - "$tree" "$LOCAL_KEYS" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:05d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    os.close(os.open(os.path.join(d, f"img{i:08d}.jpg"), os.O_CREAT | os.O_WRONLY, 0o644))
open(os.path.join(root, ".complete"), "w").close()
PY
    fi
    "$BIN" --no-progress bench --listing -i "$tree"
fi

if [ "$S3_KEYS" -gt 0 ]; then
    "$PYTHON" scripts/with-servers.py --only s3 bash -c '
        set -euo pipefail
        echo "putting '"$S3_KEYS"' empty objects into s3://listing on $LABELFLOW_TEST_S3_ENDPOINT"
        "'"$PYTHON"'" - "$LABELFLOW_TEST_S3_ENDPOINT" '"$S3_KEYS"' <<'"'"'PY'"'"'
import sys
from concurrent.futures import ThreadPoolExecutor
import boto3, botocore.config
endpoint, n = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=endpoint,
                  config=botocore.config.Config(max_pool_connections=32))
s3.create_bucket(Bucket="listing")
def put(i):
    s3.put_object(Bucket="listing", Key=f"photos/d{i // 1000:04d}/img{i:08d}.jpg", Body=b"")
with ThreadPoolExecutor(16) as pool:
    for _ in pool.map(put, range(n), chunksize=256):
        pass
PY
        AWS_ENDPOINT="$LABELFLOW_TEST_S3_ENDPOINT" "'"$BIN"'" --no-progress bench --listing -i s3://listing/photos/
        # The same listing by boto3 (the AWS SDK for Python), page by page: how fast
        # the server itself answers.
        "'"$PYTHON"'" - "$LABELFLOW_TEST_S3_ENDPOINT" <<'"'"'PY'"'"'
import sys, time
import boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
t = time.perf_counter()
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="listing", Prefix="photos/"):
    n += len(page.get("Contents", []))
dt = time.perf_counter() - t
print(f"boto3 list_objects_v2 paginator: {n} keys in {dt:.2f} s = {n / dt:.0f} keys/s")
PY
    '
fi
