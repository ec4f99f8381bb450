#!/usr/bin/env bash
# The 16×16 Fashion-MNIST image study of docs/results.md ("Images: Fashion-MNIST"), on the CPU.
# Every stage resumes: a finished chunk or evaluation is skipped, an interrupted run continues
# from its checkpoint (`--resume` is exact).
#
#   tools/image_study16.sh DIR classifier            metric network (6 epochs)
#   tools/image_study16.sh DIR teacher [END]         teacher in chunks of 1000 steps to END
#                                                    (default 8000), a snapshot after each
#   tools/image_study16.sh DIR teacher-curve         1,000 samples (Heun, 35 NFE) per snapshot
#   tools/image_study16.sh DIR nfe [N] [SPECS]       final teacher, N samples (default 1000)
#                                                    at each SAMPLER:NFE of SPECS (default Euler
#                                                    1, 2, 4, 8, 16, 32 and Heun 3, 5, 9, 17, 35)
#   tools/image_study16.sh DIR student D S [END] [CHUNK]
#                                                    student of divergence D, seed S, in chunks
#                                                    of CHUNK (1500) iterations to END (6000),
#                                                    1,000 and 5,000 samples evaluated after
#                                                    each chunk
#   tools/image_study16.sh DIR final D S [N]         N (5000) samples of the student as it is
#                                                    (its iteration count in the file name)
#   tools/image_study16.sh DIR ablate NAME [UPDATES] [SEED] [D]
#                                                    one change to the student's config
#                                                    (docs/configs/fashion-mnist-16-ablation/
#                                                    NAME.json over fashion-mnist-16-distill-
#                                                    cpu.json), divergence D (jensen-shannon),
#                                                    seed SEED (0), UPDATES (1000) generator
#                                                    updates = UPDATES·(K+1) iterations, in
#                                                    one run; 5,000 samples evaluated
#   tools/image_study16.sh DIR tables                CSVs and PNG charts of all of the above
#                                                    (final_seeds.csv, ablation_seeds.csv:
#                                                    mean ± std over seeds)
#
# Environment: FDISTILL (the binary; default target/release/fdistill), THREADS (1).
# Metrics are in the classifier's 64-d feature space against as many test images as samples
# (`fdistill eval --images`), with the real-vs-real floor.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
F=$(realpath "${FDISTILL:-$repo/target/release/fdistill}")
T=${THREADS:-1}
self=$(realpath "$0"); dir=$(realpath -m "$1"); stage=$2; shift 2
mkdir -p "$dir" && cd "$dir"
mkdir -p snaps samples results cfg

train() { # OUT D CONFIG STEPS: a new student run, or the run in OUT resumed to STEPS
  if [ -f "$1/checkpoint/fdistill.json" ]; then
    "$F" distill --out "$1" --resume --steps "$4" --threads "$T"
  else
    "$F" distill --teacher t16 --divergence "$2" --preset cifar10 --config "$3" --out "$1" \
      --steps "$4" --threads "$T"
  fi
}

# rows grouped by the CSV columns $1 (e.g. "2,4,5"): the group, its row count, then mean and
# sample std of the 7 metric columns from column $2 on
seed_stats() {
  awk -F, -v cols="$1" -v first="$2" '
    BEGIN { nc = split(cols, c, ",") }
    { g = $(c[1]); for (i = 2; i <= nc; i++) g = g "," $(c[i]); n[g]++
      for (j = first; j < first + 7; j++) { s[g, j] += $j; q[g, j] += $j * $j } }
    END { for (g in n) { line = g "," n[g]
            for (j = first; j < first + 7; j++) { m = s[g, j] / n[g]
              v = n[g] > 1 ? (q[g, j] - n[g] * m * m) / (n[g] - 1) : 0
              line = line sprintf(",%.6g,%.6g", m, v > 0 ? sqrt(v) : 0) }
            print line } }'
}
evaluate() { # samples.npy result.json
  "$F" eval --images "$1" --classifier clf16 --json --threads "$T" > "$2.tmp" && mv "$2.tmp" "$2"
}

