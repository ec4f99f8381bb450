#!/usr/bin/env bash
# Side-by-side speed of fdistill (Rust, bench/src/main.rs) and its PyTorch twin
# (bench/torch_twin.py): alternated runs A B A B …, medians of the pairs, per thread count.
#
#   bench/run.sh [--works "toy teacher16 …"] [--threads "1 2"] [--pairs 3] [--cuda]
#
# Prints ms/step of each side, their ratio (fdistill / PyTorch: < 1 means fdistill is faster),
# peak resident memory of each process (/usr/bin/time -v) and the 2-thread/1-thread speed-ups.
# PyTorch is optional: set PYTHON to an interpreter with torch and numpy (default: python3);
# without them the Rust numbers print alone. Before timing, the twin checks every parameter
# name and shape (and the forward outputs) against the networks the Rust side exports.
# Environment: PYTHON, FDISTILL_BENCH_BIN (a prebuilt fdistill-bench), STEPS_<work> (e.g.
# STEPS_toy=600) to change a work's timed steps.
set -euo pipefail
cd "$(dirname "$0")/.."

works="toy teacher16 teacher32 distill16 distill32 sample16-1 sample16-heun35"
threads="1 2"
pairs=3
cuda=""
while [ $# -gt 0 ]; do
  case "$1" in
    --works) works="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --pairs) pairs="$2"; shift 2 ;;
    --cuda) cuda=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (Debian: apt-get install time)" >&2; exit 2; }

bin="${FDISTILL_BENCH_BIN:-}"
if [ -z "$bin" ]; then
  features=()
  [ -n "$cuda" ] && features=(--features cuda)
  cargo build --release -q -p fdistill-bench "${features[@]}"
  bin=target/release/fdistill-bench
fi
rust_device=flex; torch_device=cpu; twin_tol=2e-4
# on cuda the Rust probe is computed in TF32 (cubek-matmul's adjust_dtypes stages f32 operands
# as TF32 on tensor cores: unit roundoff 2^-11 ≈ 4.9e-4), so the twin accepts 2e-3 there
[ -n "$cuda" ] && { rust_device=cuda:0; torch_device=cuda; twin_tol=2e-3; }

py="${PYTHON:-python3}"
have_torch=""
if "$py" -c 'import torch, numpy' 2>/dev/null; then
  have_torch=1
  torch_version=$("$py" -c 'import torch; print(torch.__version__)')
else
  echo "note: no torch/numpy for $py; printing the Rust numbers alone (set PYTHON=…/bin/python)" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

field() { grep -o "\"$2\": *[0-9.eE+-]*" "$1" | head -1 | sed 's/.*: *//'; }
peak_mib() { awk '/Maximum resident set size/ {printf "%.0f", $NF / 1024}' "$1"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }

# one timed process: side (rust|torch), work, threads → "ms peak_mib"
run_one() {
  local side=$1 work=$2 t=$3 out="$tmp/out" tv="$tmp/time"
  local steps_var="STEPS_${work//-/_}" extra=()
  [ -n "${!steps_var:-}" ] && extra=(--steps "${!steps_var}")
  if [ "$side" = rust ]; then
    RAYON_NUM_THREADS=$t /usr/bin/time -v -o "$tv" "$bin" "$work" --threads "$t" \
      --device "$rust_device" "${extra[@]}" > "$out"
  else
    OMP_NUM_THREADS=$t MKL_NUM_THREADS=$t /usr/bin/time -v -o "$tv" "$py" bench/torch_twin.py "$work" \
      --threads "$t" --device "$torch_device" "${extra[@]}" > "$out"
  fi
  echo "$(field "$out" ms_per_step) $(peak_mib "$tv")"
}

echo "# fdistill vs PyTorch, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), device $rust_device"
echo "- load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- fdistill-bench: $bin; PyTorch: ${torch_version:-absent}; $pairs alternated pairs per row, medians"

if [ -n "$have_torch" ]; then
  echo
  echo "## twin check (names, shapes, forward outputs)"
  echo
  for w in $works; do
    "$bin" "$w" --steps 3 --warmup 0 --export "$tmp/export" --device "$rust_device" > /dev/null
    "$py" bench/torch_twin.py "$w" --check "$tmp/export" --tol "$twin_tol" || { echo "twin check failed for $w" >&2; exit 1; }
  done
fi

echo
echo "| work | threads | fdistill ms/step | PyTorch ms/step | ratio | fdistill peak MiB | PyTorch peak MiB | memory ratio |"
echo "|---|---|---|---|---|---|---|---|"
declare -A rust_ms torch_ms
for t in $threads; do
  for w in $works; do
    r_ms=""; r_mem=""; p_ms=""; p_mem=""
    for _ in $(seq "$pairs"); do
      read -r ms mem < <(run_one rust "$w" "$t"); r_ms+=" $ms"; r_mem+=" $mem"
      if [ -n "$have_torch" ]; then
        read -r ms mem < <(run_one torch "$w" "$t"); p_ms+=" $ms"; p_mem+=" $mem"
      fi
    done
    rm=$(echo "$r_ms" | median); rmem=$(echo "$r_mem" | median)
    rust_ms[$w,$t]=$rm
    if [ -n "$have_torch" ]; then
      pm=$(echo "$p_ms" | median); pmem=$(echo "$p_mem" | median)
      torch_ms[$w,$t]=$pm
      awk -v w="$w" -v t="$t" -v rm="$rm" -v pm="$pm" -v rmem="$rmem" -v pmem="$pmem" 'BEGIN {
        printf "| %s | %s | %.2f | %.2f | %.2f× | %d | %d | %.2f× |\n", w, t, rm, pm, rm / pm, rmem, pmem, rmem / pmem }'
    else
      awk -v w="$w" -v t="$t" -v rm="$rm" -v rmem="$rmem" 'BEGIN {
        printf "| %s | %s | %.2f | – | – | %d | – | – |\n", w, t, rm, rmem }'
    fi
  done
done

set -- $threads
if [ $# -ge 2 ]; then
  echo
  echo "fdistill speed-up, $2 threads over $1: $(for w in $works; do
    awk -v w="$w" -v a="${rust_ms[$w,$1]}" -v b="${rust_ms[$w,$2]}" 'BEGIN { printf "%s %.2f×; ", w, a / b }'; done)"
  if [ -n "$have_torch" ]; then
    echo
    echo "PyTorch speed-up, $2 threads over $1: $(for w in $works; do
      awk -v w="$w" -v a="${torch_ms[$w,$1]}" -v b="${torch_ms[$w,$2]}" 'BEGIN { printf "%s %.2f×; ", w, a / b }'; done)"
  fi
fi
echo
echo "- load after: $(cut -d' ' -f1-3 /proc/loadavg)"
