#!/usr/bin/env bash
# A whole study on a SLURM cluster: one shard of the study per array task, then one merge job.
#
#   bash scripts/slurm_study.sh a /data/hamfast-cache runs/a          # Experiment A, paper preset
#   SHARDS=8 PRESET=paper EXTRA="--runs 30" bash scripts/slurm_study.sh b /data/hamfast-cache runs/b
#
# What it submits:
#   1. a job array of SHARDS tasks; array task i runs `hamfast experiment ... --shard i/SHARDS`
#      on one GPU: the i-th of SHARDS disjoint parts of the study (whole runs, in plan order), its
#      tasks trained batched (--batch-models auto: as many models at once as the GPU's memory holds).
#      Each finished task is written at once to OUT/tasks/<task>.json on the shared file system.
#   2. a merge job that starts after every array task succeeded (--dependency=afterok): the same
#      command without --shard. It finds every task file, trains whatever is missing (nothing, if
#      all shards finished) and writes runs.csv, predictions.csv, summary.md and the plots.
#
# A shard that failed or ran out of time can simply be resubmitted (`sbatch --array=i ...`, or rerun
# this script): finished tasks are skipped. OUT must be on a file system every node sees.
# Adapt the #SBATCH resources (partition, account, time) to your cluster; set HAMFAST_SETUP to a
# command that makes `hamfast` available on the nodes (default: the repository's virtualenv).
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 a|b DATA OUT   (env: SHARDS=4 PRESET=paper EXTRA='...' PARTITION= TIME=24:00:00 ESTIMATE=1)" >&2
    exit 2
fi
WHICH=$1 DATA=$2 OUT=$3
SHARDS=${SHARDS:-4}
PRESET=${PRESET:-paper}
EXTRA=${EXTRA:-}
TIME=${TIME:-24:00:00}
PARTITION_OPT=${PARTITION:+--partition=$PARTITION}
SETUP=${HAMFAST_SETUP:-"source ${HAMFAST_VENV:-$HOME/.cache/hamfast/venv-cpu}/bin/activate"}
CMD="hamfast experiment $WHICH --data $DATA --out $OUT --preset $PRESET --device cuda $EXTRA"

mkdir -p "$OUT/slurm"
# ESTIMATE=1 first prints the expected wall time of the whole study, timed on this machine's device
# (on a login node without a GPU that is the CPU's; `srun --gres=gpu:1 ... --estimate` times a GPU).
if [[ -n "${ESTIMATE:-}" ]]; then
    bash -c "$SETUP && ${CMD/--device cuda/--device auto} --estimate"
fi

ARRAY_ID=$(sbatch --parsable $PARTITION_OPT --job-name="hamfast-$WHICH" --array="0-$((SHARDS - 1))" \
    --gres=gpu:1 --cpus-per-task=8 --mem=32G --time="$TIME" \
    --output="$OUT/slurm/shard-%a.log" \
    --wrap="$SETUP && $CMD --shard \${SLURM_ARRAY_TASK_ID}/$SHARDS")
echo "submitted shards: job array $ARRAY_ID (0-$((SHARDS - 1)))"

MERGE_ID=$(sbatch --parsable $PARTITION_OPT --job-name="hamfast-$WHICH-merge" --dependency="afterok:$ARRAY_ID" \
    --gres=gpu:1 --cpus-per-task=8 --mem=32G --time="$TIME" \
    --output="$OUT/slurm/merge.log" \
    --wrap="$SETUP && $CMD")
echo "submitted merge: job $MERGE_ID (after every shard succeeded); results in $OUT/summary.md"
