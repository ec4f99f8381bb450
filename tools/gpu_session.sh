#!/usr/bin/env bash
# One lent-GPU session in one command: a cuda smoke test, the side-by-side benchmark on cuda
# against PyTorch CUDA (issue 11), the backend conformance group on cuda, and the 16×16
# Fashion-MNIST image run of issue 14 (teacher with EMA snapshots, its quality against NFE,
# reverse-kl / jensen-shannon / forward-kl students over several seeds, 1,000 samples each).
# Every training stage is time-boxed with SIGTERM, which makes fdistill write a checkpoint
# and stop; the step each run reached is in its metrics.jsonl (re-run with --steps N).
#
#   tools/gpu_session.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds `fdistill` and `fdistill-bench` built with `--features cuda` (and optionally
# `conformance`, the test binary of `cargo test --release -p fdistill-conformance --features
# cuda --no-run`). Results land in OUT_DIR (logs, bench.md, and tarballs of samples and runs).
# Environment (defaults): DEVICE (cuda:0), T_BENCH (150), T_TEACHER (160), T_STUDENT (200)
# seconds, SEEDS ("0 1 2"), DIVERGENCES ("reverse-kl jensen-shannon forward-kl"),
# TEACHER_CONFIG, TEACHER_DIR (a trained teacher run: skip teacher training), STUDENT_CONFIG,
# SNAP_EVERY (1000 teacher steps), N_SAMPLES (1000), TEACHER_NFE, BENCH_WORKS, PAIRS (3),
# FDISTILL_FASHION_MNIST_DIR.
# Run locally with DEVICE=flex and small T_* to test the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "$1"); out=$(realpath -m "$2"); mkdir -p "$out"
DEVICE=${DEVICE:-cuda:0}
T_BENCH=${T_BENCH:-150}; T_TEACHER=${T_TEACHER:-160}; T_STUDENT=${T_STUDENT:-200}
SEEDS=${SEEDS-0 1 2}; DIVERGENCES=${DIVERGENCES-reverse-kl jensen-shannon forward-kl}
SNAP_EVERY=${SNAP_EVERY:-1000}; N_SAMPLES=${N_SAMPLES:-1000}
TEACHER_NFE=${TEACHER_NFE-heun:35 heun:17 heun:9 heun:5 heun:3 euler:32 euler:16 euler:8 euler:4 euler:2}
BENCH_WORKS=${BENCH_WORKS-teacher16 distill16 teacher32 distill32 sample16-heun35}
F=$bin/fdistill
work=$(mktemp -d); runs=$work/runs; samples=$work/samples; mkdir -p "$runs" "$samples"
log() { echo "[$(date -u +%T) +${SECONDS}s] $*" | tee -a "$out/session.log"; }

# --- 0. environment and a smoke test ------------------------------------------------------
if [[ $DEVICE == cuda* ]]; then
  if [ -z "${CUDA_PATH:-}" ] && [ ! -d /usr/local/cuda ] && command -v nvcc >/dev/null; then
    export CUDA_PATH=$(dirname "$(dirname "$(realpath "$(command -v nvcc)")")")
  fi
  libdirs=$( (find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu \
    "$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)" \
    -name 'libnvrtc.so*' 2>/dev/null) | xargs -r -n1 dirname | grep -v /stubs | sort -u | tr '\n' ':')
  export LD_LIBRARY_PATH=${libdirs}${LD_LIBRARY_PATH:-}
  log "CUDA_PATH=${CUDA_PATH:-/usr/local/cuda} LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
    --format=csv 2>&1 | tee -a "$out/session.log"
fi
[ -x /usr/bin/time ] || { [ -x .gpu/time ] && cp .gpu/time /usr/bin/time; }
log "smoke: fdistill-bench toy on $DEVICE"
if ! timeout 120 "$bin/fdistill-bench" toy --device "$DEVICE" --steps 3 --warmup 0 \
    > "$out/smoke.log" 2>&1; then
  cat "$out/smoke.log"; ldd "$F" | tee -a "$out/session.log"
  log "smoke test failed: stopping"; exit 3
fi
log "smoke ok: $(tail -1 "$out/smoke.log" | cut -c1-200)"

# --- 1. side-by-side benchmark -------------------------------------------------------------
if [ "$T_BENCH" -gt 0 ]; then
  log "bench ($BENCH_WORKS), ≤ ${T_BENCH}s"
  cuda_flag=(); [[ $DEVICE == cuda* ]] && cuda_flag=(--cuda)
  FDISTILL_BENCH_BIN=$bin/fdistill-bench PYTHON=${PYTHON:-python3} timeout "$T_BENCH" \
    bash bench/run.sh "${cuda_flag[@]}" --threads 1 --pairs "${PAIRS:-3}" --works "$BENCH_WORKS" \
    2>&1 | tee "$out/bench.md"
  log "bench done"
fi

# --- 2. teacher (time-boxed), EMA snapshots; the conformance group alongside -----------------
if [ -n "${TEACHER_DIR:-}" ]; then
  # a teacher trained elsewhere (e.g. on CPU): the students distil it, and its samples on this
  # device check the backend against the other device's numbers
  log "teacher: $TEACHER_DIR (trained elsewhere; no teacher training)"
  cp -r "$TEACHER_DIR" "$runs/teacher"
  if [ -x "$bin/conformance" ] && [[ $DEVICE == cuda* ]]; then
    ( timeout 150 "$bin/conformance" cuda:: --test-threads 1 > "$out/conformance.log" 2>&1
      log "conformance on cuda: exit $? — $(grep -E '^test result' "$out/conformance.log")" ) &
  fi
