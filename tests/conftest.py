import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Hypothesis profiles (choose with HYPOTHESIS_PROFILE): "ci", the default, draws the same
# cases on every run (derandomize) and stores nothing; "thorough" draws new ones each run.
# No deadline: a case's time depends on the machine's load, not on the code under test.
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RESNET20_CHECKPOINT = SHARED / "checkpoints" / "resnet20-cifar10-idelbayev.th"
CIFAR_SUBSET = SHARED / "data" / "cifar10-subset"


def digits_recipe_head(name: str, archs: list[str], seed: int = 0) -> str:
    """The top of a recipe on the bundled digits ResNet-8 (variants go after it)."""
    return (
        f'schema_version = 1\nname = "{name}"\nseed = {seed}\n'
        '[model]\ncheckpoint = "bundled:resnet8-digits"\n'
        '[data]\nsource = "digits"\ncalib_samples = 256\ncapture_samples = 16\n'
        f"[hardware]\narchs = {json.dumps(archs)}\n"
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


needs_shared = pytest.mark.skipif(
    not RESNET20_CHECKPOINT.is_file() or not CIFAR_SUBSET.is_dir(),
    reason="../shared (ResNet-20 checkpoint, CIFAR-10 subset) not beside the repo",
)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[str]], Path]:
    """The fuzz tests' bad checkpoints, data sets and hardware files (by kind) and the folder
    that holds them, made once per test module."""
    from .fuzzing import make_bad_inputs

    root = tmp_path_factory.mktemp("bad-inputs")
    return make_bad_inputs(root), root
