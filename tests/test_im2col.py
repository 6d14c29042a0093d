"""im2col rows: the values F.unfold gives, in both column orders, and sampled rows equal to
the rows of the whole concatenation."""

import pytest
import torch
from torch import nn

from codesign.quant.im2col import im2col, im2col_row_count, im2col_rows

CONVS = [
    nn.Conv2d(3, 4, 3, padding=1),
    nn.Conv2d(3, 4, 3, stride=2, padding=1),
    nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    nn.Conv2d(3, 4, 1),
]


@pytest.mark.parametrize("conv", CONVS)
def test_im2col_equals_unfold_in_both_column_orders(conv):
    x = torch.randn(2, 3, 9, 8)
    cols = nn.functional.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    expected = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # columns (C, R, S)
    assert torch.equal(im2col(conv, x), expected)
    channels, taps = 3, cols.shape[1] // 3
    channel_last = torch.arange(channels * taps).view(channels, taps).t().reshape(-1)
    assert torch.equal(im2col(conv, x, channel_last=True), expected[:, channel_last])
    out = nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation)
    rows = im2col(conv, x) @ conv.weight.detach().flatten(1).T  # [B * P, K]
    torch.testing.assert_close(rows, out.permute(0, 2, 3, 1).reshape(-1, 4))


@pytest.mark.parametrize("layer", [*CONVS, nn.Linear(5, 2)])
def test_sampled_rows_equal_rows_of_the_concatenation(layer):
    shape = (5,) if isinstance(layer, nn.Linear) else (3, 9, 8)
    batches = [torch.randn(2, *shape), torch.randn(3, *shape)]
    every = torch.cat([im2col(layer, x) for x in batches])
    assert every.shape[0] == sum(im2col_row_count(layer, x) for x in batches)
    index = torch.randperm(every.shape[0], generator=torch.Generator().manual_seed(0))[:17]
    assert torch.equal(im2col_rows(layer, batches, index), every[index])
