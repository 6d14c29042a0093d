"""Calibrations of the bundled digits ResNet-8 on a calibration shard: what
``tests/test_distributed_calibration.py`` runs on each of two torchrun ranks and, in one
process, on the union of the shards.

    python -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m tests.calibration_ranks OUT.pt

Each rank writes its results to ``OUT-rank<r>.pt`` (tensors only). Nothing here broadcasts
rank 0's state: what the ranks hold is what the reductions made of their own shards.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable

import torch
from torch import nn

from codesign import distributed
from codesign.config import QuantSpec, SparsitySpec
from codesign.data import DataSplit, load_dataset, make_forward_loop
from codesign.data.subsets import rank_shard
from codesign.pipeline import load_model
from codesign.quant import calibrate, quantize_
from codesign.quant.adaround import gram_matrices
from codesign.quant.sequential import layer_inputs, record_batches
from codesign.resources import bundled_checkpoint
from codesign.sparsity.obs import input_hessian, sparsegpt_prune_

CALIB_SAMPLES = 96
# (method, weight bits, activation bits): min-max and MSE ranges (with bias correction),
# AdaRound and GPTQ rounding; the first and last layers stay at 8 bits as the CLI's default.
CALIBRATIONS = (("minmax", 4, 4), ("mse", 4, 4), ("adaround", 4, 8), ("gptq", 4, 8))
HESSIAN_LAYERS = ("conv1", "layer2.0.conv1")


def float_model_and_calibration() -> tuple[nn.Module, DataSplit]:
    """The digits ResNet-8 and its seeded calibration set (the pipeline's)."""
    model, _, _ = load_model(bundled_checkpoint("resnet8-digits"))
    dataset = load_dataset("digits")
    images, _ = dataset.calibration_set(CALIB_SAMPLES)
    return model.eval(), images


def shard(images: DataSplit, rank: int, world_size: int) -> DataSplit:
    return images.select(rank_shard(images.labels, rank, world_size))


def concatenated_loop(splits: list[DataSplit]) -> Callable[[nn.Module], None]:
    """One forward loop running each split's batches in turn (the pipeline's batch size)."""
    loops = [make_forward_loop(split, 256) for split in splits]

    def loop(model: nn.Module) -> None:
        for each in loops:
            each(model)

    return loop


def calibrations(
    float_model: nn.Module, loop: Callable[[nn.Module], None], ranges_only: bool = False
) -> dict:
    """Every calibration's state dict, SparseGPT 2:4's, AdaRound's learned output error per
    layer, and two layers' input Hessians and Gram matrices; ``ranges_only``: the min-max
    and MSE calibrations only."""
    results: dict[str, dict[str, torch.Tensor]] = {}
    for method, weight_bits, act_bits in CALIBRATIONS[: 2 if ranges_only else None]:
        spec = QuantSpec(
            weight_bits=weight_bits, act_bits=act_bits, method=method, keep_8bit=("first",)
        )
        quantized = quantize_(copy.deepcopy(float_model), spec)
        info = calibrate(quantized, loop, spec, float_model=float_model)
        results[method] = quantized.state_dict()
        if method == "adaround":
            errors = {name: e["learned_error"] for name, e in info["adaround"].items()}
            results["adaround_error"] = {k: torch.tensor(v) for k, v in errors.items()}
    if ranges_only:
        return results
    pruned = copy.deepcopy(float_model)
    sparsegpt_prune_(pruned, SparsitySpec(sparsity="2:4", method="sparsegpt"), loop)
    results["sparsegpt"] = pruned.state_dict()
    results["hessian"], results["gram"] = {}, {}
    for name, inputs in layer_inputs(float_model, list(HESSIAN_LAYERS), record_batches(loop)):
        layer = float_model.get_submodule(name)
        results["hessian"][name] = input_hessian(layer, inputs)
        grams = gram_matrices(layer, inputs, inputs, torch.Generator().manual_seed(0))
        results["gram"][name] = grams[0]
    return results


def main(out: str) -> None:
    torch.set_num_threads(1)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    distributed.init(rank, world_size, torch.device("cpu"))
    try:
        model, images = float_model_and_calibration()
        results = calibrations(model, concatenated_loop([shard(images, rank, world_size)]))
        torch.save(results, out.replace(".pt", f"-rank{rank}.pt"))
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
