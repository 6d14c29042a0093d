"""CIFAR ResNets of He et al. 2016 (Sec. 4.2): 3 stages of n basic blocks, 16/32/64 channels.

Depth 6n + 2: ResNet-20/32/44/56/110 for n = 3/5/7/9/18. Shortcuts are "option A": identity,
with a stride-2 subsampling and zero-padded new channels where the shape changes, so the
shortcuts have no parameters. Layer names (conv1, bn1, layer1.0.conv1, ..., linear) match the
widely used pytorch_resnet_cifar10 checkpoints, so those load without renaming. The residual
sum is a named module (``residual``, a :class:`ResidualAdd`) so that quantization can give its
operands quantizers, as integer hardware sees them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codesign.models.residual import ResidualAdd


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad channels up to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.residual = ResidualAdd()
        if stride != 1 or in_channels != channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(self.residual(out, self.shortcut(x)))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (works for any input size >= 8x8).

    Input [N, in_channels, H, W] -> logits [N, num_classes].
    """

    def __init__(
        self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3, width: int = 16
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages = []
        channels_in = width
        for stage, stride in enumerate((1, 2, 2)):
            channels = width * 2**stage
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(channels_in, channels, stride if index == 0 else 1))
                channels_in = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels_in, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.pool(out), 1))


def cifar_resnet(depth: int, **kwargs: int) -> CifarResNet:
    """ResNet of ``depth`` = 6n + 2 layers (20, 32, 44, 56, 110, ...)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    return CifarResNet((depth - 2) // 6, **kwargs)