else
  log "teacher: fashion-mnist@16, unet:fashion-mnist-16, ≤ ${T_TEACHER}s"
  timeout -s TERM -k 30 "$T_TEACHER" "$F" teacher train --data fashion-mnist@16 \
    --net unet:fashion-mnist-16 --config "${TEACHER_CONFIG:-docs/configs/fashion-mnist-16-gpu.json}" \
    --out "$runs/teacher" --device "$DEVICE" > "$out/teacher.log" 2>&1 &
  teacher_pid=$!
  (
    last=0
    while kill -0 "$teacher_pid" 2>/dev/null; do
      st=$runs/teacher/checkpoint/state.json
      step=$(grep -o '"step": *[0-9]*' "$st" 2>/dev/null | grep -o '[0-9]*$')
      if [ -n "$step" ] && [ "$step" != "$last" ] && [ $((step % SNAP_EVERY)) -eq 0 ]; then
        d=$runs/teacher-snap/step-$step; mkdir -p "$d/checkpoint"
        cp "$runs/teacher/config.json" "$d/"
        cp "$runs/teacher/checkpoint/"{ema,model}.safetensors "$runs/teacher/checkpoint/state.json" \
          "$d/checkpoint/" 2>/dev/null
        step2=$(grep -o '"step": *[0-9]*' "$st" 2>/dev/null | grep -o '[0-9]*$')
        if [ "$step2" = "$step" ]; then last=$step; else rm -rf "$d"; fi
      fi
      sleep 1
    done
  ) &
  if [ -x "$bin/conformance" ] && [[ $DEVICE == cuda* ]]; then
    timeout 150 "$bin/conformance" cuda:: --test-threads 1 > "$out/conformance.log" 2>&1
    log "conformance on cuda: exit $? — $(grep -E '^test result' "$out/conformance.log")"
  fi
  wait "$teacher_pid"; log "teacher exit $? — $(tail -1 "$out/teacher.log" | cut -c1-200)"
  wait

fi

# --- 3. students (all in parallel, time-boxed) and the teacher's samples --------------------
pids=()
for d in $DIVERGENCES; do
  for s in $SEEDS; do
    sed "s/\"seed\": 0/\"seed\": $s/" "${STUDENT_CONFIG:-docs/configs/fashion-mnist-16-distill-gpu.json}" \
      > "$work/distill-seed$s.json"
    timeout -s TERM -k 30 "$T_STUDENT" "$F" distill --teacher "$runs/teacher" --divergence "$d" \
      --config "$work/distill-seed$s.json" --out "$runs/$d-s$s" --device "$DEVICE" \
      > "$out/student-$d-s$s.log" 2>&1 &
    pids+=($!)
  done
done
log "students: ${#pids[@]} runs, ≤ ${T_STUDENT}s each"
# teacher quality against NFE (1,000 class-balanced samples each) while the students train
for spec in $TEACHER_NFE; do
  "$F" sample --checkpoint "$runs/teacher" --n "$N_SAMPLES" --seed 0 --sampler "${spec%:*}" \
    --nfe "${spec#*:}" --out "$samples/teacher-${spec%:*}${spec#*:}.npy" --device "$DEVICE" \
    >> "$out/sample.log" 2>&1 || log "sample teacher $spec failed"
done
for d in "$runs"/teacher-snap/step-*; do
  [ -d "$d" ] || continue
  "$F" sample --checkpoint "$d" --n "$N_SAMPLES" --seed 0 --nfe 35 \
    --out "$samples/teacher-$(basename "$d")-heun35.npy" --device "$DEVICE" \
    >> "$out/sample.log" 2>&1 || log "sample snapshot $d failed"
done
log "teacher samples done"
for p in "${pids[@]}"; do wait "$p"; done
log "students stopped: $(for f in "$out"/student-*.log; do tail -1 "$f" | cut -c1-120; done | sort | uniq -c | head -3)"
for d in $DIVERGENCES; do
  for s in $SEEDS; do
    "$F" sample --checkpoint "$runs/$d-s$s" --n "$N_SAMPLES" --seed 0 --out "$samples/$d-s$s.npy" \
      --device "$DEVICE" >> "$out/sample.log" 2>&1 &
  done
done
wait
log "student samples done"

# --- 4. pack (≤ 16 MiB a file) ----------------------------------------------------------------
tar -C "$work" -cf - samples | split -b 16000k - "$out/samples.tar.part-"
tar -C "$runs" -cf - --exclude='optim*' --exclude='teacher-snap' --exclude='*/checkpoint/model.safetensors' \
  --exclude='*/checkpoint/generator.safetensors' --exclude='*/checkpoint/fake*' \
  --exclude='*/checkpoint/disc*' . | split -b 16000k - "$out/runs.tar.part-"
(cd "$out" && tar -cf logs.tar --exclude=session.log -- *.log && find . -name '*.log' ! -name session.log -delete)
ls -la "$out" | tee -a "$out/session.log"
log "done"
