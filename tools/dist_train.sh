#!/usr/bin/env sh
# sh tools/dist_train.sh CONFIG GPUS [ARGS...]   (NNODES, NODE_RANK, MASTER_ADDR, PORT for many nodes)
CONFIG=$1
GPUS=$2
shift 2
exec sh "$(dirname "$0")/dist_launch.sh" train.py "$GPUS" "$CONFIG" "$@"
