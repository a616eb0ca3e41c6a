#!/usr/bin/env sh
# Shared by dist_train.sh and dist_test.sh: torchrun SCRIPT on NPROC processes per node.
# NNODES, NODE_RANK, MASTER_ADDR and PORT come from the environment for many nodes, as in OpenMMLab;
# PYTHON defaults to the project's .venv when there is one.
# The arguments are checked before torchrun starts (one line, no process started); if a process fails
# later, its one-line error is printed again after torchrun's report, as the last line.
SCRIPT=$1
NPROC=$2
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -m mae_dense.cli.launch_check "$SCRIPT" "$@" || exit 1
MAE_DENSE_ERROR_FILE=$(mktemp) || exit 1
export MAE_DENSE_ERROR_FILE
"$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" --master_port="${PORT:-29500}" \
    "$ROOT/tools/$SCRIPT" --launcher pytorch "$@"
rc=$?
if [ "$rc" -ne 0 ] && [ -s "$MAE_DENSE_ERROR_FILE" ]; then
  cat "$MAE_DENSE_ERROR_FILE" >&2
fi
rm -f "$MAE_DENSE_ERROR_FILE"
exit "$rc"
