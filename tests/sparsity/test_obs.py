"""SparseGPT one-shot pruning: known answers, invariants, and magnitude pruning as reference."""

from __future__ import annotations

import math

import pytest
import torch

from codesign.config import SparsitySpec
from codesign.errors import ConfigError, SparsityError
from codesign.sparsity.apply import prune_model_
from codesign.sparsity.masks import NMPattern, Unstructured, magnitude_mask, nm_compliant, nm_mask
from codesign.sparsity.obs import channel_last_order, output_error, sparsegpt_prune


def _correlated(rows: int, columns: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, columns, generator=generator)
    mixing = torch.randn(columns, columns, generator=generator) / math.sqrt(columns)
    inputs = torch.randn(4 * columns, columns, generator=generator) @ (torch.eye(columns) + mixing)
    return weight, (inputs.T @ inputs / inputs.shape[0]).double()


def test_one_removed_weight_is_compensated_by_least_squares() -> None:
    # H = [[2, 1], [1, 2]], w = [1, 3], remove one of two: OBS drops w0 (cost 1.5 against 18)
    # and the least-squares repair of w1 is w1 + w0 * H01 / H11 = 3.5.
    weight = torch.tensor([[1.0, 3.0]])
    hessian = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    pruned, keep = sparsegpt_prune(weight, hessian, Unstructured(0.5), damping=0.0)
    assert keep.tolist() == [[False, True]]
    torch.testing.assert_close(pruned, torch.tensor([[0.0, 3.5]]))


@pytest.mark.parametrize("pattern", [NMPattern(2, 4), Unstructured(0.6)])
def test_uncorrelated_inputs_reduce_to_magnitude_pruning(pattern) -> None:
    # With H proportional to I no weight can stand in for another: same mask, no update.
    weight = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    pruned, keep = sparsegpt_prune(weight, 3.0 * torch.eye(16, dtype=torch.float64), pattern)
    expected = (
        nm_mask(weight, 2, 4) if isinstance(pattern, NMPattern) else magnitude_mask(weight, 0.6)
    )
    assert torch.equal(keep, expected)
    torch.testing.assert_close(pruned, torch.where(expected, weight, 0.0))


def test_n_m_compliant_and_below_magnitude_error() -> None:
    weight, hessian = _correlated(8, 64)
    pruned, keep = sparsegpt_prune(weight, hessian, NMPattern(2, 4), block_columns=16)
    assert nm_compliant(pruned, 2, 4) and torch.equal(pruned != 0, keep)
    magnitude = torch.where(nm_mask(weight, 2, 4), weight, 0.0)
    assert output_error(weight, pruned, hessian) < 0.7 * output_error(weight, magnitude, hessian)


def test_unstructured_count_is_exact_across_blocks() -> None:
    weight, hessian = _correlated(5, 300)  # 300 columns: blocks of 128, 128 and 44
    pruned, keep = sparsegpt_prune(weight, hessian, Unstructured(0.7))
    assert int((~keep).sum()) == round(0.7 * 5 * 300)
    assert int((pruned == 0).sum()) >= int((~keep).sum())
    magnitude = torch.where(magnitude_mask(weight, 0.7), weight, 0.0)
    assert output_error(weight, pruned, hessian) < output_error(weight, magnitude, hessian)


def test_channel_last_order_makes_n_m_groups_adjacent() -> None:
    conv = torch.nn.Conv2d(8, 3, 3)
    order = channel_last_order(conv)
    reordered = conv.weight.detach().flatten(1)[:, order]
    expected = conv.weight.detach().permute(0, 2, 3, 1).reshape(3, -1)  # [K, R, S, C]
    assert torch.equal(reordered, expected)


def test_spec_errors() -> None:
    with pytest.raises(ConfigError, match="scope 'layer'"):
        SparsitySpec("0.5", scope="global", method="sparsegpt")
    with pytest.raises(ConfigError, match="schedule 'oneshot'"):
        SparsitySpec("0.5", schedule="cubic", method="sparsegpt")
    with pytest.raises(ConfigError, match=r"SparsitySpec\.method: expected one of .*'obs'"):
        SparsitySpec("0.5", method="obs")
    hessian = torch.eye(4, dtype=torch.float64)
    hessian[1, 2] = float("nan")
    with pytest.raises(SparsityError, match="NaN"):
        sparsegpt_prune(torch.ones(2, 4), hessian, NMPattern(2, 4))
    with pytest.raises(SparsityError, match="calibration"):
        prune_model_(torch.nn.Conv2d(4, 4, 1), SparsitySpec("2:4", method="sparsegpt", exclude=()))
