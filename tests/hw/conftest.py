"""Tiny layers with known sparsity, captured for real (fast: a few ms each)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from codesign.hw.capture import capture


def sparse_conv(cin=8, cout=16, k=3, stride=1, padding=1, groups=1, keep=0.5, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=False)
    with torch.no_grad():
        conv.weight.mul_((torch.rand_like(conv.weight) < keep).float())
    return conv


def record_of(module, x, **kwargs):
    return capture(module, lambda m: m(x), **kwargs)[0]


@pytest.fixture
def conv_record():
    torch.manual_seed(1)
    x = torch.relu(torch.randn(2, 8, 16, 16))
    return record_of(sparse_conv(), x)


@pytest.fixture
def make_conv():
    return sparse_conv


@pytest.fixture
def make_record():
    return record_of
