#!/usr/bin/env bash
# Two threads over one, round by round: each round runs a work at one thread and at two back
# to back (the order alternating between rounds), so both sides of a ratio share the minute
# on a machine whose speed drifts; prints each run's fastest step and the round's ratio, then
# the median ratio per work, and the ratio of the fastest 1-thread run to the fastest 2-thread
# run over all rounds (what the machine's neighbours disturbed least).
#
#   bench/speedup.sh [--bin PATH] [--rounds 5] [--works "teacher16 distill16 teacher32 distill32"]
#
# Steps per run: 30 (16×16 works, toy), 10 (teacher32), 9 (distill32: whole K + 1 cycles).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""; rounds=5; works="teacher16 distill16 teacher32 distill32"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --works) works="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release -q -p fdistill-bench
  bin=target/release/fdistill-bench
fi
fastest() { grep -o '"ms_min":[0-9.]*' | cut -d: -f2; }
declare -A ratios best1 best2
for i in $(seq "$rounds"); do
  for w in $works; do
    case $w in teacher32) s=10 ;; distill32) s=9 ;; *) s=30 ;; esac
    if [ $((i % 2)) = 1 ]; then
      a=$("$bin" "$w" --threads 1 --steps $s | fastest); b=$("$bin" "$w" --threads 2 --steps $s | fastest)
    else
      b=$("$bin" "$w" --threads 2 --steps $s | fastest); a=$("$bin" "$w" --threads 1 --steps $s | fastest)
    fi
    r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')
    ratios[$w]="${ratios[$w]:-} $r"
    best1[$w]=$(awk -v a="$a" -v m="${best1[$w]:-}" 'BEGIN { print (m == "" || a < m) ? a : m }')
    best2[$w]=$(awk -v b="$b" -v m="${best2[$w]:-}" 'BEGIN { print (m == "" || b < m) ? b : m }')
    echo "round $i  $w  1 thread ${a} ms  2 threads ${b} ms  ratio ${r}"
  done
done
echo
for w in $works; do
  med=$(echo "${ratios[$w]}" | tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
  echo "$w: 2 threads over 1, median of $rounds rounds: ${med}x (rounds:${ratios[$w]})"
  echo "$w: fastest runs: 1 thread ${best1[$w]} ms, 2 threads ${best2[$w]} ms, ratio $(awk -v a="${best1[$w]}" -v b="${best2[$w]}" 'BEGIN { printf "%.3f", a / b }')x"
done
