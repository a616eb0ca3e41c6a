#!/usr/bin/env bash
# sh tools/slurm_train.sh PARTITION JOB_NAME CONFIG [ARGS...]   (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS)
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" srun -p "$PARTITION" \
    --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    $SRUN_ARGS "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "$@"
