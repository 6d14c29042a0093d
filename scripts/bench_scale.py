"""Benchmark: how the hardware model and the layer-wise solvers scale to ImageNet-size models.

Two parts, each model and solver in its own subprocess so that every peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss`` of that process: interpreter, torch, model, data and
the work) belongs to one measurement only.

1. Hardware (``--hw-models``, default resnet50 at 224x224): the plain forward passes over
   ``--images`` random images at batch ``--batch``, then ``capture`` + every bundled datapath
   (``recipes/hardware``, each ``simulate`` + ``summarize``) over the same images, in the same
   process. The forward is timed once before and once after the capture (after a warm-up
   pass) and the ratio divides by their mean, so load that drifts during the run shifts both
   sides; the same ratio in process CPU time is printed beside it (less sensitive to other
   jobs on a shared machine). ``--rounds`` repeats this (default 3, the median reported). The dense mapping cache is cleared first: every search is paid for, as in a fresh
   ``codesign simulate``. Target: capture + simulate within 1.5x the forward, peak RSS < 2 GB.
2. Solvers (``--ptq-models``, default resnet20 resnet56 resnet50): AdaRound through
   ``codesign.quant.calibrate`` (W4A8, method adaround), SparseGPT through
   ``codesign.sparsity.apply.prune_model_`` (method sparsegpt, 50 % per layer), and GPTQ when
   the build has a ``gptq`` PTQ method, on ``--calib`` random calibration images (32x32 for
   the CIFAR ResNets, 224x224 for resnet50). ``--solver-layers N`` runs the solver on N layers
   spread evenly over the depth (the others keep 8-bit weights / stay dense; 0 = every
   layer; default: every layer of a CIFAR ResNet, 8 of an ImageNet one, whose large layers
   take minutes each): seconds per layer are for those layers, and AdaRound's peak RSS,
   which holds the float inputs of every chosen layer at once, grows with N.

Allocator (``--allocator``): by default every child preloads jemalloc with page decay off
(``JEMALLOC_CONF``), so the forward and the capture both reuse freed activation memory;
``--allocator default`` (and a machine without jemalloc) measures glibc's malloc, where
either side may page-fault its activations in afresh on any pass. The minor page faults of the forward and of
the capture are printed, so the state each ran in is visible.

Random inputs stand in for images: neither cost depends on pixel values (the ReLUs still make
activations sparse). Threads: ``--threads`` (default 1; on a small shared machine torch's
multi-thread kernels wait on descheduled workers). ``--device`` (default cpu; ``cuda``,
``cuda:N``): where the model, the images, the capture and the solvers run (the datapath
simulators read the captured records on the CPU); on a GPU every timestamp waits for the
device's queued work (``torch.cuda.synchronize``), and the peak GPU memory is printed. The
CPU-time ratio is a CPU measure: on a GPU it counts the host's share only. The exit status is
1 when a measurement failed.

Run: python scripts/bench_scale.py [--quick] [--device cpu|cuda] [--hw-models M ...]
     [--ptq-models M ...] [--solvers adaround sparsegpt gptq] [--images 64] [--batch 16]
     [--calib 64]
"""

from __future__ import annotations

import argparse
import copy
import ctypes.util
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

SOLVERS = ("adaround", "sparsegpt", "gptq")


