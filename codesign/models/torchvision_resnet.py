"""torchvision ResNet-18/34/50 with any number of classes and an optional CIFAR stem.

The CIFAR stem replaces the 7x7/2 conv and the max-pool with a 3x3/1 conv, the usual change
for 32x32 inputs (the ImageNet stem would shrink them to 8x8 before the first stage).
"""

from __future__ import annotations

import torchvision
from torch import nn

_BUILDERS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


def torchvision_resnet(
    name: str, num_classes: int = 1000, cifar_stem: bool = False, in_channels: int = 3
) -> nn.Module:
    """Untrained torchvision ResNet (weights=None: nothing is downloaded)."""
    model = _BUILDERS[name](weights=None, num_classes=num_classes)
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
    if isinstance(model, torchvision.models.ResNet) and not isinstance(model.maxpool, nn.Identity):
        return IMAGENET_INPUT_SIZE
    return None
