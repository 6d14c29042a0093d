"""Calibration sharded over two torchrun processes (gloo, CPU) against one process.

Each rank observes its class-balanced shard of the calibration set; activation samples are
gathered, minima, Hessians, Gram matrices and bias-correction sums are reduced
(``tests/calibration_ranks.py`` runs the calibrations, with no broadcast of rank 0's state).
What is checked:

- every tensor of every calibration is bit-identical on both ranks;
- against one process calibrating on the two shards one after the other (the union, batch
  for batch): activation and weight scales and signedness equal exactly (the gathered samples
  are the same values in the same order), Hessians and Gram matrices to float tolerance
  (each rank sums its shard, then the ranks' sums are added: another summation order),
  bias corrections, GPTQ weights and SparseGPT masks and weights likewise; AdaRound solves
  the same problem to float tolerance, and its rounding decisions, not continuous in the
  Gram matrices, reach output errors within 10 % per layer;
- against one process on the whole set in its seeded order: min-max scales equal exactly,
  MSE scales within 2 % (a search over clipping candidates 1 % apart, on the same values
  summed in another order).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codesign import distributed
from codesign.data.subsets import rank_shard
from codesign.quant import adaround
from tests.calibration_ranks import (
    calibrations,
    concatenated_loop,
    float_model_and_calibration,
    shard,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration") / "out.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [*launcher, "--nproc-per-node", "2", "-m", "tests.calibration_ranks", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out.parent / f"out-rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.fixture(scope="module")
def one_process():
    """(the shards one after the other, the whole set in its seeded order), in one process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, images = float_model_and_calibration()
        union = calibrations(model, concatenated_loop([shard(images, r, 2) for r in (0, 1)]))
        seeded = calibrations(model, concatenated_loop([images]), ranges_only=True)
    finally:
        torch.set_num_threads(threads)
    return union, seeded


def _tensors(results: dict):
    for group, tensors in results.items():
        for name, tensor in tensors.items():
            yield group, name, tensor


def _range_names(state: dict) -> list[str]:
    return [n for n in state if n.endswith((".scale", ".signed"))]


def test_every_rank_holds_bit_identical_calibrations(ranks):
    first, second = ranks
    assert first.keys() == second.keys()
    for group, name, tensor in _tensors(first):
        assert torch.equal(tensor, second[group][name]), f"{group}: {name}"


def test_sharded_ranges_equal_one_process_on_the_union(ranks, one_process):
    sharded, (union, _) = ranks[0], one_process
    for method in ("minmax", "mse", "adaround", "gptq"):
        state = sharded[method]
        names = _range_names(state)
        assert len(names) > 20  # every layer's weight and input quantizer, the residual sums
        for name in names:
            assert torch.equal(state[name], union[method][name]), f"{method}: {name}"


def test_sharded_statistics_and_solvers_match_one_process_on_the_union(ranks, one_process):
    sharded, (union, _) = ranks[0], one_process
    for name, hessian in union["hessian"].items():
        torch.testing.assert_close(sharded["hessian"][name], hessian, rtol=1e-12, atol=1e-15)
    for name, gram in union["gram"].items():
        torch.testing.assert_close(sharded["gram"][name], gram, rtol=1e-4, atol=1e-5)
    for method in ("minmax", "mse", "gptq", "sparsegpt"):
        for name, tensor in union[method].items():
            if tensor.dtype == torch.bool:  # SparseGPT's 2:4 masks
                assert torch.equal(sharded[method][name], tensor), f"{method}: {name}"
            else:
                torch.testing.assert_close(sharded[method][name], tensor, rtol=1e-5, atol=1e-6)
    errors = union["adaround_error"]
    assert len(errors) >= 6
    for name, error in errors.items():
        assert abs(float(sharded["adaround_error"][name]) / float(error) - 1) < 0.10, name


def test_min_max_ranges_equal_one_process_on_the_seeded_order(ranks, one_process):
    sharded, (_, seeded) = ranks[0], one_process
    for name in _range_names(seeded["minmax"]):
        assert torch.equal(sharded["minmax"][name], seeded["minmax"][name]), name
    for name in _range_names(seeded["mse"]):
        torch.testing.assert_close(sharded["mse"][name], seeded["mse"][name], rtol=0.02, atol=0)


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_rank_shards_partition_the_subset_class_balanced(world):
    labels = torch.randint(0, 10, (101,), generator=torch.Generator().manual_seed(world))
    shards = [rank_shard(labels, r, world) for r in range(world)]
    assert sorted(torch.cat(shards).tolist()) == list(range(101))
    sizes = [s.numel() for s in shards]
    assert max(sizes) - min(sizes) <= 1
    per_class = torch.stack([torch.bincount(labels[s], minlength=10) for s in shards])
    assert int((per_class.max(0).values - per_class.min(0).values).max()) <= 1
    for each in shards:  # each keeps the subset's own order
        assert torch.equal(each, each.sort().values)
    if world == 1:
        assert torch.equal(shards[0], torch.arange(101))


def test_a_subset_smaller_than_the_world_is_refused():
    from codesign.errors import DataError

    with pytest.raises(DataError, match="cannot be shared by 4 processes"):
        rank_shard(torch.tensor([0, 1, 2]), 0, 4)


@pytest.mark.parametrize("gram_rows", [10**6, 100])
def test_shard_gram_matrices_add_up_to_the_union(monkeypatch, gram_rows):
    """Two ranks simulated in one process: each rank's Gram matrices (of the rows sampled
    from the concatenated shards that it holds) add up to the union's, with and without row
    sampling."""
    monkeypatch.setattr(adaround, "GRAM_ROWS", gram_rows)
    layer = torch.nn.Conv2d(3, 4, 3, padding=1)
    shards = [[torch.randn(2, 3, 6, 6), torch.randn(1, 3, 6, 6)], [torch.randn(3, 3, 6, 6)]]
    quantized = [[x.round() for x in batches] for batches in shards]
    union = adaround.gram_matrices(
        layer, shards[0] + shards[1], quantized[0] + quantized[1], torch.Generator().manual_seed(0)
    )
    counts = torch.tensor([3 * 36, 3 * 36])
    parts = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "all_gather_cat", lambda _: counts)
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        generator = torch.Generator().manual_seed(0)
        parts.append(adaround.gram_matrices(layer, shards[rank], quantized[rank], generator))
    for whole, first, second in zip(union, *parts, strict=True):
        torch.testing.assert_close(first + second, whole, rtol=1e-5, atol=1e-6)
