#!/usr/bin/env bash
# The benchmarks on the lent GPU machine (device tool): offline set-up from wheels carried in .whl/
# (see benchmarks/RESULTS.md), mmcv built from its source archive by tools/build_mmcv.py, then every
# benchmark with its JSON and log under $OUT.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc;
  python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'; } | tee "$OUT/env.txt"
# Segmentation and pretraining need no compiled mmcv op on the GPU: CPU ops build in ~2 min on 16 cores.
t0=$(date +%s)
FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=16 python3 tools/build_mmcv.py --source .whl/mmcv-2.1.0.tar.gz \
    --cache-dir /tmp/mmcv-cache > "$OUT/mmcv_build.log" 2>&1 || { tail -20 "$OUT/mmcv_build.log"; exit 1; }
echo "mmcv build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
run() {  # name, command...
  local name=$1; shift
  echo "== $name: $*"
  timeout 240 "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  echo "rc=$?"; grep -v -i warn "$OUT/$name.log" | grep -A8 -E '^(seg-mode|slide|train step|MAE pretraining)' | grep -v '^--$'
}
for b in ${BENCHES:-backbone segmentation pretrain_large pretrain_base}; do
  case $b in
    backbone) run backbone python3 benchmarks/bench_backbone.py --device cuda --full --iters 10 ;;
    segmentation) run segmentation python3 benchmarks/bench_segmentation.py --device cuda --full --iters 5 ;;
    pretrain_large) run pretrain_large python3 benchmarks/bench_pretrain.py --device cuda --arch large --batch 128 ;;
    pretrain_base) run pretrain_base python3 benchmarks/bench_pretrain.py --device cuda --arch base --batch 256 ;;
    detection) run detection python3 benchmarks/bench_detection.py --device cuda --full ;;
  esac
done
