"""N:M channel permutation search: a known optimum, exact function preservation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from codesign.config import LayerOverride, SparsitySpec
from codesign.errors import ConfigError, SparsityError
from codesign.sparsity import prune_
from codesign.sparsity.masks import kept_magnitude, nm_mask
from codesign.sparsity.permutation import (
    permutable_chains,
    permute_for_nm_,
    permute_for_spec_,
    search_permutation,
)


def test_search_finds_the_known_optimum() -> None:
    # 1:2 on magnitudes [10, 9, 1, 1]: groups (10, 9), (1, 1) keep 11; pairing each large
    # channel with a small one keeps 10 + 9 = 19, the optimum.
    weight = torch.tensor([[10.0, 9.0, 1.0, 1.0]])
    order = search_permutation(weight, 1, 2)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    permuted = weight[:, order]
    assert kept_magnitude(permuted, nm_mask(permuted, 1, 2)) == 19.0


def _block() -> nn.Sequential:
    torch.manual_seed(0)
    block = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)
    )
    block[1].running_mean.normal_()
    block[1].running_var.uniform_(0.5, 2.0)
    block[1].weight.data.normal_()
    return block.eval()


def test_permutation_preserves_the_function_and_raises_kept_magnitude() -> None:
    block = _block()
    assert permutable_chains(block) == [("0", "3", ["1", "2"])]
    images = torch.randn(2, 4, 6, 6)
    before = block(images)
    (result,) = permute_for_nm_(block, 2, 4)
    assert result.layer == "3" and result.kept_after >= result.kept_before
    torch.testing.assert_close(block(images), before, rtol=1e-5, atol=1e-5)
    weight = block[3].weight
    assert kept_magnitude(weight, nm_mask(weight, 2, 4)) == pytest.approx(result.kept_after)


def test_permutation_after_pruning_is_an_error() -> None:
    block = _block()
    prune_(block, SparsitySpec("2:4", exclude=("0",)))
    with pytest.raises(SparsityError, match="before prune_"):
        permute_for_nm_(block)


def _resnet8() -> nn.Module:
    from codesign.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_channels=1).eval()
    for module in model.modules():  # non-trivial BN, so a wrong permutation shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
    return model


def test_spec_permutes_only_the_layers_it_prunes_n_m() -> None:
    model = _resnet8()
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        before = model(images)
    chains = {consumer for _, consumer, _ in permutable_chains(model)}
    kept_out = sorted(chains)[0]
    spec = SparsitySpec("2:4", permute=True, overrides=(LayerOverride(kept_out, sparsity="dense"),))
    summary = permute_for_spec_(model, spec)
    rows = {row["layer"]: row for row in summary["layers"]}
    assert set(rows) == chains - {kept_out}
    assert all(row["kept_after"] >= row["kept_before"] for row in rows.values())
    assert summary["kept_after"] == pytest.approx(sum(r["kept_after"] for r in rows.values()))
    assert summary["kept_after"] > summary["kept_before"]  # random weights leave room
    with torch.no_grad():
        torch.testing.assert_close(model(images), before, rtol=1e-4, atol=1e-4)
    prune_(model, spec)  # the masks then keep exactly the reported magnitude
    for name, row in rows.items():
        weight = model.get_submodule(name).parametrizations.weight.original
        assert kept_magnitude(weight, nm_mask(weight, 2, 4)) == pytest.approx(row["kept_after"])


def test_spec_without_permute_or_without_n_m() -> None:
    model = _resnet8()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert permute_for_spec_(model, SparsitySpec("2:4")) == {}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(SparsityError, match="prunes no layer N:M"):
        permute_for_spec_(model, SparsitySpec("0.5", permute=True))
    with pytest.raises(ConfigError, match=r"SparsitySpec\.permute: expected true or false"):
        SparsitySpec("2:4", permute="yes")  # type: ignore[arg-type]
