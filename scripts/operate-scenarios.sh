#!/usr/bin/env bash
# The job run the way it is run in production, with one binary, on local folders: each
# scenario's rows written, distinct uris, duplicates and exit codes, as one table.
#
# Usage: scripts/operate-scenarios.sh [BIN] [IMAGES]
#   BIN     the labelflow binary (default: target/release/labelflow)
#   IMAGES  images in the two-worker scenarios (default: 800)
#
# Scenarios:
#   two workers    the same command twice, one second apart (a duplicate pod, a cron
#                  that fires twice), then a third time after both ended
#   rerun          a finished run over 200 images; 20 added and 1 replaced by another
#                  picture; the same command again; then --relabel-all
#   kill -9        the holder killed mid-run; the same command with --wait takes the
#                  lease over once its TTL (5 s here) has passed and continues the run
#   SIGSTOP        the holder paused past the TTL while a second worker takes over;
#                  then resumed: it must notice the lost lease and write nothing more
#
# Needs: ONNX Runtime found by the binary (ORT_DYLIB_PATH, as after scripts/setup-ort.sh)
# and the fixture photos of tests/data/photos. Everything lives in a temporary folder.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$REPO/target/release/labelflow}"
N="${2:-800}"
[[ -x "$BIN" ]] || { echo "operate-scenarios.sh: no binary at $BIN (cargo build --release)" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
MODEL="$WORK/model.onnx"
# A small AlexNet (a quarter of the channels), ten views an image: quick, yet slow
# enough that the signals land mid-run.
"$BIN" model init --out "$MODEL" --classes 10 --width 0.25 --seed 7 >/dev/null

photos=()
while IFS= read -r f; do photos+=("$f"); done < <(find "$REPO/tests/data/photos" -type f -name '*.jpg' | sort)
(( ${#photos[@]} > 1 )) || { echo "operate-scenarios.sh: no fixture photos" >&2; exit 2; }

# make_images DIR COUNT: COUNT distinct objects (fixture photos under distinct names).
make_images() {
  mkdir -p "$1"
  for ((i = 0; i < $2; i++)); do
    cp "${photos[i % ${#photos[@]}]}" "$1/img-$(printf %04d "$i").jpg"
  done
}

# job IN OUT [FLAGS...]: the run command, in the array `cmd` (started in the background
# as "$BIN" "${cmd[@]}" & so that $! is labelflow's own pid, for the signals).
job() {
  local in="$1" out="$2"
  shift 2
  cmd=(run --input "$in" --output "$out" --model "$MODEL" --tta 10crop --batch-size 20
    --decode-threads 1 --fetch-concurrency 4 --intra-threads 1 --rows-per-part 40 "$@")
}
run() { job "$@"; "$BIN" "${cmd[@]}"; }

# counts OUT: "rows unique duplicates latest" over every run in OUT. A duplicate is a
# second row of the same version of an object (same uri, etag, size and time); a
# replaced object's new row is not one. `latest` should hold one row per uri.
counts() {
  "$BIN" query --data "$1" --format csv \
    "SELECT count(*) AS n, count(DISTINCT uri) AS u, \
            count(*) - count(DISTINCT concat(uri, '|', coalesce(etag, ''), '|', size_bytes, '|', last_modified)) AS d, \
            (SELECT count(*) FROM latest) AS l \
     FROM predictions" \
    | tail -n1 | tr ',' ' '
}

labelled() { # labelled OUT: rows written per the JSON summary on stdin's file
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["rows_written"], s.get("skipped_unchanged", "-"))' "$1"
}

table=()
row() { table+=("$(printf '| %s | %s | %s | %s | %s | %s | %s |' "$@")"); }

# --- two workers, then a third run ------------------------------------------------
in="$WORK/two/in"; out="$WORK/two/out"
make_images "$in" "$N"
set +e
job "$in" "$out" --json
"$BIN" "${cmd[@]}" >"$WORK/a.json" 2>"$WORK/a.err" &
a=$!
sleep 1
run "$in" "$out" --json >"$WORK/b.json" 2>"$WORK/b.err"
b_code=$?
wait "$a"; a_code=$?
read -r n u d l < <(counts "$out")
row "two workers, same command, 1 s apart" "$N" "$n" "$u" "$d" "$l" "$a_code and $b_code"
run "$in" "$out" --json >"$WORK/c.json" 2>"$WORK/c.err"; c_code=$?
set -e
read -r n u d l < <(counts "$out")
read -r w s < <(labelled "$WORK/c.json")
row "the same command a third time ($w labelled, $s skipped unchanged)" "$N" "$n" "$u" "$d" "$l" "$c_code"

# --- rerun over a grown bucket ----------------------------------------------------
in="$WORK/grow/in"; out="$WORK/grow/out"
make_images "$in" 200
run "$in" "$out" >/dev/null 2>&1
for ((i = 200; i < 220; i++)); do cp "${photos[i % ${#photos[@]}]}" "$in/img-$i.jpg"; done
cp "${photos[1]}" "$in/img-0007.jpg.new" && mv "$in/img-0007.jpg.new" "$in/img-0007.jpg"
if cmp -s "${photos[1]}" "${photos[7 % ${#photos[@]}]}"; then cp "${photos[2]}" "$in/img-0007.jpg"; fi
set +e
run "$in" "$out" --json >"$WORK/g.json" 2>"$WORK/g.err"; g_code=$?
set -e
read -r w s < <(labelled "$WORK/g.json")
read -r n u d l < <(counts "$out")
row "rerun after +20 images and 1 replaced ($w labelled, $s skipped unchanged)" 220 "$n" "$u" "$d" "$l" "$g_code"
set +e
run "$in" "$out" --json --relabel-all >"$WORK/r.json" 2>"$WORK/r.err"; r_code=$?
set -e
read -r w s < <(labelled "$WORK/r.json")
read -r n u d l < <(counts "$out")
row "the same with --relabel-all ($w labelled, asked for)" 220 "$n" "$u" "$d" "$l" "$r_code"

# --- kill -9 of the holder, then --wait takes over --------------------------------
in="$WORK/kill/in"; out="$WORK/kill/out"
make_images "$in" "$N"
job "$in" "$out" --lease-ttl 5
"$BIN" "${cmd[@]}" >/dev/null 2>"$WORK/k1.err" &
k=$!
until compgen -G "$out/run_id=*/*.parquet" >/dev/null; do sleep 0.2; done
kill -9 "$k"; wait "$k" 2>/dev/null || true
set +e
# Same host: the lease of a dead pid is taken at once; from another host it waits for
# the TTL. Both paths continue the same run.
run "$in" "$out" --lease-ttl 5 --wait --json >"$WORK/k2.json" 2>"$WORK/k2.err"; k_code=$?
set -e
read -r n u d l < <(counts "$out")
row "holder killed (kill -9) mid-run, the same command with --wait" "$N" "$n" "$u" "$d" "$l" "137 and $k_code"

# --- SIGSTOP past the TTL, a taker, then SIGCONT ----------------------------------
in="$WORK/stop/in"; out="$WORK/stop/out"
make_images "$in" "$N"
job "$in" "$out" --lease-ttl 2
"$BIN" "${cmd[@]}" >/dev/null 2>"$WORK/s1.err" &
p=$!
until compgen -G "$out/run_id=*/*.parquet" >/dev/null; do sleep 0.2; done
kill -STOP "$p"
sleep 3
set +e
run "$in" "$out" --lease-ttl 2 --wait --json >"$WORK/s2.json" 2>"$WORK/s2.err"; t_code=$?
kill -CONT "$p"
wait "$p"; p_code=$?
set -e
read -r n u d l < <(counts "$out")
row "holder paused (SIGSTOP) past its TTL, taken over, then resumed" "$N" "$n" "$u" "$d" "$l" "$p_code (paused) and $t_code"

echo "| scenario | objects | rows written | unique uris | duplicates | rows in latest | exit codes |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${table[@]}"
echo
echo "binary: $BIN ($("$BIN" --version 2>/dev/null || echo labelflow)); $(nproc) cores"
