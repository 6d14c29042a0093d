#!/usr/bin/env bash
# Device check on a machine with a CUDA GPU (meant to finish within 8 minutes on one GPU):
#   1. the device-parametrized tests (the CPU and CUDA side by side);
#   2. one digits QAT on the GPU in bf16 against the same QAT on the CPU in fp32;
#   3. W4A4 QAT of the shared ResNet-20 (first/last layers at 8 bits) on the GPU and on this
#      machine's CPU: top-1 of both within 0.5 point, the wall times and their ratio;
#   4. ResNet-50 capture + simulate timings on the GPU (scripts/bench_scale.py);
#   5. with two or more GPUs, a two-process NCCL QAT whose ranks must hold identical models.
# The exit status is non-zero when a check fails. Results stay in the folder printed first.
#
#     bash scripts/gpu_check.sh
#
# CODESIGN_SHARED: the folder with checkpoints/ and data/cifar10-subset (default ../shared).
# GPU_CHECK_SMOKE=1: the same plumbing in a minute, on the CPU where there is no GPU: one
# device test, digits instead of ResNet-20 (1 epoch), ResNet-20 instead of ResNet-50 for
# the timings. Its figures check the script, not a device.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the script too
cd "$(dirname "$0")/.."
smoke=${GPU_CHECK_SMOKE:-0}
shared=${CODESIGN_SHARED:-../shared}
if python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  gpu=cuda
  python -c 'import torch; print("GPU:", torch.cuda.get_device_name(0))'
elif [ "$smoke" = 1 ]; then
  gpu=cpu
  echo "no CUDA GPU visible (torch.cuda.is_available() is False): smoke run, the CUDA side runs on the CPU and CUDA-only parts are skipped"
else
  echo "no CUDA GPU visible (torch.cuda.is_available() is False): nothing to check on a GPU; GPU_CHECK_SMOKE=1 runs the plumbing on the CPU" >&2
  exit 1
fi
out=$(mktemp -d)
echo "results in $out"

# Wall seconds of a command (its output discarded).
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null || return
  end=$(date +%s.%N)
  python -c "print(f'{$end - $start:.1f}')"
}

echo "== 1. device-parametrized tests"
if [ "$smoke" = 1 ]; then
  python -m pytest -q -x tests/test_devices.py -k capture
else
  python -m pytest -q -x tests/test_devices.py tests/test_runtime.py
fi

echo "== 2. digits QAT: bf16 on the GPU against fp32 on the CPU"
digits=(qat --checkpoint checkpoints/resnet8-digits.pt --weight-bits 4 --act-bits 4 --quiet)
if [ "$smoke" = 1 ]; then digits+=(--epochs 1 --calib-samples 64); else digits+=(--epochs 2 --calib-samples 256); fi
if [ "$gpu" = cuda ]; then
  python -m codesign "${digits[@]}" --device cuda --amp bf16 --out "$out/digits-bf16" > /dev/null
  python -m codesign "${digits[@]}" --device cpu --out "$out/digits-cpu" > /dev/null
  python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
gpu, cpu = (json.loads((out / n / "result.json").read_text()) for n in ("digits-bf16", "digits-cpu"))
print("bf16 on", gpu["runtime"]["device_name"], "quant_top1", gpu["quant_top1"], "| cpu fp32", cpu["quant_top1"])
assert gpu["runtime"]["amp"] == "bf16" and gpu["runtime"]["device"].startswith("cuda")
assert abs(gpu["quant_top1"] - cpu["quant_top1"]) <= 1.5, "bf16 QAT on the GPU strays from the CPU"
PY
else
  echo "skipped: bf16 on a GPU needs CUDA"
fi

echo "== 3. W4A4 QAT of the shared ResNet-20 on the GPU and on the CPU"
if [ "$smoke" = 1 ]; then
  qat=("${digits[@]}")
else
  checkpoint=$shared/checkpoints/resnet20-cifar10-idelbayev.th
  data=$shared/data/cifar10-subset
  if [ ! -f "$checkpoint" ] || [ ! -d "$data" ]; then
    echo "missing $checkpoint or $data: set CODESIGN_SHARED to the folder holding checkpoints/ and data/" >&2
    exit 1
  fi
  qat=(qat --checkpoint "$checkpoint" --data "imagefolder:$data" --weight-bits 4 --act-bits 4
       --keep-8bit first,last --quiet)
fi
gpu_s=$(timed python -m codesign "${qat[@]}" --device "$gpu" --out "$out/qat-gpu")
cpu_s=$(timed python -m codesign "${qat[@]}" --device cpu --out "$out/qat-cpu")
python - "$out" "$gpu_s" "$cpu_s" <<'PY'
import json, sys
from pathlib import Path
out, gpu_s, cpu_s = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
gpu, cpu = (json.loads((out / n / "result.json").read_text()) for n in ("qat-gpu", "qat-cpu"))
diff = abs(gpu["quant_top1"] - cpu["quant_top1"])
print(f"{gpu['runtime']['device_name']}: top-1 {gpu['quant_top1']:.2f} % in {gpu_s:.1f} s wall")
print(f"{cpu['runtime']['device_name']} ({cpu['runtime']['threads']} threads): top-1 {cpu['quant_top1']:.2f} % in {cpu_s:.1f} s wall")
print(f"|difference| {diff:.2f} point (limit 0.5); CPU wall / GPU wall = {cpu_s / gpu_s:.2f}")
assert diff <= 0.5, "QAT on the GPU strays more than 0.5 point from the CPU"
PY

echo "== 4. capture + simulate timings on the GPU"
if [ "$smoke" = 1 ]; then
  python scripts/bench_scale.py --device "$gpu" --hw-models resnet20 --ptq-models --images 4 --batch 4 --rounds 1
else
  python scripts/bench_scale.py --device cuda --hw-models resnet50 --ptq-models --images 64 --batch 16 --rounds 1
fi

echo "== 5. two NCCL ranks"
if [ "$gpu" = cuda ] && [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  CODESIGN_RANK_DIGEST_DIR="$out/digests" python -m torch.distributed.run --standalone \
    --nproc-per-node 2 -m codesign "${digits[@]}" --device cuda --out "$out/nccl" > /dev/null
  cmp "$out/digests/qat-rank0.txt" "$out/digests/qat-rank1.txt"
  echo "two NCCL ranks hold identical models"
else
  echo "skipped: needs two or more CUDA GPUs"
fi
if [ "$smoke" = 1 ]; then
  echo "smoke run passed (its figures check the script, not a device)"
else
  echo "device check passed"
fi
