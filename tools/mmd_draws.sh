#!/usr/bin/env bash
# MMD² and energy distance of 2-D models over several independent draws: for d = 1..DRAWS, a
# fresh sample set of each model (latent seed d; teachers at Heun 35 NFE) against a fresh
# exact reference of the target (seed 100 + d). One draw of 5000 samples is not enough where
# the models are close to the target: on two-moons the same teacher ranges 1.0e-3 … 3.8e-3
# over 8 draws (docs/results.md, "2-D fidelity"; `fdistill study fidelity2d --eval-draws N`
# does the same inside a study, with its own seeds).
#
#   tools/mmd_draws.sh TARGET DRAWS RUN_DIR...      one CSV row per run directory
#
# Environment: FDISTILL (the binary; default target/release/fdistill), N (5000 samples).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
F=$(realpath "${FDISTILL:-$repo/target/release/fdistill}")
target=$1; draws=$2; shift 2
n=${N:-5000}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "run,draws,mmd2_mean,mmd2_std,mmd2_min,mmd2_max,energy_mean"
for run in "$@"; do
  for d in $(seq 1 "$draws"); do
    "$F" sample --checkpoint "$run" --n "$n" --seed "$d" --out "$tmp/s.csv" --threads 1 \
      > /dev/null 2>&1 || { echo "sampling $run failed" >&2; exit 1; }
    "$F" eval --samples "$tmp/s.csv" --target "$target" --seed $((100 + d)) --json --threads 1 |
      tr -d ' \n' | sed 's/.*"mmd2":\([^,}]*\).*"energy_distance":\([^,}]*\).*/\1 \2\n/'
  done | awk -v run="$run" -v k="$draws" '
    { m[NR] = $1; e += $2; s += $1 }
    END { mean = s / NR; for (i = 1; i <= NR; i++) { q += (m[i] - mean) ^ 2
            if (i == 1 || m[i] < lo) lo = m[i]; if (i == 1 || m[i] > hi) hi = m[i] }
          printf "%s,%d,%.4e,%.4e,%.4e,%.4e,%.4e\n", run, NR, mean, sqrt(q / (NR - 1)), lo, hi, e / NR }'
done
