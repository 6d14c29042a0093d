from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RESNET20_CHECKPOINT = SHARED / "checkpoints" / "resnet20-cifar10-idelbayev.th"
CIFAR_SUBSET = SHARED / "data" / "cifar10-subset"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


needs_shared = pytest.mark.skipif(
    not RESNET20_CHECKPOINT.is_file() or not CIFAR_SUBSET.is_dir(),
    reason="../shared (ResNet-20 checkpoint, CIFAR-10 subset) not beside the repo",
)
