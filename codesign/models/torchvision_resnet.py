"""torchvision ResNet-18/34/50 with any number of classes and an optional CIFAR stem.

The CIFAR stem replaces the 7x7/2 conv and the max-pool with a 3x3/1 conv, the usual change
for 32x32 inputs (the ImageNet stem would shrink them to 8x8 before the first stage).
The blocks are torchvision's own with one change: the residual sum is a named
:class:`~codesign.models.residual.ResidualAdd` child (``residual``), so quantization can give
its operands quantizers; parameters, names and numbers are torchvision's.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv

from codesign.models.residual import ResidualAdd


class BasicBlock(tv.BasicBlock):
    """torchvision's BasicBlock with the residual sum as the ``residual`` module."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.residual = ResidualAdd()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(self.residual(out, identity))


class Bottleneck(tv.Bottleneck):
    """torchvision's Bottleneck with the residual sum as the ``residual`` module."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.residual = ResidualAdd()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(self.residual(out, identity))


# torchvision's resnet18/34/50 builders: block type and blocks per stage.
_LAYOUTS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def torchvision_resnet(
    name: str, num_classes: int = 1000, cifar_stem: bool = False, in_channels: int = 3
) -> nn.Module:
    """Untrained torchvision ResNet (no weights: nothing is downloaded)."""
    block, layers = _LAYOUTS[name]
    model = tv.ResNet(block, layers, num_classes=num_classes)  # type: ignore[arg-type]
    if cifar_stem or in_channels != 3:
        kernel, stride, padding = (3, 1, 1) if cifar_stem else (7, 2, 3)
        model.conv1 = nn.Conv2d(in_channels, 64, kernel, stride, padding, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if cifar_stem:
        model.maxpool = nn.Identity()
    return model


# torchvision's reference evaluation of its ImageNet weights: resize to 256, centre crop 224.
IMAGENET_INPUT_SIZE = 224


def imagenet_input_size(model: nn.Module) -> int | None:
    """``IMAGENET_INPUT_SIZE`` for a torchvision ResNet with the ImageNet stem (7x7/2 conv,
    max-pool), the size its weights expect; None for any other model."""
    if isinstance(model, tv.ResNet) and not isinstance(model.maxpool, nn.Identity):
        return IMAGENET_INPUT_SIZE
    return None
