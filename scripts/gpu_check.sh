#!/usr/bin/env bash
# Device check on a machine with a CUDA GPU (a few minutes): the device-parametrized tests
# (the CPU and CUDA side by side), one digits QAT on the GPU in bf16, and with two or more
# GPUs a two-process NCCL QAT whose ranks must hold identical models.
#
#     bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))"
python -m pytest -q -x tests/test_devices.py tests/test_runtime.py
out=$(mktemp -d)
qat=(qat --checkpoint checkpoints/resnet8-digits.pt --weight-bits 4 --act-bits 4 --epochs 2
     --calib-samples 256 --quiet)
python -m codesign "${qat[@]}" --device cuda --amp bf16 --out "$out/bf16" > /dev/null
python -m codesign "${qat[@]}" --device cpu --out "$out/cpu" > /dev/null
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
gpu, cpu = (json.loads((out / name / "result.json").read_text()) for name in ("bf16", "cpu"))
print("bf16 on", gpu["runtime"]["device_name"], "quant_top1", gpu["quant_top1"], "| cpu fp32", cpu["quant_top1"])
assert gpu["runtime"]["amp"] == "bf16" and gpu["runtime"]["device"].startswith("cuda")
assert abs(gpu["quant_top1"] - cpu["quant_top1"]) <= 1.5, "bf16 QAT on the GPU strays from the CPU"
PY
if [ "$(python -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  CODESIGN_RANK_DIGEST_DIR="$out/digests" python -m torch.distributed.run --standalone \
    --nproc-per-node 2 -m codesign "${qat[@]}" --device cuda --out "$out/nccl" > /dev/null
  cmp "$out/digests/qat-rank0.txt" "$out/digests/qat-rank1.txt"
  echo "two NCCL ranks hold identical models"
fi
echo "device check passed"
