#!/usr/bin/env bash
# What the all-reduce of data-parallel training costs per step on this CPU: the same runs on
# one device (--device flex) and on two (--devices flex,flex, burn-collective), global batch
# unchanged, timing.jsonl read back (log_every 1).
#
#   bench/allreduce.sh [--steps N] [--works "teacher-mlp distill-toy vardiu-mog40 teacher-unet16"]
#
# Prints, per work: median ms/step on one device and on two, the median time a step spends in
# all-reduces (`allreduce_s` of timing.jsonl: communication plus waiting for the slower
# replica) and its share of the two-device step. Both workers share the CPU's rayon pool.
# Environment: FDISTILL_BIN (a prebuilt `fdistill` with the feature `collective`),
# THREADS (rayon threads, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

steps=40
works="teacher-mlp distill-toy vardiu-mog40 teacher-unet16"
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --works) works="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
bin="${FDISTILL_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -q -p fdistill-cli
  bin=target/release/fdistill
fi
export RAYON_NUM_THREADS="${THREADS:-2}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fixture="$PWD/tests/fixtures/fashion-mnist-t10k-first1000"
images="idx:$fixture/t10k-images-idx3-ubyte-first1000.gz,$fixture/t10k-labels-idx1-ubyte-first1000.gz@16"

summary() { # summary WORK RUN1 RUN2
  python3 - "$@" <<'EOF'
import json, statistics, sys
work, one, two = sys.argv[1:4]
def read(run):
    lines = [json.loads(l) for l in open(run + "/timing.jsonl")]
    lines = lines[len(lines) // 5:]  # drop the first fifth: warm-up
    t = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(lines, lines[1:])]
    ar = [(l.get("time") or {}).get("allreduce_s", 0.0) for l in lines[1:]]
    return 1e3 * statistics.median(t), 1e3 * statistics.median(ar)
(t1, _), (t2, a2) = read(one), read(two)
print(f"{work:15s} 1 device {t1:8.2f} ms/step | 2 devices {t2:8.2f} ms/step "
      f"| all-reduce {a2:7.2f} ms/step = {100 * a2 / t2:4.1f} % of the step")
EOF
}

for work in $works; do
  case "$work" in
    teacher-mlp)
      cfg="$tmp/t.json"
      echo '{"teacher": {"batch_size": 512, "log_every": 1, "checkpoint_every": 100000}}' > "$cfg"
      for d in "--device flex" "--devices flex,flex"; do
        out="$tmp/$work-${d##* }"
        # shellcheck disable=SC2086
        "$bin" teacher train --data ring8-unbalanced --steps "$steps" --config "$cfg" \
          --out "$out" $d 2>/dev/null
      done
      summary "$work" "$tmp/$work-flex" "$tmp/$work-flex,flex" ;;
    distill-toy)
      teacher="$tmp/teacher-for-distill"
      "$bin" teacher train --data ring8-unbalanced --steps 20 --out "$teacher" 2>/dev/null
      cfg="$tmp/d.json"
      echo '{"driver": {"log_every": 1, "checkpoint_every": 100000}}' > "$cfg"
      for d in "--device flex" "--devices flex,flex"; do
        out="$tmp/$work-${d##* }"
        # shellcheck disable=SC2086
        "$bin" distill --teacher "$teacher" --divergence jensen-shannon --steps "$((steps / 3 * 3))" \
          --config "$cfg" --out "$out" $d 2>/dev/null
      done
      summary "$work" "$tmp/$work-flex" "$tmp/$work-flex,flex" ;;
    vardiu-mog40)
      # VarDiU on the analytic MoG-40 teacher, its default batch (1024 in antithetic pairs).
      cfg="$tmp/v.json"
      echo '{"driver": {"log_every": 1, "checkpoint_every": 100000}}' > "$cfg"
      for d in "--device flex" "--devices flex,flex"; do
        out="$tmp/$work-${d##* }"
        # shellcheck disable=SC2086
        "$bin" distill --method vardiu --target mog40 --steps "$steps" --config "$cfg" \
          --out "$out" $d 2>/dev/null
      done
      summary "$work" "$tmp/$work-flex" "$tmp/$work-flex,flex" ;;
    teacher-unet16)
      cfg="$tmp/u.json"
      python3 - docs/configs/fashion-mnist-16-cpu.json "$cfg" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["teacher"].update(batch_size=32, log_every=1, checkpoint_every=100000)
json.dump(c, open(sys.argv[2], "w"))
EOF
      for d in "--device flex" "--devices flex,flex"; do
        out="$tmp/$work-${d##* }"
        # shellcheck disable=SC2086
        "$bin" teacher train --data "$images" --net unet --steps "$((steps / 2))" --config "$cfg" \
          --out "$out" $d 2>/dev/null
      done
      summary "$work" "$tmp/$work-flex" "$tmp/$work-flex,flex" ;;
    *) echo "unknown work $work" >&2; exit 2 ;;
  esac
done
