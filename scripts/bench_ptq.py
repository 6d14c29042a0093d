"""Benchmark: W8A8 PTQ of ResNet-20 (512 calibration images) plus evaluation on test/.

Prints the wall time beside a plain FP32 evaluation of the same data in the same run
(target: <= 10 s, and within 4x the FP32 evaluation). Data loading is timed separately.

    python scripts/bench_ptq.py [--checkpoint C] [--data imagefolder:DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from codesign.config import QuantSpec
from codesign.data import evaluate, load_dataset
from codesign.pipeline import load_model, run_ptq

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", default=str(SHARED / "checkpoints/resnet20-cifar10-idelbayev.th")
    )
    parser.add_argument("--data", default=f"imagefolder:{SHARED / 'data/cifar10-subset'}")
    parser.add_argument("--weight-bits", type=int, default=8)
    parser.add_argument("--act-bits", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    started = time.perf_counter()
    dataset = load_dataset(args.data)
    model, _, _ = load_model(args.checkpoint)
    load_seconds = time.perf_counter() - started

    evaluate(model, dataset.test.take(64))  # warm-up: first-call allocations
    started = time.perf_counter()
    fp32 = evaluate(model, dataset.test)
    fp32_seconds = time.perf_counter() - started

    spec = QuantSpec(weight_bits=args.weight_bits, act_bits=args.act_bits)
    started = time.perf_counter()
    quantized, info = run_ptq(model, dataset, spec, 512)
    quant = evaluate(quantized, dataset.test)
    ptq_seconds = time.perf_counter() - started

    print(f"data + checkpoint load         {load_seconds:6.2f} s")
    print(
        f"FP32 eval ({fp32['samples']} images)      {fp32_seconds:6.2f} s   top1 {fp32['top1']:.2f} %"
    )
    print(
        f"W{args.weight_bits}A{args.act_bits} PTQ (512 calib) + eval  {ptq_seconds:6.2f} s   "
        f"top1 {quant['top1']:.2f} %  (calibration {info['calib_seconds']:.2f} s)"
    )
    print(f"ratio to FP32 eval             {ptq_seconds / fp32_seconds:6.2f} x")


if __name__ == "__main__":
    main()
