"""Same recipe, seed, device and thread count: byte-identical results and checkpoints.

The digits demo covers every kind of build: PTQ at 8 and 4 bits (AdaRound's seeded
rounding), QAT (shuffled, augmented batches), one-shot 2:4 with fine-tuning and a cubic
unstructured schedule. Two runs into two folders must write the same ``results.json`` and the
same bytes in every variant's ``model.pt``; a difference names the variant.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codesign.cli import main


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the demo runs on one thread (see cmd_demo)


def test_the_demo_twice_writes_identical_results_and_checkpoints(
    tmp_path: Path, restore_threads
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        assert main(["demo", "--out", str(out), "--quiet"]) == 0
    assert (first / "results.json").read_bytes() == (second / "results.json").read_bytes()
    models = sorted(p.relative_to(first) for p in first.glob("variants/*/model.pt"))
    assert len(models) == 8  # every variant of recipes/digits.toml
    differ = [str(m) for m in models if (first / m).read_bytes() != (second / m).read_bytes()]
    assert not differ, f"checkpoints differ between two identical runs: {differ}"
    print(f"demo twice: results.json and {len(models)} checkpoints byte-identical")
