#!/usr/bin/env bash
# The speed measurements of docs/results.md on one GPU, in one command: each stage is time-boxed and writes its
# result into OUT as soon as it exists, so a stage that runs out of time leaves the others' results.
#
#   scripts/benchmark_gpu.sh OUT [ED_FOLDER]
#
# Stages (STAGES picks and orders them; all by default):
#   bench_fp32       scripts/benchmark.py, float32, eager: step and greedy times, operators and GPU kernels per step
#                    (with ED_FOLDER on random batches of its valid split, the authors' harness's setting; else on
#                    the synthetic batches; the compiled stages always time the synthetic batches, whose few shapes
#                    compile before the timed steps)
#   bench_bf16       the same under bf16 autocast
#   bench_compiled   the train step and greedy decoding through torch.compile (launches per step and per token)
#   bench_cudagraphs the same with mode="reduce-overhead" (CUDA graphs)
#   train            with ED_FOLDER: scripts/train.py --preset paper for TRAIN_STEPS steps, eager then compiled
#                    (Trainer's torch_compile); seconds per 1,000 steps from each train_summary.json (the compiled
#                    run's include its compilations: compare them over enough steps)
#   evaluate         with ED_FOLDER: scripts/evaluate.py on the valid split with the eager train model (its
#                    metrics.json gives samples/s), then evaluate_compiled, the same with --torch_compile
# Environment: STAGE_SECONDS (limit of each stage, default 240), DEVICE (default cuda; cpu checks the script),
# PYTHON (default python), TRAIN_STEPS (default 600), BENCH_ARGS (extra benchmark.py arguments, e.g.
# "--steps 2 --generation_runs 1").
# OUT gets one JSON per benchmark stage, train.jsonl (a line per training run), evaluate.json,
# evaluate_compiled.json and stages.log (each stage's exit status and the tail of its output); a result file is
# written only by a stage that succeeded. OUT must be new or empty: results of two runs are never mixed. The exit
# status is the number of stages that failed.
set -u
OUT=${1:?usage: scripts/benchmark_gpu.sh OUT [ED_FOLDER]}
DATA=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
LIMIT=${STAGE_SECONDS:-240}
DEVICE=${DEVICE:-cuda}
STEPS=${TRAIN_STEPS:-600}
STAGES=${STAGES:-bench_fp32 bench_bf16 bench_compiled bench_cudagraphs train evaluate}
KNOWN="bench_fp32 bench_bf16 bench_compiled bench_cudagraphs train evaluate"
BENCH_ARGS=${BENCH_ARGS:-}
PY=${PYTHON:-python}
for stage in $STAGES; do
  case " $KNOWN " in *" $stage "*) ;; *) echo "unknown stage $stage (stages: $KNOWN)" >&2; exit 2 ;; esac
done
mkdir -p "$OUT"
if [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then echo "$OUT is not empty: choose a new folder" >&2; exit 1; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOG="$OUT/stages.log"
FAILED=0

run_stage() {  # name, result file, command...: time-boxed; exit status and output tail into stages.log
  local name=$1 result=$2; shift 2
  local start=$SECONDS
  timeout -k 30 "$LIMIT" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  local status=$?
  if [ $status -eq 0 ] && [ -n "$result" ]; then cp "$WORK/$name.out" "$OUT/$result"; fi
  [ $status -eq 0 ] || FAILED=$((FAILED + 1))
  { echo "== $name: exit $status after $((SECONDS - start)) s (limit $LIMIT s; 124 = out of time)"
    tail -n 5 "$WORK/$name.err"; } >>"$LOG"
  return $status
}

bench() {  # name, benchmark.py arguments...
  local name=$1; shift
  run_stage "$name" "$name.json" "$PY" "$HERE/benchmark.py" --json --device "$DEVICE" --count_ops true \
    --inference_samples 256 $BENCH_ARGS "$@"
}

train_summary() {  # the key figures of a train_summary.json, as one JSON line
  "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1])); print(json.dumps({"run": sys.argv[2], **{k: s[k] for k in ("global_step", "train_seconds", "seconds_per_1000_steps")}}))' "$@"
}

for stage in $STAGES; do
  case $stage in
    bench_fp32) bench bench_fp32 ${DATA:+--data "$DATA"} ;;
    bench_bf16) bench bench_bf16 --dtype bfloat16 ${DATA:+--data "$DATA"} ;;
    bench_compiled) bench bench_compiled --compile true ;;
    bench_cudagraphs) bench bench_cudagraphs --compile true --compile_mode reduce-overhead ;;
    train | evaluate)
      if [ -z "$DATA" ]; then echo "== $stage: skipped (no ED_FOLDER)" >>"$LOG"; continue; fi
      if [ "$stage" = train ]; then
        for mode in eager compiled; do
          flags=(); [ "$mode" = compiled ] && flags=(--torch_compile true)
          [ "$DEVICE" = cpu ] && flags+=(--use_cpu true)
          run_stage "train_$mode" "" "$PY" "$HERE/train.py" --preset paper --data "$DATA" \
            --output_dir "$WORK/train_$mode" --max_steps "$STEPS" --eval_strategy no --save_strategy no \
            --report_to none --dataloader_num_workers 2 ${flags[@]+"${flags[@]}"} \
            && train_summary "$WORK/train_$mode/train_summary.json" "$mode" >>"$OUT/train.jsonl"
        done
      elif [ ! -f "$WORK/train_eager/config.json" ]; then
        echo "== evaluate: skipped (no trained model: run the train stage first)" >>"$LOG"
      else
        for mode in eager compiled; do
          flags=(); [ "$mode" = compiled ] && flags=(--torch_compile true)
          name=evaluate; [ "$mode" = compiled ] && name=evaluate_compiled
          run_stage "$name" "" "$PY" "$HERE/evaluate.py" --model_name_or_path "$WORK/train_eager" --data "$DATA" \
            --split valid --output_dir "$WORK/$name" --batch_size 128 --device "$DEVICE" ${flags[@]+"${flags[@]}"} \
            && cp "$WORK/$name/metrics.json" "$OUT/$name.json"
        done
      fi ;;
  esac
done
exit $FAILED
