#!/usr/bin/env bash
# Times the full-size EDM CIFAR-10 DDPM++ (55.7 M parameters) on the CPU at batch 4: fdistill
# (burn's Flex backend) against the PyTorch twin (tools/edm_twin.py), one forward without
# gradients and one forward + backward of the denoising loss. The two run alternately,
# ROUNDS times, each process timing one repetition after one warm-up; prints the medians.
#
#   cargo build --release -p fdistill-nets --example edm_speed
#   PYTHON=/path/to/venv/bin/python ROUNDS=5 tools/edm_speed.sh
set -euo pipefail
ROUNDS=${ROUNDS:-5}
BATCH=${BATCH:-4}
THREADS=${THREADS:-2}
PY=${PYTHON:-python3}
BIN=${BIN:-target/release/examples/edm_speed}
out=$(mktemp)
for _ in $(seq "$ROUNDS"); do
  RAYON_NUM_THREADS="$THREADS" "$BIN" "$BATCH" 1 >>"$out"
  "$PY" tools/edm_twin.py bench --batch "$BATCH" --reps 1 --threads "$THREADS" >>"$out"
done
"$PY" - "$out" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
keys = sorted({(r["what"], r["impl"]) for r in rows})
print("| measurement | implementation | batch | median (s) | runs (s) |")
print("|---|---|---|---|---|")
for what, impl in keys:
    t = [s for r in rows if (r["what"], r["impl"]) == (what, impl) for s in r["seconds"]]
    b = rows[0]["batch"]
    print(f"| {what} | {impl} | {b} | {statistics.median(t):.2f} | {', '.join(f'{x:.2f}' for x in t)} |")
PYEOF
rm -f "$out"
