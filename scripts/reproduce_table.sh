#!/usr/bin/env bash
# Train the paper's Table-1 variants that need no COMET knowledge side by side (one process each, sharing one GPU
# or the CPU), evaluate each on the validation split, and print the results table.
#
#   scripts/reproduce_table.sh DATA_DIR OUT_DIR [TRAIN_SECONDS]
#
# Runs (implicit association is off in all of them: no knowledge):
#   paper_woIA         --preset paper as is (17.6k steps, warm-up 8000, validation every 800 steps from 10k)
#   reduced_woIA       the paper recipe on a shorter schedule: warm-up 4000, 10k steps, validation from 4000
#   reduced_woIA_woEA  ... without explicit association either: no association at all, so no memory and no word
#                      selector (the paper's w/o-EA row keeps the implicit branch, which needs knowledge)
#   reduced_woIA_woWS  ... without the word selector
# and evaluations of paper_woIA and reduced_woIA without the situation text (test-time switch).
# TRAIN_SECONDS (default: none) caps each training run's wall time (it then stops after a last evaluation);
# the table says how many steps each run took. RUNS="reduced_woIA ..." trains only those runs (default: all four).
# EXTRA_TRAIN_ARGS / EXTRA_EVAL_ARGS are appended to every call.
set -uo pipefail
DATA=$1
OUT=$2
BUDGET=${3:-}
mkdir -p "$OUT"
if [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then echo "$OUT is not empty: choose a new folder" >&2; exit 1; fi
HERE=$(cd "$(dirname "$0")" && pwd)
REDUCED=(--noam_warmup_steps 4000 --max_steps 10000 --eval_start_step 4000)
RUNS=${RUNS:-paper_woIA reduced_woIA reduced_woIA_woEA reduced_woIA_woWS}
wanted() { [[ " $RUNS " == *" $1 "* ]]; }
BUDGET_ARGS=()
[ -n "$BUDGET" ] && BUDGET_ARGS=(--max_train_seconds "$BUDGET")

train() {
  local name=$1; shift
  python "$HERE/train.py" --preset paper --data "$DATA" --output_dir "$OUT/$name" --report_to none \
    --dataloader_num_workers 2 --disable_tqdm true "${BUDGET_ARGS[@]}" "$@" ${EXTRA_TRAIN_ARGS:-} \
    >"$OUT/$name.train.log" 2>&1
}
evaluate() {
  local name=$1 model=$2; shift 2
  python "$HERE/evaluate.py" --model_name_or_path "$OUT/$model" --data "$DATA" --split valid \
    --output_dir "$OUT/eval_$name" --batch_size 128 --with_associations false "$@" ${EXTRA_EVAL_ARGS:-} \
    >"$OUT/eval_$name.log" 2>&1
}

declare -A pids
wanted paper_woIA && { train paper_woIA & pids[paper_woIA]=$!; }
wanted reduced_woIA && { train reduced_woIA "${REDUCED[@]}" & pids[reduced_woIA]=$!; }
wanted reduced_woIA_woEA && { train reduced_woIA_woEA "${REDUCED[@]}" --use_explicit_association false \
  --use_word_selector false & pids[reduced_woIA_woEA]=$!; }
wanted reduced_woIA_woWS && { train reduced_woIA_woWS "${REDUCED[@]}" --use_word_selector false & pids[reduced_woIA_woWS]=$!; }
trained=()
for name in "${!pids[@]}"; do
  if wait "${pids[$name]}"; then trained+=("$name"); else echo "training $name FAILED (see $OUT/$name.train.log)" >&2; tail -5 "$OUT/$name.train.log" >&2; fi
done

epids=()
for name in "${trained[@]}"; do
  evaluate "$name" "$name" & epids+=($!)
  case $name in paper_woIA|reduced_woIA) evaluate "${name}_nosituation" "$name" --use_situation false & epids+=($!);; esac
done
status=0
for pid in "${epids[@]}"; do wait "$pid" || status=1; done
[ $status -ne 0 ] && echo "an evaluation FAILED (see $OUT/eval_*.log)" >&2
python "$HERE/results_table.py" --runs_dir "$OUT" --json_output "$OUT/results.json"
exit $status
