import json
from pathlib import Path

import pytest
import torch

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
