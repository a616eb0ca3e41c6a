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
# Does this GPU's SDPA return the gradient of a trainable bias (cuDNN's may not)? The layers check it at run
# time and fall back to eager; this records the answer per dtype at the seg shapes (1025 tokens, ViT-B).
python3 - <<'PY' 2>&1 | tee "$OUT/sdpa_bias_grad.txt"
import torch
from mae_dense.layers.attention import sdpa_returns_bias_grad
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    qkv = torch.empty(8, 1025, 3, 12, 64, device='cuda', dtype=dtype).permute(2, 0, 3, 1, 4)
    print('sdpa bias grad', dtype, sdpa_returns_bias_grad(qkv[0], torch.empty(1, 12, 1025, 1025, device='cuda')))
PY
# Segmentation and pretraining need no compiled mmcv op on the GPU: CPU ops build in ~2 min on 16 cores.
t0=$(date +%s)
FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=16 python3 tools/build_mmcv.py --source .whl/mmcv-2.1.0.tar.gz \
    --cache-dir /tmp/mmcv-cache > "$OUT/mmcv_build.log" 2>&1 || { tail -20 "$OUT/mmcv_build.log"; exit 1; }
echo "mmcv build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/env.txt"
run() {  # name, command...
  local name=$1; shift
  echo "== $name: $*"
  timeout "${TIMEOUT:-240}" "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  echo "rc=$?"; grep -v -i warn "$OUT/$name.log" | grep -A9 -E '^(seg-mode|slide|train step|AdamW|MAE|ms\+flip|backbone)' | grep -v '^--$'
}
# Each bench compares mae-dense with its reference in the same run; the flex/compile/fused rows come from
# the options below (benchmarks/RESULTS.md lists what each row means).
for b in ${BENCHES:-backbone segmentation ms_flip pretrain_large pretrain_base seg_loss}; do
  case $b in
    backbone) run backbone python3 benchmarks/bench_backbone.py --device cuda --full --iters 10 --compile ;;
    segmentation) run segmentation python3 benchmarks/bench_segmentation.py --device cuda --full --iters 5 \
                    --attn-impl auto --compile ;;
    ms_flip) run ms_flip python3 benchmarks/bench_ms_flip.py --device cuda --arch base --image 512 683 ;;
    pretrain_large) run pretrain_large python3 benchmarks/bench_pretrain.py --device cuda --arch large --batch 128 \
                      --compile --fused ;;
    pretrain_base) run pretrain_base python3 benchmarks/bench_pretrain.py --device cuda --arch base --batch 256 \
                     --compile --fused ;;
    detection) run detection python3 benchmarks/bench_detection.py --device cuda --full --compile ;;
    detection_large) run detection_large python3 benchmarks/bench_detection.py --device cuda --full --arch large ;;
    seg_loss) run seg_loss python3 benchmarks/bench_seg_loss.py --device cuda --batch 16 ;;
    loader) run loader python3 benchmarks/bench_loader.py --device cuda --workers 4 8 16 --batch 128 ;;
  esac
done