case $stage in
  classifier)
    [ -f clf16/result.json ] || "$F" classifier train --data fashion-mnist@16 --out clf16 \
      --epochs 6 --batch-size 128 --lr 3e-3 --widths 16,32,64 --threads "$T" --overwrite ;;
  teacher)
    for n in $(seq 1000 1000 "${1:-8000}"); do
      [ -d "snaps/step-$n" ] && continue
      if [ -f t16/checkpoint/state.json ]; then
        "$F" teacher train --out t16 --resume --steps "$n" --threads "$T"
      else
        "$F" teacher train --data fashion-mnist@16 --net unet --out t16 --steps "$n" \
          --config "$repo/docs/configs/fashion-mnist-16-cpu.json" --threads "$T"
      fi
      mkdir -p "snaps/step-$n" && cp t16/config.json "snaps/step-$n/" && cp -r t16/checkpoint "snaps/step-$n/"
    done ;;
  teacher-curve)
    for d in snaps/step-*; do
      n=${d#snaps/step-}; r=results/teacher-step-$n-heun35.json
      [ -f "$r" ] && continue
      "$F" sample --checkpoint "$d" --n 1000 --nfe 35 --seed 0 \
        --out "samples/teacher-step-$n-heun35.npy" --threads "$T"
      evaluate "samples/teacher-step-$n-heun35.npy" "$r"
    done ;;
  nfe)
    n=${1:-1000}
    for spec in ${2:-euler:1 euler:2 euler:4 euler:8 euler:16 euler:32 heun:3 heun:5 heun:9 heun:17 heun:35}; do
      s=${spec%:*}; k=${spec#*:}; r=results/teacher-$s$k-n$n.json
      [ -f "$r" ] && continue
      "$F" sample --checkpoint t16 --n "$n" --sampler "$s" --nfe "$k" --seed 0 \
        --out "samples/teacher-$s$k-n$n.npy" --threads "$T"
      evaluate "samples/teacher-$s$k-n$n.npy" "$r"
    done ;;
  student)
    D=$1; S=$2; END=${3:-6000}; CHUNK=${4:-1500}; out=st/$D-s$S
    sed "s/\"seed\": 0/\"seed\": $S/" "$repo/docs/configs/fashion-mnist-16-distill-cpu.json" \
      > "cfg/distill-seed$S.json"
    for n in $(seq "$CHUNK" "$CHUNK" "$END"); do
      r=results/$D-s$S-it$n.json
      [ -f "$r" ] && continue
      train "$out" "$D" "cfg/distill-seed$S.json" "$n"
      "$F" sample --checkpoint "$out" --n 1000 --seed 0 --out "samples/$D-s$S-it$n.npy" --threads "$T"
      evaluate "samples/$D-s$S-it$n.npy" "$r"
      "$self" "$dir" final "$D" "$S" 5000
    done ;;
  ablate)
    name=$1; U=${2:-1000}; S=${3:-0}; D=${4:-jensen-shannon}
    b=ablate-$D-$name-s$S; out=st/$b-u$U; r=results/$b-u$U-n5000.json
    [ -f "$r" ] && exit 0
    jq -s '.[0] * .[1]' "$repo/docs/configs/fashion-mnist-16-distill-cpu.json" \
      "$repo/docs/configs/fashion-mnist-16-ablation/$name.json" |
      jq ".driver.seed = $S" > "cfg/$b.json"
    K=$(jq .critic_steps "cfg/$b.json"); n=$((U * (K + 1)))
    train "$out" "$D" "cfg/$b.json" "$n"
    "$F" sample --checkpoint "$out" --n 5000 --seed 0 --out "samples/$b-u$U.npy" --threads "$T"
    evaluate "samples/$b-u$U.npy" "$r" ;;
  final)
    D=$1; S=$2; n=${3:-5000}
    it=$(grep -m1 '"step"' "st/$D-s$S/checkpoint/driver.json" | grep -o '[0-9]*')
    r=results/$D-s$S-final-it$it-n$n.json
    [ -f "$r" ] || { "$F" sample --checkpoint "st/$D-s$S" --n "$n" --seed 0 \
      --out "samples/$D-s$S-final-it$it-n$n.npy" --threads "$T"
      evaluate "samples/$D-s$S-final-it$it-n$n.npy" "$r"; } ;;
  tables)
    keys="frechet_distance kid precision recall density coverage class_kl_to_uniform"
    metrics() { for k in $keys; do grep -m1 "\"$k\"" "$1" | sed 's/.*: *//; s/,$//'; done | paste -sd, -; }
    floor() { grep -A2 '"floor"' "$1" | grep -m1 frechet_distance | sed 's/.*: *//; s/,$//'; }
    h=$(echo "$keys" | tr ' ' ',')
    { echo "step,$h,floor_fd"
      for r in results/teacher-step-*-heun35.json; do
        [ -f "$r" ] || continue
        n=${r#results/teacher-step-}; n=${n%-heun35.json}
        echo "$n,$(metrics "$r"),$(floor "$r")"
      done | sort -t, -k1,1n; } > teacher_curve.csv
    { echo "sampler,nfe,samples,$h,floor_fd,curve"
      for r in results/teacher-*-n*.json; do
        [ -f "$r" ] || continue
        b=${r#results/teacher-}; b=${b%.json}; n=${b##*-n}; b=${b%-n*}
        echo "${b%%[0-9]*},${b##*[a-z]},$n,$(metrics "$r"),$(floor "$r"),${b%%[0-9]*} ($n samples)"
      done | sort -t, -k1,1 -k2,2n; } > teacher_nfe.csv
    { echo "student,divergence,seed,iterations,generator_updates,$h,floor_fd"
      for r in results/*-s*-it*.json; do
        [ -f "$r" ] || continue
        case $r in *-final-*) continue ;; esac
        b=${r#results/}; b=${b%.json}; it=${b##*-it}; b=${b%-it*}; s=${b##*-s}; d=${b%-s*}
        echo "$d-s$s,$d,$s,$it,$((it / 3)),$(metrics "$r"),$(floor "$r")"
      done | sort -t, -k1,1 -k4,4n; } > student_curve.csv
    { echo "model,divergence,seed,iterations,samples,$h,floor_fd"
      { for r in results/*-s*-final-it*-n*.json; do
        [ -f "$r" ] || continue
        b=${r#results/}; b=${b%.json}; n=${b##*-n}; b=${b%-n*}; it=${b##*-final-it}
        b=${b%-final-it*}; s=${b##*-s}; d=${b%-s*}
        echo "$d-s$s,$d,$s,$it,$n,$(metrics "$r"),$(floor "$r")"
      done
      # the `base` ablation of seed S is the student of seed S stopped at 3·UPDATES iterations
      # (the same config and seed; a resumed run continues exactly)
      for r in results/ablate-*-base-s*-u*-n5000.json; do
        [ -f "$r" ] || continue
        b=${r#results/ablate-}; u=${b##*-u}; u=${u%-n5000.json}; b=${b%-u*}; s=${b##*-s}
        d=${b%-base-s*}; it=$((3 * u))
        [ -f "results/$d-s$s-final-it$it-n5000.json" ] ||
          echo "$d-s$s,$d,$s,$it,5000,$(metrics "$r"),$(floor "$r")"
      done; } | sort; } > final.csv
    { echo "change,divergence,seed,generator_updates,iterations,train_s,$h,floor_fd"
      for r in results/ablate-*-s*-u*-n5000.json; do
        [ -f "$r" ] || continue
        b=${r#results/}; b=${b%-u*}; u=${r##*-u}; u=${u%-n5000.json}
        s=${b##*-s}; rest=${b#ablate-}; rest=${rest%-s*}
        for d in reverse-kl jensen-shannon forward-kl; do
          case $rest in "$d"-*) name=${rest#"$d"-}; break ;; *) d=""; name=$rest ;; esac
        done
        n=$(tail -n 1 "st/$b-u$u/timing.jsonl" | jq .step)
        t=$(jq -s 'group_by(.step) | map(.[-1].time | add) | add | floor' "st/$b-u$u/timing.jsonl")
        echo "$name,$d,$s,$u,$n,$t,$(metrics "$r"),$(floor "$r")"
      done | sort; } > ablation.csv
    # mean ± sample std over seeds of every 5,000-sample metric: per divergence and iteration
    # (final_seeds.csv), per ablation change, divergence and update budget (ablation_seeds.csv)
    stats_header=$(for k in $keys; do printf '%s_mean,%s_std,' "$k" "$k"; done | sed 's/,$//')
    { echo "divergence,iterations,samples,seeds,$stats_header"
      tail -n +2 final.csv | seed_stats 2,4,5 6 | sort -t, -k1,1 -k2,2n; } > final_seeds.csv
    { echo "change,divergence,generator_updates,seeds,$stats_header"
      tail -n +2 ablation.csv | seed_stats 1,2,4 7 | sort -t, -k1,1 -k2,2 -k3,3n; } \
      > ablation_seeds.csv
    [ "$(wc -l < teacher_curve.csv)" -gt 1 ] && "$F" plot --csv teacher_curve.csv --x step \
      --y frechet_distance --title "teacher: Fréchet distance (1,000 samples, Heun 35 NFE)" \
      --out teacher_curve.png
    awk -F, 'NR == 1 || $3 == 1000' teacher_nfe.csv > teacher_nfe_n1000.csv
    [ "$(wc -l < teacher_nfe_n1000.csv)" -gt 1 ] && "$F" plot --csv teacher_nfe_n1000.csv --x nfe \
      --y frechet_distance --series sampler --log-y \
      --title "teacher: Fréchet distance against NFE (1,000 samples)" --out teacher_nfe.png
    if [ "$(wc -l < final.csv)" -gt 1 ] && [ -f results/teacher-heun35-n5000.json ]; then
      fd=$(metrics results/teacher-heun35-n5000.json | cut -d, -f1)
      { echo "model,iterations,frechet_distance"
        tail -n +2 final.csv | awk -F, '$5 == 5000 {print $1 "," $4 "," $6}'
        lo=$(tail -n +2 final.csv | cut -d, -f4 | sort -n | head -1)
        hi=$(tail -n +2 final.csv | cut -d, -f4 | sort -n | tail -1)
        echo "teacher (Heun 35 NFE),$lo,$fd"; echo "teacher (Heun 35 NFE),$hi,$fd"
      } > student_curve_n5000.csv
      "$F" plot --csv student_curve_n5000.csv --x iterations --y frechet_distance \
        --series model --log-y --title "one-step students: Fréchet distance (5,000 samples)" \
        --out student_curve_n5000.png
    fi
    [ "$(wc -l < student_curve.csv)" -gt 1 ] && "$F" plot --csv student_curve.csv \
      --x iterations --y frechet_distance --series student --log-y \
      --title "one-step students: Fréchet distance (1,000 samples)" --out student_curve.png
    true ;;
  *) echo "unknown stage $stage (see the header of $self)" >&2; exit 2 ;;
esac
