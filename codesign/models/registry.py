"""A small model registry: ``create_model(name, **kwargs)`` and ``list_models()``.

Unknown names fail with the close names suggested, the way timm's registry does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import partial

from torch import nn

from codesign.errors import ModelError
from codesign.models.cifar_resnet import cifar_resnet
from codesign.models.torchvision_resnet import torchvision_resnet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

for _depth in (8, 14, 20, 32, 44, 56, 110):
    _REGISTRY[f"resnet{_depth}"] = partial(cifar_resnet, _depth)
for _name in ("resnet18", "resnet34", "resnet50"):
    _REGISTRY[_name] = partial(torchvision_resnet, _name)


def list_models() -> list[str]:
    """Registered model names, sorted by family then depth."""
    return sorted(_REGISTRY, key=lambda name: (name not in _CIFAR_NAMES, int(name[6:])))


_CIFAR_NAMES = {f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)}


def is_cifar_model(name: str) -> bool:
    return name in _CIFAR_NAMES


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build an untrained model by name.

    CIFAR ResNets (resnet8 ... resnet110) take ``num_classes``, ``in_channels``, ``width``;
    torchvision ResNets (resnet18/34/50) take ``num_classes``, ``cifar_stem``, ``in_channels``.

    >>> create_model("resnet20").linear.out_features
    10
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see list_models()"
        raise ModelError(f"unknown model {name!r}: {hint} (available: {', '.join(list_models())})")
    try:
        return _REGISTRY[name](**kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:  # a keyword torch refuses
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"cannot build {name} with {kwargs}: {reason}; give the settings the model was "
            "saved with"
        ) from None
