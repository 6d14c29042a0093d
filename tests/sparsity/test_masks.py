"""Mask functions: N:M compliance, magnitude ordering, exact counts, validation."""

from __future__ import annotations

import pytest
import torch

from codesign.errors import SparsityError
from codesign.sparsity.masks import (
    NMPattern,
    Unstructured,
    global_magnitude_masks,
    kept_magnitude,
    lamp_masks,
    lamp_scores,
    magnitude_mask,
    nm_compliant,
    nm_group_nonzeros,
    nm_mask,
    parse_pattern,
)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("shape", [(6, 16, 3, 3), (5, 24)])
def test_nm_mask_keeps_exactly_n_largest_per_group(n: int, m: int, shape: tuple[int, ...]) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    mask = nm_mask(weight, n, m)
    assert mask.shape == weight.shape and mask.dtype == torch.bool
    # Reference computed another way: an explicit loop over (k, r, s) and groups along C.
    flat = weight.movedim(1, -1).reshape(-1, weight.shape[1])
    flat_mask = mask.movedim(1, -1).reshape(-1, weight.shape[1])
    for row, row_mask in zip(flat, flat_mask, strict=True):
        for start in range(0, weight.shape[1], m):
            group, kept = row[start : start + m].abs(), row_mask[start : start + m]
            assert int(kept.sum()) == n
            assert set(torch.topk(group, n).indices.tolist()) == set(
                kept.nonzero().flatten().tolist()
            )
    assert nm_compliant(weight * mask, n, m)
    assert (nm_group_nonzeros(weight * mask, m) == n).all()


def test_nm_groups_run_along_input_channels_at_each_kernel_position() -> None:
    # Only channel 0..3 at (k=0, r=0, s=0) is one group; making channel 3 large there must
    # not change any other (k, r, s).
    weight = torch.ones(2, 4, 2, 2)
    weight[0, 3, 0, 0] = 5.0
    weight[0, 2, 0, 0] = 4.0
    mask = nm_mask(weight, 2, 4)
    assert mask[0, :, 0, 0].tolist() == [False, False, True, True]
    # Elsewhere all magnitudes tie: the lower channel indices are kept.
    assert mask[1, :, 1, 1].tolist() == [True, True, False, False]


def test_nm_compliance_detects_a_dense_group() -> None:
    weight = torch.tensor([[1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 1.0, 0.0]])
    assert not nm_compliant(weight, 2, 4)
    assert nm_compliant(weight, 3, 4)


def test_magnitude_mask_removes_smallest_in_order() -> None:
    weight = torch.randn(64, 9, generator=torch.Generator().manual_seed(2))
    mask = magnitude_mask(weight, 0.3)
    assert int((~mask).sum()) == round(0.3 * weight.numel())
    assert weight.abs()[mask].min() >= weight.abs()[~mask].max()


def test_ties_are_broken_by_index_with_exact_count() -> None:
    weight = torch.ones(10)
    mask = magnitude_mask(weight, 0.35)  # round(3.5) = 4 (Python rounds half to even)
    assert mask.tolist() == [False] * 4 + [True] * 6


def test_global_and_layer_thresholds_differ_on_a_known_pair() -> None:
    # Layer a holds small weights, b large ones. Layer-wise 50 % removes half of each;
    # one global threshold removes the 4 smallest overall, all of them in a.
    a = torch.tensor([0.1, -0.2, 0.3, 0.4])
    b = torch.tensor([1.0, -2.0, 3.0, 4.0])
    assert [magnitude_mask(w, 0.5).tolist() for w in (a, b)] == [
        [False, False, True, True],
        [False, False, True, True],
    ]
    assert [m.tolist() for m in global_magnitude_masks([a, b], 0.5)] == [
        [False, False, False, False],
        [True, True, True, True],
    ]
    # 0.375 of 8 = 3: the global threshold lies between 0.3 and 0.4.
    assert global_magnitude_masks([a, b], 0.375)[0].tolist() == [
        False,
        False,
        False,
        True,
    ]


def test_zero_sparsity_keeps_everything_and_kept_magnitude() -> None:
    weight = torch.tensor([[-1.0, 2.0], [0.5, -0.25]])
    mask = magnitude_mask(weight, 0.0)
    assert mask.all()
    assert kept_magnitude(weight, mask) == pytest.approx(3.75)
    assert kept_magnitude(weight, nm_mask(weight, 1, 2)) == pytest.approx(2.5)


def test_parse_pattern() -> None:
    assert parse_pattern("2:4") == NMPattern(2, 4)
    assert parse_pattern(" 0.7 ") == Unstructured(0.7)
    assert parse_pattern(0.5) == Unstructured(0.5)
    assert parse_pattern("DENSE") is None
    assert str(NMPattern(2, 4)) == "2:4" and NMPattern(2, 4).sparsity == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3:2", "0 < N < M"),
        ("0:4", "0 < N < M"),
        ("4:4", "0 < N < M"),
        ("2:x", "two integers"),
        ("1.0", "outside [0, 1)"),
        ("-0.1", "outside [0, 1)"),
        ("1.5", "outside [0, 1)"),
        ("seventy", "cannot read sparsity"),
    ],
)
def test_bad_patterns_are_sparsity_errors(text: str, message: str) -> None:
    with pytest.raises(
        SparsityError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        parse_pattern(text)


def test_nm_mask_errors() -> None:
    with pytest.raises(SparsityError, match="not a multiple of M=4"):
        nm_mask(torch.ones(2, 6), 2, 4)
    with pytest.raises(SparsityError, match="0 < N < M"):
        nm_mask(torch.ones(2, 8), 3, 2)
    with pytest.raises(SparsityError, match="outside"):
        magnitude_mask(torch.ones(4), 1.0)


def test_lamp_scores_match_the_definition_computed_by_brute_force() -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 5)
    flat = weight.flatten()
    expected = torch.tensor(
        [float(w**2 / flat[flat.abs() >= w.abs()].square().sum()) for w in flat]
    ).view(weight.shape)
    assert torch.allclose(lamp_scores(weight), expected)
    assert float(lamp_scores(weight).max()) == pytest.approx(1.0)


def test_lamp_spares_the_layer_of_small_weights_that_global_magnitude_empties() -> None:
    big = torch.linspace(1.0, 2.0, 8)
    small = torch.linspace(0.01, 0.02, 8)
    by_magnitude = global_magnitude_masks([big, small], 0.5)
    assert int(by_magnitude[1].sum()) == 0  # a raw global threshold strips the small layer
    big_mask, small_mask = lamp_masks([big, small], 0.5)
    assert int(big_mask.sum()) + int(small_mask.sum()) == 8  # the exact count, shared
    # Scaling a layer does not change its LAMP scores, so both layers keep the same share.
    assert torch.equal(big_mask, small_mask)
    # Within a layer LAMP still removes the smallest weights first.
    assert bool(small_mask[-4:].all()) and not bool(small_mask[:4].any())
