#!/usr/bin/env bash
# On the lent GPU machine: build mmcv's CUDA ops (for Mask R-CNN's RoIAlign/NMS on the GPU) in a detached
# session, because the build outlasts one device call; later calls wait for it (see RESULTS.md).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
if [ ! -f /tmp/mmcv-cuda.started ]; then
  touch /tmp/mmcv-cuda.started
  FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 setsid nohup python3 tools/build_mmcv.py \
      --source .whl/mmcv-2.1.0.tar.gz --cache-dir /tmp/mmcv-cache > /tmp/mmcv-cuda.log 2>&1 < /dev/null &
fi
t0=$(date +%s)
while pgrep -f build_mmcv.py > /dev/null && [ $(( $(date +%s) - t0 )) -lt ${WAIT:-560} ]; do sleep 10; done
tail -3 /tmp/mmcv-cuda.log
ls /tmp/mmcv-cache/wheels/*/ 2>/dev/null
