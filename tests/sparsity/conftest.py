"""Small models shared by the sparsity tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv1 (C=3), block.conv_a (C=8), block.conv_b (C=6: not a multiple of 4), fc (C=8).

    Input [N, 3, 8, 8] -> logits [N, 10].
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block = nn.Sequential()
        self.block.add_module("conv_a", nn.Conv2d(8, 6, 3, padding=1, bias=False))
        self.block.add_module("relu", nn.ReLU())
        self.block.add_module("conv_b", nn.Conv2d(6, 8, 1, bias=False))
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(torch.relu(self.conv1(x)))
        return self.fc(out.mean((2, 3)))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()
