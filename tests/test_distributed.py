"""``torchrun --nproc-per-node 2 -m codesign qat``: two gloo processes on the CPU.

Each rank writes the sha256 of its final state dict (weights, LSQ step sizes, signedness
buffers) when ``CODESIGN_RANK_DIGEST_DIR`` is set, so identity across ranks is checked on what
the ranks hold, not on what rank 0 wrote.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codesign import distributed
from codesign.cli import main
from codesign.distributed import (
    RANK_DIGEST_ENV,
    all_gather_cat,
    all_reduce_,
    all_true,
    broadcast_state_,
    sum_count,
)
from codesign.io import tensors_digest
from codesign.pipeline import load_model
from codesign.resources import bundled_checkpoint
from codesign.runtime import Runtime
from codesign.train.loops import _rank_shard

CHECKPOINT = str(bundled_checkpoint("resnet8-digits"))
QAT = ["qat", "--checkpoint", CHECKPOINT, "--weight-bits", "4", "--act-bits", "4"]
QAT += ["--epochs", "2", "--calib-samples", "64", "--method", "mse"]
QAT += ["--device", "cpu", "--threads", "1"]

# Run by torchrun instead of ``-m codesign``: rank 0 dies right after writing the first
# epoch's training state, as a killed job would.
KILL_AFTER_FIRST_STATE = """
import os, sys
import codesign.train.loops as loops
write = loops.write_keyed_state
def write_then_die(*args, **kwargs):
    write(*args, **kwargs)
    os._exit(3)
loops.write_keyed_state = write_then_die
from codesign.cli import main
sys.exit(main(sys.argv[1:]))
"""


def torchrun(
    out: Path, digests: Path | None = None, script: Path | None = None, quiet: bool = True
):
    """``python -m torch.distributed.run --standalone --nproc-per-node 2`` (a free rendezvous
    port of its own) running ``codesign qat`` into ``out``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if digests is not None:
        env[RANK_DIGEST_ENV] = str(digests)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += ["--nproc-per-node", "2"]
    program = [str(script)] if script is not None else ["-m", "codesign"]
    return subprocess.run(
        [*launcher, *program, *QAT, "--out", str(out), *(["--quiet"] if quiet else [])],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def rank_digests(folder: Path) -> list[str]:
    return [(folder / f"qat-rank{r}.txt").read_text().strip() for r in (0, 1)]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    done = torchrun(root / "out", root / "digests")
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    try:
        assert main([*QAT, "--out", str(out), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "result.json").read_text())


def test_both_ranks_hold_the_same_weights_and_quantizers(two_processes):
    root, _ = two_processes
    first, second = rank_digests(root / "digests")
    assert first == second
    # ... and it is the model rank 0 wrote.
    saved, _, _ = load_model(root / "out" / "model.pt")
    assert tensors_digest(saved.state_dict()) == first


def test_one_result_written_once(two_processes):
    root, done = two_processes
    out = root / "out"
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "model.pt.sha256", "result.json"]
    result = json.loads((out / "result.json").read_text())
    assert result["runtime"]["world_size"] == 2 and result["runtime"]["device"] == "cpu"
    assert done.stdout.count('"quant_top1"') == 1  # only rank 0 prints it


def test_two_processes_reach_the_accuracy_of_one(two_processes, one_process):
    root, _ = two_processes
    result = json.loads((root / "out" / "result.json").read_text())
    assert result["ptq_top1"] == one_process["ptq_top1"]  # the same calibration
    assert abs(result["quant_top1"] - one_process["quant_top1"]) <= 1.0
    assert one_process["runtime"]["world_size"] == 1


def test_a_killed_run_resumes_under_torchrun_to_the_uninterrupted_model(two_processes, tmp_path):
    root, _ = two_processes
    script = tmp_path / "kill_after_first_state.py"
    script.write_text(KILL_AFTER_FIRST_STATE)
    out = tmp_path / "out"
    killed = torchrun(out, script=script)
    assert killed.returncode != 0
    assert (out / "qat_state.pt").is_file() and not (out / "result.json").exists()
    resumed = torchrun(out, tmp_path / "digests", quiet=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Rank 0's progress shows only the second epoch: the state was resumed, not discarded.
    assert "epoch 2/2" in resumed.stderr and "epoch 1/2" not in resumed.stderr
    digests = rank_digests(tmp_path / "digests")
    assert digests[0] == digests[1] == rank_digests(root / "digests")[0]
    assert not (out / "qat_state.pt").exists()


def test_helpers_are_identities_in_one_process():
    tensor = torch.tensor([1.0, -2.0])
    assert all_reduce_(tensor, "max") is tensor and tensor.tolist() == [1.0, -2.0]
    assert all_true(True) and not all_true(torch.tensor(False))
    assert (
        all_gather_cat(tensor) is tensor
        and sum_count(7, tensor.device) == 7
        and distributed.rank() == 0
    )
    module = torch.nn.Linear(2, 2)
    before = tensors_digest(module.state_dict())
    broadcast_state_(module)
    assert tensors_digest(module.state_dict()) == before


@pytest.mark.parametrize("count", [1, 2, 5, 8, 9])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_shards_weight_to_the_global_batch_mean(count, world):
    """Across ranks, the shards' weighted mean losses average to the global batch's mean,
    whether or not the batch splits evenly (or is smaller than the world)."""
    losses = torch.rand(count, dtype=torch.float64)
    images = torch.arange(count)
    rank_terms = []
    for rank in range(world):
        shard, _, share = _rank_shard(images, images, Runtime(rank=rank, world_size=world))
        assert shard.numel() >= 1
        rank_terms.append(losses[shard].mean() * share)
    assert float(torch.stack(rank_terms).mean()) == pytest.approx(float(losses.mean()))
    if count >= world:  # the shards partition the batch
        shards = [
            _rank_shard(images, images, Runtime(rank=r, world_size=world))[0] for r in range(world)
        ]
        assert sorted(torch.cat(shards).tolist()) == list(range(count))
