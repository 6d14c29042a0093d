"""SCNN vs DCNN on the SCNN paper's networks (Parashar et al., ISCA 2017), printed with errors.

Layer shapes come from torchvision's AlexNet, GoogLeNet and VGG-16 at 224x224 (captured once
with ``codesign.hw.capture``; torchvision's AlexNet has 64/192 channels in conv1/conv2 where
the original has 96/256). Sparsity is synthesised at the stated densities
(``codesign.hw.synthetic``), because the paper's pruned checkpoints are not available here.

1. Density sweep (weights = activations = d): SCNN speed vs DCNN; the paper reports SCNN at
   roughly 0.79x of DCNN on dense layers and a break-even between 0.7 and 0.9 (its Fig. 9).
2. Pruned densities: weight densities are Deep Compression's (Han et al., ICLR 2016, Table 4
   for AlexNet and VGG-16; GoogLeNet uses a flat 0.35, an assumption); activation densities
   are assumed round figures (inputs after ReLU), not read off the paper. Network speed-up and
   energy gain vs DCNN are compared with the paper's averages, 2.7x and 2.3x (abstract, Fig. 8).

Run: python scripts/validate_scnn.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torchvision

from codesign.hw.arch import load_arch
from codesign.hw.capture import capture
from codesign.hw.simulate import simulate
from codesign.hw.synthetic import synthetic_record

PAPER_DENSE_SPEED = 0.79  # SCNN / DCNN speed at density 1.0 (paper, Section 6)
PAPER_SPEEDUP, PAPER_ENERGY_GAIN = 2.7, 2.3  # averages over the three networks (abstract)

# (weight density per conv layer in order, activation density of layers after the first)
PRUNED = {
    "alexnet": ([0.84, 0.38, 0.35, 0.37, 0.37], 0.4),
    "vgg16": ([0.58, 0.22, 0.34, 0.36, 0.53, 0.24, 0.42, 0.32, 0.27, 0.34, 0.35, 0.29, 0.36], 0.35),
    "googlenet": (None, 0.4),  # None: 0.35 everywhere (assumed)
}


def conv_shapes(name: str) -> list[dict]:
    model = getattr(torchvision.models, name)(
        **({"init_weights": False, "aux_logits": False} if name == "googlenet" else {})
    )
    records = capture(model, lambda m: m(torch.zeros(1, 3, 224, 224)))
    return [
        dict(k=r.k, c=r.c, h=r.h, w=r.w, r=r.r, s=r.s, stride=r.stride[0], padding=r.padding[0])
        for r in records
        if r.op == "conv" and r.groups == 1
    ]


def network(shapes: list[dict], weight_density, act_density: float, seed: int = 0) -> list:
    records = []
    for i, shape in enumerate(shapes):
        wd = weight_density[i] if isinstance(weight_density, list) else weight_density
        ad = 1.0 if i == 0 else act_density  # the first layer reads the dense image
        records.append(
            synthetic_record(f"conv{i}", **shape, weight_density=wd, act_density=ad, seed=seed + i)
        )
    return records


def totals(records, arch) -> tuple[float, float]:
    costs = simulate(records, arch)
    return sum(c.cycles for c in costs), sum(c.energy_pj for c in costs)


def main() -> None:
    start = time.perf_counter()
    scnn, dcnn = load_arch("recipes/hardware/scnn.toml"), load_arch("recipes/hardware/dcnn.toml")
    shapes = {name: conv_shapes(name) for name in PRUNED}
    print(
        "Density sweep: SCNN speed / DCNN speed (weights = activations = d, first layer's input dense)"
    )
    densities = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    print(f"{'net':10s} " + " ".join(f"{d:>5.1f}" for d in densities) + "  break-even")
    for name, layer_shapes in shapes.items():
        speed = []
        for d in densities:
            # at d = 1 even the first layer is dense; below, inner layers get density d
            s_cycles, _ = totals(network(layer_shapes, d, d), scnn)
            d_cycles, _ = totals(network(layer_shapes, d, d), dcnn)
            speed.append(d_cycles / s_cycles)
        speed_arr = np.array(speed)
        crossing = next(
            (i for i in range(1, len(densities)) if speed_arr[i - 1] < 1 <= speed_arr[i]), None
        )
        if crossing is None:
            even = float("nan")
        else:  # linear interpolation between the bracketing densities
            d0, d1, s0, s1 = (
                densities[crossing - 1],
                densities[crossing],
                speed[crossing - 1],
                speed[crossing],
            )
            even = d0 + (1 - s0) * (d1 - d0) / (s1 - s0)
        print(f"{name:10s} " + " ".join(f"{s:5.2f}" for s in speed) + f"  {even:5.2f}")
        err = (speed[0] - PAPER_DENSE_SPEED) / PAPER_DENSE_SPEED
        ok = "ok" if 0.7 <= even <= 0.9 else "OUT OF RANGE"
        print(
            f"{'':10s} density 1.0: {speed[0]:.2f}x vs paper ~{PAPER_DENSE_SPEED}x (error {err:+.0%}); break-even {even:.2f} in [0.7, 0.9]: {ok}"
        )

    print("\nPruned densities (Fig. 8 of the paper: network speed-up and energy vs DCNN)")
    print(f"{'net':10s} {'speedup':>8s} {'energy gain':>12s}")
    speedups, gains = [], []
    for name, (weights, acts) in PRUNED.items():
        wd = weights if weights is not None else 0.35
        s_cycles, s_energy = totals(network(shapes[name], wd, acts), scnn)
        d_cycles, d_energy = totals(network(shapes[name], wd, acts), dcnn)
        speedups.append(d_cycles / s_cycles)
        gains.append(d_energy / s_energy)
        print(f"{name:10s} {speedups[-1]:8.2f} {gains[-1]:12.2f}")
    mean_speedup, mean_gain = float(np.mean(speedups)), float(np.mean(gains))
    for label, ours, paper in (
        ("speedup", mean_speedup, PAPER_SPEEDUP),
        ("energy gain", mean_gain, PAPER_ENERGY_GAIN),
    ):
        err = (ours - paper) / paper
        print(
            f"average {label:12s} {ours:5.2f}x vs paper {paper}x: error {err:+.0%} ({'within' if abs(err) <= 0.25 else 'OUTSIDE'} 25 %)"
        )
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
