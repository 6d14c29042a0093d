"""The residual sum as a module of its own.

A residual block's ``out + shortcut`` written inline is invisible to module swaps; as a named
parameter-free child it is where quantization attaches the quantizers of the two operands
(``codesign.quant.modules.QuantAdd``), the way an integer adder sees them. It has no state,
so checkpoints are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualAdd(nn.Module):
    """``main + shortcut``: the block's main branch first, its shortcut second."""

    def forward(self, main: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return main + shortcut
