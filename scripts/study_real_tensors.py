"""Measured sparsity on the shared ResNet-20 and what SCNN makes of it, through the CLI.

Four variants of ``/work/shared/checkpoints/resnet20-cifar10-idelbayev.th``:

- ``fp32``: the checkpoint as is;
- ``int8``: ``codesign ptq --weight-bits 8 --act-bits 8``;
- ``2:4+int8``: ``codesign prune --sparsity 2:4 --epochs 0 --weight-bits 8 --act-bits 8``;
- ``70%+int8``: ``codesign prune --sparsity 0.7 --epochs 0 --weight-bits 8 --act-bits 8``
  (unstructured magnitude, per layer).

The pruned variants are one-shot, without fine-tuning: their accuracy drops (printed), but
the hardware cost depends on the sparsity pattern and the measured activations, not on the
accuracy. Each variant is then run through ``codesign simulate --samples N --arch A`` for
SCNN, DCNN, DCNN-opt and the dense / 2:4 tensor cores; the script reads the ``result.json``
files and prints (1) every layer's measured weight and input-activation density per variant,
(2) network energy and cycles per architecture and variant, (3) the check that SCNN's energy
falls as sparsity rises (int8 -> 2:4+int8 -> 70%+int8, same operand widths).

Commands are printed as they run; outputs go to ``--work`` (default /tmp/codesign-real-tensors)
and are reused when present (``--fresh`` re-runs them).

Run: python scripts/study_real_tensors.py [--samples 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared")
CHECKPOINT = SHARED / "checkpoints" / "resnet20-cifar10-idelbayev.th"
DATA = f"imagefolder:{SHARED / 'data' / 'cifar10-subset'}"
ARCHS = ["scnn", "dcnn", "dcnn-opt", "tc", "sparse-tc-2of4"]
QUANT = ["--weight-bits", "8", "--act-bits", "8"]
VARIANTS = {  # name -> (command producing model.pt, or None for the float checkpoint)
    "fp32": None,
    "int8": ["ptq", *QUANT],
    "2:4+int8": ["prune", "--sparsity", "2:4", "--epochs", "0", *QUANT],
    "70%+int8": ["prune", "--sparsity", "0.7", "--epochs", "0", *QUANT],
}


def codesign(args: list[str], out: Path, fresh: bool) -> dict:
    """Run ``codesign ARGS --out OUT`` unless OUT/result.json exists; return that JSON."""
    result = out / "result.json"
    if fresh and out.exists():
        shutil.rmtree(out)
    if not result.exists():
        command = [sys.executable, "-m", "codesign", *args, "--out", str(out), "--quiet"]
        print("$ codesign " + " ".join(command[3:]), flush=True)
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=64, help="test images captured")
    parser.add_argument("--work", default="/tmp/codesign-real-tensors")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    base = ["--checkpoint", str(CHECKPOINT), "--data", DATA]

    accuracy, models = {}, {}
    for name, command in VARIANTS.items():
        slug = name.replace(":", "of").replace("%", "pct").replace("+", "-")
        if command is None:
            models[name] = CHECKPOINT
            continue
        made = codesign([*command, *base], work / slug, args.fresh)
        models[name] = work / slug / "model.pt"
        accuracy[name] = {k: v for k, v in made.items() if k.endswith("top1")}

    sims: dict[tuple[str, str], dict] = {}
    for name, model in models.items():
        slug = name.replace(":", "of").replace("%", "pct").replace("+", "-")
        for arch in ARCHS:
            sims[name, arch] = codesign(
                [
                    "simulate",
                    "--checkpoint",
                    str(model),
                    "--data",
                    DATA,
                    "--samples",
                    str(args.samples),
                    "--arch",
                    f"recipes/hardware/{arch}.toml",
                ],
                work / f"sim-{slug}-{arch}",
                args.fresh,
            )

    print("\nAccuracy of the variants (top-1 %, from their result.json; pruned ones one-shot):")
    for name, acc in accuracy.items():
        print(f"  {name:9s} " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))

    names = list(VARIANTS)
    layers = [row["name"] for row in sims[names[0], "scnn"]["layers"]]
    print(f"\nMeasured densities per layer ({args.samples} test images; w = weights, a = inputs)")
    print(f"{'layer':16s} " + " ".join(f"{n + ' w/a':>15s}" for n in names))
    for i, layer in enumerate(layers):
        cells = []
        for name in names:
            row = sims[name, "scnn"]["layers"][i]
            cells.append(f"{row['weight_density']:.3f}/{row['act_density']:.3f}")
        print(f"{layer:16s} " + " ".join(f"{c:>15s}" for c in cells))
    for name in names:
        # convs after the stem read a ReLU output; the classifier reads its average pool
        rows = sims[name, "scnn"]["layers"][1:-1]
        acts = sorted(r["act_density"] for r in rows)
        everything = sims[name, "scnn"]["layers"]
        print(
            f"  {name:9s} input density of convs 2..{len(layers) - 1} (after ReLU): "
            f"{acts[0]:.2f}-{acts[-1]:.2f}, median {acts[len(acts) // 2]:.2f}; effectual / dense "
            f"MACs (network) "
            f"{sum(r['effectual_macs'] for r in everything) / sum(r['macs'] for r in everything):.3f}"
        )

    print(f"\nNetwork totals per inference ({args.samples} images captured): energy uJ / kcycles")
    print(f"{'arch':16s} " + " ".join(f"{n:>18s}" for n in names))
    for arch in ARCHS:
        cells = [
            f"{sims[n, arch]['total']['energy_uj_per_inference']:>9.2f}/"
            f"{sims[n, arch]['total']['cycles'] / 1e3:<8.1f}"
            for n in names
        ]
        print(f"{arch:16s} " + " ".join(f"{c:>18s}" for c in cells))

    scnn = [
        sims[n, "scnn"]["total"]["energy_uj_per_inference"]
        for n in ("int8", "2:4+int8", "70%+int8")
    ]
    falls = scnn[0] > scnn[1] > scnn[2]
    print(
        f"\nSCNN energy int8 -> 2:4+int8 -> 70%+int8: {scnn[0]:.2f} -> {scnn[1]:.2f} -> "
        f"{scnn[2]:.2f} uJ per inference ({'falls as sparsity rises: PASS' if falls else 'FAIL'})"
    )
    sys.exit(0 if falls else 1)


if __name__ == "__main__":
    main()
