#!/usr/bin/env sh
# sh tools/dist_test.sh CONFIG CHECKPOINT GPUS [ARGS...], e.g. --eval mIoU   (GPUS=1 works on CPU too)
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec sh "$(dirname "$0")/dist_launch.sh" test.py "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
