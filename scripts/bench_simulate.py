"""Benchmark: capture + every shipped hardware recipe, beside the plain forward time.

Targets: ResNet-50 at 224x224, batch 1, <= 5 s wall; CIFAR ResNet-20 on 256 images
<= 3 s. The mapping cache is cleared before each run so every dense search is paid for.
Random inputs stand in for data (the cost does not depend on pixel values); ResNet-20 inputs
go through its ReLUs, so activation sparsity is real.

Threads: ``--threads`` (default 1). On a small machine shared with other jobs, torch's
multi-thread kernels wait on a descheduled worker after every op, so 1 is the robust default.

Run: python scripts/bench_simulate.py [--threads N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torchvision

from codesign.hw.arch import load_arch
from codesign.hw.capture import capture
from codesign.hw.dense import best_mapping
from codesign.hw.simulate import simulate, summarize

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes" / "hardware").glob("*.toml"))


def resnet20() -> torch.nn.Module:
    from codesign.models import create_model

    return create_model("resnet20")


def bench(
    name: str, model: torch.nn.Module, images: torch.Tensor, batch: int, budget_s: float
) -> None:
    model.eval()
    archs = [load_arch(path) for path in RECIPES]

    def forward_loop(m: torch.nn.Module) -> None:
        for start in range(0, len(images), batch):
            m(images[start : start + batch])

    with torch.no_grad():
        forward_loop(model)  # warm-up: allocator and kernel selection, not ours to count
        t0 = time.perf_counter()
        forward_loop(model)
        forward_s = time.perf_counter() - t0
    best_mapping.cache_clear()
    t0 = time.perf_counter()
    records = capture(model, forward_loop)
    capture_s = time.perf_counter() - t0
    per_arch = {}
    for arch in archs:
        t1 = time.perf_counter()
        summarize(simulate(records, arch), arch.name)
        per_arch[arch.name] = time.perf_counter() - t1
    total_s = time.perf_counter() - t0
    verdict = "ok" if total_s <= budget_s else "OVER BUDGET"
    print(f"{name}: {len(records)} layers, {len(images)} images")
    print(f"  plain forward      {forward_s:6.2f} s")
    print(f"  capture            {capture_s:6.2f} s")
    for arch_name, seconds in per_arch.items():
        print(f"  {arch_name:18s} {seconds:6.2f} s")
    print(f"  capture + {len(archs)} recipes {total_s:6.2f} s (budget {budget_s} s: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}")
    bench("ResNet-50 224x224", torchvision.models.resnet50(), torch.randn(1, 3, 224, 224), 1, 5.0)
    bench("ResNet-20 CIFAR", resnet20(), torch.randn(256, 3, 32, 32), 256, 3.0)


if __name__ == "__main__":
    main()
