"""Models: CIFAR ResNets, torchvision ResNets, the registry and checkpoint loading."""

from codesign.models.checkpoint import extract_state_dict, infer_model, load_state_into
from codesign.models.cifar_resnet import CifarResNet, cifar_resnet
from codesign.models.registry import create_model, is_cifar_model, list_models
from codesign.models.torchvision_resnet import imagenet_input_size, torchvision_resnet

__all__ = [
    "CifarResNet",
    "cifar_resnet",
    "create_model",
    "extract_state_dict",
    "imagenet_input_size",
    "infer_model",
    "is_cifar_model",
    "list_models",
    "load_state_into",
    "torchvision_resnet",
]