def peak_rss_mb() -> float:
    """Peak resident set of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_and_images(name: str, count: int, device: str = "cpu") -> tuple[nn.Module, torch.Tensor]:
    """The model and ``count`` random images on ``device`` (drawn on the CPU: the same values
    on every device)."""
    from codesign.models import create_model
    from codesign.models.registry import is_cifar_model

    size = 32 if is_cifar_model(name) else 224
    torch.manual_seed(0)
    images = torch.randn(count, 3, size, size).to(device)
    return create_model(name).eval().to(device), images


def minor_faults() -> int:
    """Minor page faults of this process so far (fresh pages touched)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def now_s(device: str) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` is done (a GPU runs
    asynchronously: without the wait a timer measures only the launches)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter()


def peak_gpu_mb(device: str) -> float | None:
    """Peak GPU memory allocated by torch in this process, in MiB (None on the CPU)."""
    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def batched_loop(images: torch.Tensor, batch: int) -> Any:
    def forward_loop(model: nn.Module) -> None:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                model(images[start : start + batch])

    return forward_loop


def spread(names: list[str], count: int) -> list[str]:
    """``count`` names evenly spaced over ``names`` (first and last included); all if 0."""
    if count <= 0 or count >= len(names):
        return names
    step = (len(names) - 1) / max(count - 1, 1)
    return [names[round(i * step)] for i in range(count)]


# -- children: one measurement per process --------------------------------------------------


def hw_round(model: nn.Module, loop: Any, archs: list[Any], device: str) -> dict[str, Any]:
    """One round: the plain forward, capture + every datapath, the plain forward again."""
    from codesign.hw import capture, simulate, summarize
    from codesign.hw.dense import best_mapping

    faults = minor_faults()
    started, cpu = now_s(device), time.process_time()
    loop(model)
    forward_before_s = now_s(device) - started
    forward_cpu_s = time.process_time() - cpu
    forward_faults = minor_faults() - faults

    best_mapping.cache_clear()  # every mapping search is paid for, as in a fresh process
    faults = minor_faults()
    started, cpu = now_s(device), time.process_time()
    records = capture(model, loop)
    capture_s = now_s(device) - started
    capture_faults = minor_faults() - faults
    simulate_s: dict[str, float] = {}
    for arch in archs:
        t0 = time.perf_counter()
        summarize(simulate(records, arch), arch.name)
        simulate_s[arch.name] = time.perf_counter() - t0
    total_s = now_s(device) - started
    total_cpu_s = time.process_time() - cpu
    layers = len(records)
    del records  # the next round's must not coexist with these

    started, cpu = now_s(device), time.process_time()
    loop(model)
    forward_after_s = now_s(device) - started
    forward_cpu_s += time.process_time() - cpu
    return {
        "layers": layers,
        "forward_before_s": forward_before_s,
        "forward_after_s": forward_after_s,
        "capture_s": capture_s,
        "forward_faults": forward_faults,
        "capture_faults": capture_faults,
        "simulate_s": simulate_s,
        "total_s": total_s,
        "ratio": total_s / ((forward_before_s + forward_after_s) / 2),
        "cpu_ratio": total_cpu_s / (forward_cpu_s / 2),
    }


def child_hw(task: dict[str, Any]) -> dict[str, Any]:
    from codesign.hw import load_arch
    from codesign.resources import bundled_names, resolve_named_file

    device = task["device"]
    model, images = model_and_images(task["model"], task["images"], device)
    loop = batched_loop(images, task["batch"])
    archs = [load_arch(resolve_named_file(name, "hardware")) for name in bundled_names("hardware")]
    loop(model)  # warm-up: allocator and kernel selection
    rss_forward_mb = peak_rss_mb()
    rounds = [hw_round(model, loop, archs, device) for _ in range(task["rounds"])]
    median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]
    return {
        **median,
        "ratios": [r["ratio"] for r in rounds],
        "cpu_ratios": [r["cpu_ratio"] for r in rounds],
        "rss_forward_mb": rss_forward_mb,
        "rss_peak_mb": peak_rss_mb(),
        "gpu_peak_mb": peak_gpu_mb(device),
    }


def child_solver(task: dict[str, Any]) -> dict[str, Any]:
    from codesign.config import LayerOverride, QuantSpec, SparsitySpec
    from codesign.quant import calibrate, quantize_
    from codesign.quant.ptq import quantizable_layers
    from codesign.sparsity.apply import prune_model_
    from codesign.sparsity.prune import plan_pruning

    device = task["device"]
    model, images = model_and_images(task["model"], task["calib"], device)
    loop = batched_loop(images, task["batch"])
    solver, count = task["solver"], task["layers"]
    rss_start_mb = peak_rss_mb()
    per_layer: dict[str, float] = {}
    if solver == "sparsegpt":
        base = SparsitySpec(sparsity="0.5", method="sparsegpt")
        candidates = [plan.name for plan in plan_pruning(model, base)]
        chosen = spread(candidates, count)
        skipped = tuple(LayerOverride(n, skip=True) for n in candidates if n not in chosen)
        spec = SparsitySpec(sparsity="0.5", method="sparsegpt", overrides=skipped)
        started = now_s(device)
        prune_model_(model, spec, calibration=loop)
        seconds = now_s(device) - started
    else:
        candidates = [name for name, _ in quantizable_layers(model)]
        chosen = spread(candidates, count)
        spec = QuantSpec(
            weight_bits=8,
            act_bits=8,
            method=solver,  # type: ignore[arg-type]
            bias_correction=False,
            overrides=tuple(LayerOverride(n, weight_bits=4) for n in chosen),
        )
        quantized = quantize_(copy.deepcopy(model), spec)
        started = now_s(device)
        info = calibrate(quantized, loop, spec, float_model=model)
        seconds = now_s(device) - started
        per_layer = {n: float(v["seconds"]) for n, v in info.get(solver, {}).items()}
    return {
        "layers": len(chosen),
        "of_layers": len(candidates),
        "seconds": seconds,
        "seconds_per_layer": seconds / max(len(chosen), 1),
        "per_layer_s": per_layer,
        "rss_start_mb": rss_start_mb,
        "rss_peak_mb": peak_rss_mb(),
        "gpu_peak_mb": peak_gpu_mb(device),
    }


# -- parent -----------------------------------------------------------------------------------


# glibc's malloc by default unmaps large freed blocks, trims its heap and moves its mmap
# threshold as it goes, so whether a forward pass reuses the last batch's activation memory
# or page-faults it in afresh (up to 1.6 M minor faults: a third of a ResNet-50 forward's
# time) depends on the process's history, not on the work: the forward and the capture land
# in either state by chance. jemalloc (PyTorch's CPU performance tuning guide recommends it or
# tcmalloc) with page decay off keeps freed pages for reuse without fragmenting: both sides
# then run in the same steady state, and the peak RSS is the work's own.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def jemalloc_library() -> str | None:
    """The jemalloc shared library's name for LD_PRELOAD, or None when it is not installed
    (Debian/Ubuntu: ``apt install libjemalloc2``)."""
    return ctypes.util.find_library("jemalloc")


def run_child(task: dict[str, Any], threads: int, jemalloc: str | None) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result.
    ``jemalloc``: the library to preload (with :data:`JEMALLOC_CONF`), or None for the
    environment's own allocator."""
    command = [sys.executable, __file__, "--threads", str(threads), "--child", json.dumps(task)]
    env = dict(os.environ)
    if jemalloc is not None:
        env["LD_PRELOAD"] = " ".join(filter(None, (jemalloc, env.get("LD_PRELOAD"))))
        env["MALLOC_CONF"] = JEMALLOC_CONF
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report_hw(name: str, images: int, batch: int, r: dict[str, Any]) -> bool:
    """Print one model's hardware-model timings; False when its measurement failed."""
    if "error" in r:
        print(f"{name}: FAILED: {r['error']}")
        return False
    forward_s = (r["forward_before_s"] + r["forward_after_s"]) / 2
    sims = r["simulate_s"]
    pairs = zip(r["ratios"], r["cpu_ratios"], strict=True)
    rounds = ", ".join(f"{wall:.2f}/{cpu:.2f}" for wall, cpu in pairs)
    print(
        f"{name}: {r['layers']} layers, {images} images at batch {batch}; "
        f"the median of {len(r['ratios'])} round(s) (wall/CPU ratios: {rounds})"
    )
    print(
        f"  plain forward          {forward_s:7.2f} s "
        f"(before {r['forward_before_s']:.2f}, after {r['forward_after_s']:.2f})"
    )
    print(f"  capture                {r['capture_s']:7.2f} s")
    print(
        f"  minor page faults      forward (before) {r['forward_faults']:,}, "
        f"capture {r['capture_faults']:,}"
    )
    for arch, seconds in sorted(sims.items(), key=lambda kv: -kv[1])[:3]:
        print(f"  {arch:22s} {seconds:7.2f} s")
    print(f"  {len(sims)} datapaths in all     {sum(sims.values()):7.2f} s")
    print(
        f"  capture + simulate     {r['total_s']:7.2f} s = {r['ratio']:.2f} x forward "
        f"(target 1.5 x; in CPU time {r['cpu_ratio']:.2f} x)"
    )
    print(
        f"  peak RSS               {r['rss_peak_mb']:7.0f} MiB "
        f"(after the forward alone {r['rss_forward_mb']:.0f} MiB; target < 2048)"
    )
    if r.get("gpu_peak_mb") is not None:
        print(f"  peak GPU memory        {r['gpu_peak_mb']:7.0f} MiB")
    return True


def report_solver(model: str, solver: str, r: dict[str, Any]) -> bool:
    """Print one solver run; False when it failed."""
    if "error" in r:
        print(f"  {model:9s} {solver:9s} FAILED: {r['error']}")
        return False
    line = (
        f"  {model:9s} {solver:9s} {r['layers']:3d}/{r['of_layers']:<3d} layers "
        f"{r['seconds']:8.1f} s  {r['seconds_per_layer']:7.2f} s/layer  "
        f"peak RSS {r['rss_peak_mb']:6.0f} MiB"
    )
    steps = r["per_layer_s"]  # AdaRound reports each layer: its forward up to it + its solve
    if steps:
        values = list(steps.values())
        line += (
            f"\n{'':22s}per-layer step {sum(values) / len(values):.2f} s mean, "
            f"first {values[0]:.2f} s, last {values[-1]:.2f} s"
        )
        if len(steps) <= 8:
            line += "".join(f"\n{'':24s}{name:24s} {sec:8.2f} s" for name, sec in steps.items())
    if r.get("gpu_peak_mb") is not None:
        line += f"\n{'':22s}peak GPU memory {r['gpu_peak_mb']:.0f} MiB"
    print(line)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 images, ResNet-20 solvers")
    parser.add_argument("--hw-models", nargs="*", default=None, help="default: resnet50")
    parser.add_argument(
        "--ptq-models", nargs="*", default=None, help="default: resnet20 resnet56 resnet50"
    )
    parser.add_argument("--solvers", nargs="*", default=list(SOLVERS), choices=SOLVERS)
    parser.add_argument("--images", type=int, default=None, help="captured images (64)")
    parser.add_argument("--batch", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--rounds", type=int, default=None, help="hardware rounds, the median reported (3)"
    )
    parser.add_argument("--calib", type=int, default=None, help="calibration images (64)")
    parser.add_argument("--calib-batch", type=int, default=32, help="calibration batch")
    parser.add_argument(
        "--solver-layers",
        type=int,
        default=None,
        help="layers per solver run, 0 = all (default: all on CIFAR models, 8 on ImageNet ones)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--device", default="cpu", help="cpu (default), cuda or cuda:N: where the work runs"
    )
    parser.add_argument(
        "--allocator",
        choices=("jemalloc", "default"),
        default="jemalloc",
        help="jemalloc (default; the glibc default where it is not installed): preloaded "
        "with page decay off, so freed activations are reused, not page-faulted in again",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.device == "cpu" or args.device.split(":")[0] == "cuda"):
        parser.error(f"--device {args.device}: give cpu, cuda or cuda:N")
    if args.device != "cpu" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")

    if args.child is not None:
        task = json.loads(args.child)
        result = child_hw(task) if task["kind"] == "hw" else child_solver(task)
        print(json.dumps(result))
        return 0

    quick = args.quick
    hw_models = args.hw_models if args.hw_models is not None else ["resnet50"]
    default_ptq = ["resnet20"] if quick else ["resnet20", "resnet56", "resnet50"]
    ptq_models = args.ptq_models if args.ptq_models is not None else default_ptq
    images = args.images or (16 if quick else 64)
    calib = args.calib or (32 if quick else 64)
    from codesign.models.registry import is_cifar_model

    def solver_layers(model: str) -> int:
        if args.solver_layers is not None:
            return args.solver_layers
        return 4 if quick else (0 if is_cifar_model(model) else 8)

    where = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "the CPU"
    jemalloc = jemalloc_library() if args.allocator == "jemalloc" else None
    if args.allocator == "jemalloc" and jemalloc is None:
        print("jemalloc is not installed (apt install libjemalloc2): glibc's malloc measures")
    allocator = f"{jemalloc} ({JEMALLOC_CONF})" if jemalloc else "the default malloc"
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), on {where} ({args.device}), "
        f"allocator: {allocator}"
    )
    passed = True

    for name in hw_models:
        task = {
            "kind": "hw",
            "model": name,
            "images": images,
            "batch": args.batch,
            "rounds": args.rounds or (1 if quick else 3),
            "device": args.device,
        }
        passed &= report_hw(name, images, args.batch, run_child(task, args.threads, jemalloc))

    from codesign.config import PTQ_METHODS

    solvers = [s for s in args.solvers if s != "gptq" or "gptq" in PTQ_METHODS]
    if "gptq" in args.solvers and "gptq" not in solvers:
        print("gptq: not a PTQ method of this build; skipped")
    if ptq_models and solvers:
        print(f"solvers: {calib} random calibration images at batch {args.calib_batch}")
    for name in ptq_models:
        for solver in solvers:
            task = {
                "kind": "solver",
                "model": name,
                "solver": solver,
                "calib": calib,
                "batch": args.calib_batch,
                "layers": solver_layers(name),
                "device": args.device,
            }
            passed &= report_solver(name, solver, run_child(task, args.threads, jemalloc))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
