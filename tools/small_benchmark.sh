#!/usr/bin/env bash
# The external-tuning benchmark of the closing notes: registry optimizers x the
# four small CPU workloads, then the score table.
#
#   tools/small_benchmark.sh [EXPERIMENT_DIR]
#
# Environment: OPTIMIZERS (default: adamw nadamw radam adabound adamod adamp),
# WORKLOADS (default: the three tiny ones; stdlib_lm gets its own line below),
# STUDIES/TRIALS (default 3 x 5), LM_STUDIES/LM_TRIALS for stdlib_lm (default
# 1 x 3: a trial there is ~2 minutes of CPU), SPACE (default the learning-rate
# space experiments/search_spaces/learning_rate.json: every optimizer tunes its
# learning rate on log[1e-3, 1e-1], the rest at the registry's defaults),
# PIN (a CPU list for taskset, default: no pinning). Each trial's budget and
# eval period are the workload's; no checkpoints (they do not change times).
# Runs resume where they stopped (--resume_last_run is not needed: finished
# trials are kept, an unfinished one restarts).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/steplab_small_benchmark}
optimizers=${OPTIMIZERS:-adamw nadamw radam adabound adamod adamp}
workloads=${WORKLOADS:-mnist1d_mlp mnist1d_cnn logreg}
space=${SPACE:-experiments/search_spaces/learning_rate.json}
python=${PYTHON:-python}
pin=()
[[ -n "${PIN:-}" ]] && pin=(taskset -c "$PIN")

run() {  # workload optimizer studies trials
  local out="$dir/$2/$1"
  if [[ -f "$out/done" ]]; then return; fi
  "${pin[@]}" "$python" -m experiments.run --workload="$1" --optimizer="$2" \
    --num_studies="$3" --num_tuning_trials="$4" --tuning_search_space="$space" \
    --experiment_dir="$dir" --save_checkpoints=false --overwrite --rng_seed=0
  touch "$out/done"
}

for w in $workloads; do
  for o in $optimizers; do run "$w" "$o" "${STUDIES:-3}" "${TRIALS:-5}"; done
done
if [[ " ${LM:-stdlib_lm} " == *" stdlib_lm "* ]]; then
  for o in $optimizers; do run stdlib_lm "$o" "${LM_STUDIES:-1}" "${LM_TRIALS:-3}"; done
fi
"${pin[@]}" "$python" -m experiments.score --experiment_dir="$dir" --baseline=adamw
