#!/usr/bin/env bash
# sh tools/slurm_train.sh PARTITION JOB_NAME CONFIG [ARGS...]
#   GPUS (all tasks, 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS, PORT (rendezvous port, 29500), PYTHON.
# One task per GPU; mmengine's slurm launcher reads SLURM_PROCID/SLURM_NTASKS/SLURM_NODELIST and makes the
# first node the master. E.g. MAE ViT-L on 2 nodes x 8 GPUs, keeping the recipe's effective batch 4096
# (16 GPUs x 256 x 1; the lr follows the effective batch, see configs/pretrain/_base_mae_in1k.py):
#   GPUS=16 sh tools/slurm_train.sh gpu mae-l configs/pretrain/mae_vit-large-p16_8xb512-amp-coslr-1600e_in1k.py \
#       --cfg-options train_dataloader.batch_size=256
# A requeued job resumes from its work dir's latest checkpoint (the pretraining configs set resume=True).
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
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
# two jobs sharing a node need two ports
export MASTER_PORT=${PORT:-${MASTER_PORT:-29500}}
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" srun -p "$PARTITION" \
    --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 \
    $SRUN_ARGS "$PYTHON" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "$@"
