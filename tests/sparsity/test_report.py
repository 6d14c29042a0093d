"""sparsity_report: measured from the effective weights, N:M compliance per layer."""

from __future__ import annotations

import pytest
import torch

from codesign.config import LayerOverride, SparsitySpec
from codesign.sparsity import (
    masked_weights_from_state_dict,
    nm_compliant,
    prune_,
    sparsity_report,
    weight_masks,
)


def test_report_counts_zeros_of_effective_weights(tiny_net) -> None:
    spec = SparsitySpec("2:4", overrides=(LayerOverride("fc", sparsity="0.25"),))
    with pytest.warns(UserWarning):
        prune_(tiny_net, spec)
    report = sparsity_report(tiny_net)
    rows = {row["name"]: row for row in report["layers"]}
    assert [rows[n]["pattern"] for n in ("conv1", "block.conv_a", "block.conv_b", "fc")] == [
        "dense",
        "2:4",
        "dense",
        "unstructured",
    ]
    assert rows["block.conv_a"]["sparsity"] == 0.5 and rows["block.conv_a"]["nm_compliant"] is True
    assert rows["fc"]["zeros"] == 20 and rows["fc"]["nm_compliant"] is None
    params = sum(row["params"] for row in rows.values())
    assert report["params"] == params
    assert report["sparsity"] == pytest.approx((216 + 20) / params)
    assert report["pruned_sparsity"] == pytest.approx((216 + 20) / (432 + 80))


def test_report_flags_a_group_that_breaks_the_pattern(tiny_net) -> None:
    with pytest.warns(UserWarning):
        prune_(tiny_net, SparsitySpec("2:4"))
    with torch.no_grad():
        weight_masks(tiny_net)["block.conv_a"].mask[0, :4, 0, 0] = True  # one dense group
    row = next(r for r in sparsity_report(tiny_net)["layers"] if r["name"] == "block.conv_a")
    assert row["nm_compliant"] is False


def test_saved_state_dict_can_be_checked_without_the_model(tiny_net) -> None:
    with pytest.warns(UserWarning):
        prune_(tiny_net, SparsitySpec("2:4"))
    weights = masked_weights_from_state_dict(tiny_net.state_dict())
    assert list(weights) == ["block.conv_a"]
    assert torch.equal(weights["block.conv_a"], tiny_net.block.conv_a.weight)
    assert nm_compliant(weights["block.conv_a"], 2, 4)
