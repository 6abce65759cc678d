#!/usr/bin/env bash
# A whole study on a SLURM cluster: one shard of the study per array task, then one merge job.
#
#   bash scripts/slurm_study.sh a /data/hamfast-cache /shared/runs/a         # Experiment A, paper preset
#   SHARDS=8 EXTRA="--runs 30" SBATCH_ARGS="--account=proj --qos=normal" \
#       HAMFAST_SETUP=". /shared/venvs/hamfast-gpu/bin/activate" bash scripts/slurm_study.sh b /data/cache /shared/runs/b
#
# What it submits:
#   1. a job array of SHARDS tasks; array task i runs `hamfast experiment ... --shard i/SHARDS`:
#      the i-th of SHARDS disjoint parts of the study (contiguous blocks of the task list, in plan
#      order), trained with --batch-models auto (on a GPU: as many models at once as its memory holds).
#      Each finished task is written at once to OUT/tasks/<task>.json on the shared file system.
#   2. a merge job (no GPU) that starts after every array task succeeded (--dependency=afterok) and
#      is cancelled when one failed (--kill-on-invalid-dep=yes): the same command without --shard.
#      It finds every task file and writes runs.csv, predictions.csv, summary.md and the plots.
# Logs: OUT/slurm/shard-<array job>_<i>.log and OUT/slurm/merge-<job>.log (a resubmission keeps the old ones).
#
# Settings (environment variables):
#   SHARDS=4  PRESET=paper  EXTRA='...' (more `hamfast experiment` options)  TIME=24:00:00
#   PARTITION=  (-> --partition)
#   SBATCH_ARGS='...'  sbatch options for both jobs (--account, --qos, --constraint, --mail-type, ...)
#   DEVICE=cuda  SHARD_RESOURCES='--gres=gpu:1 --cpus-per-task=8 --mem=32G'  (each shard)
#   MERGE_DEVICE=auto  MERGE_RESOURCES='--cpus-per-task=2 --mem=16G'  (the merge job)
#   HAMFAST_SETUP=  a POSIX sh command run on the node first (jobs run /bin/sh: `.`, not `source`),
#       e.g. ". /shared/venv/bin/activate" or "module load cuda && . /shared/venv/bin/activate";
#       then `hamfast` is found on the node's PATH.
#   HAMFAST=  the hamfast executable, when HAMFAST_SETUP is unset. Default: the `hamfast` on this
#       shell's PATH, else this checkout's launcher (build/bin/hamfast, made by scripts/setup_env.sh,
#       which this script then sources: the CPU virtualenv, so set DEVICE=cpu SHARD_RESOURCES=... or
#       HAMFAST_VENV to a GPU virtualenv). A job inherits the environment of this shell.
#   ESTIMATE=1  first print the expected wall time, timed on this machine's device.
#
# A shard that failed or ran out of time can simply be resubmitted (`sbatch --array=i ...`, or rerun
# this script): finished tasks are skipped. OUT must be on a file system every node sees.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 a|b DATA OUT   (env: SHARDS=4 PRESET=paper EXTRA='...' SBATCH_ARGS='...' DEVICE=cuda" \
         "SHARD_RESOURCES='...' MERGE_RESOURCES='...' HAMFAST_SETUP='. venv/bin/activate' TIME=24:00:00 ESTIMATE=1)" >&2
    exit 2
fi
WHICH=$1 DATA=$2 OUT=$3
SHARDS=${SHARDS:-4}
PRESET=${PRESET:-paper}
EXTRA=${EXTRA:-}
TIME=${TIME:-24:00:00}
DEVICE=${DEVICE:-cuda}
MERGE_DEVICE=${MERGE_DEVICE:-auto}
SHARD_RESOURCES=${SHARD_RESOURCES---gres=gpu:1 --cpus-per-task=8 --mem=32G}
MERGE_RESOURCES=${MERGE_RESOURCES---cpus-per-task=2 --mem=16G}
SBATCH_ARGS=${SBATCH_ARGS:-}
if [[ ! $SHARDS =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: SHARDS must be a whole number >= 1, got '$SHARDS'" >&2
    exit 2
fi

if [[ -n "${HAMFAST_SETUP:-}" ]]; then
    SETUP="$HAMFAST_SETUP"
    HAMFAST=${HAMFAST:-hamfast}
else
    SETUP=true
    if [[ -z "${HAMFAST:-}" ]]; then
        HAMFAST=$(type -P hamfast || true)  # an executable, never a shell function (jobs cannot see those)
        if [[ -z "$HAMFAST" ]]; then
            # shellcheck disable=SC1091
            source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" >&2
            HAMFAST=$(type -P hamfast)
        fi
    fi
fi
OUT=$(mkdir -p "$OUT/slurm" && cd "$OUT" && pwd)  # absolute: jobs may start in another folder
args=(experiment "$WHICH" --data "$DATA" --out "$OUT" --preset "$PRESET")
CMD="$(printf '%q ' "$HAMFAST" "${args[@]}")$EXTRA"
PARTITION_OPT=${PARTITION:+--partition=$PARTITION}

if [[ -n "${ESTIMATE:-}" ]]; then
    sh -c "$SETUP && $CMD --device auto --estimate"
fi

# shellcheck disable=SC2086  # SBATCH_ARGS and the resources are lists of options
ARRAY_ID=$(sbatch --parsable $PARTITION_OPT $SBATCH_ARGS $SHARD_RESOURCES --job-name="hamfast-$WHICH" \
    --array="0-$((SHARDS - 1))" --time="$TIME" --output="$OUT/slurm/shard-%A_%a.log" \
    --wrap="$SETUP && $CMD --device $DEVICE --shard \${SLURM_ARRAY_TASK_ID}/$SHARDS")
ARRAY_ID=${ARRAY_ID%%;*}  # "id;cluster" on multi-cluster set-ups
echo "submitted shards: job array $ARRAY_ID (0-$((SHARDS - 1))), logs in $OUT/slurm/"

# shellcheck disable=SC2086
MERGE_ID=$(sbatch --parsable $PARTITION_OPT $SBATCH_ARGS $MERGE_RESOURCES --job-name="hamfast-$WHICH-merge" \
    --dependency="afterok:$ARRAY_ID" --kill-on-invalid-dep=yes --time="$TIME" --output="$OUT/slurm/merge-%j.log" \
    --wrap="$SETUP && $CMD --device $MERGE_DEVICE")
MERGE_ID=${MERGE_ID%%;*}
echo "submitted merge: job $MERGE_ID (after every shard succeeded; cancelled if one fails); results in $OUT/summary.md"
