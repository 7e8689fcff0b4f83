#!/usr/bin/env bash
# Compare two labelflow builds with `labelflow bench`, alternating them in one series so
# machine noise hits both alike; prints every run and the medians per stage.
#
# Usage: scripts/bench-compare.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [BENCH ARGS...]
#   e.g. scripts/bench-compare.sh /tmp/labelflow-old target/debug/labelflow 3 --images 1000,2000
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 BEFORE AFTER [ROUNDS] [BENCH ARGS...]" >&2; exit 2; }
before="$1"; after="$2"; shift 2
rounds="${1:-3}"; [[ $# -gt 0 ]] && shift
out="$(mktemp -d)"
for ((r = 1; r <= rounds; r++)); do
  for which in before after; do
    bin="$before"; [[ $which == after ]] && bin="$after"
    if ! "$bin" bench --no-progress "$@" >"$out/$which-$r.txt" 2>&1; then
      echo "bench-compare: $which ($bin), round $r failed:" >&2
      cat "$out/$which-$r.txt" >&2
      exit 1
    fi
    echo "== $which, round $r"
    grep -E '^(decode|inference|end-to-end|  end-to-end)' "$out/$which-$r.txt"
  done
done
echo
echo "medians over $rounds rounds, before → after: img/s, and ÷ inference-only of the same run"
grep -hE '^(decode|inference|end-to-end)' "$out"/before-*.txt | grep -v 'bound by' | sed -E 's/  +/\t/g' | cut -f1 | sort -u |
  while read -r name; do
    med() { grep -h "^$name  " "$out"/$1-*.txt | sed -E 's/  +/\t/g' | cut -f"$2" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
    printf '  %-28s %8s → %8s img/s   %5s → %5s\n' "$name" "$(med before 4)" "$(med after 4)" "$(med before 5)" "$(med after 5)"
  done
rm -rf "$out"
