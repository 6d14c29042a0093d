"""prune_: layer choice, overrides, masks as first parametrization, surviving training."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from codesign.config import LayerOverride, SparsitySpec
from codesign.errors import ConfigError, SparsityError
from codesign.sparsity import (
    NMPattern,
    SparsityWarning,
    WeightMask,
    nm_compliant,
    parse_pattern,
    prune_,
    remove_pruning,
    update_masks_,
    weight_masks,
)


class Scale(nn.Module):
    """A stand-in for a non-mask parametrization (e.g. a weight fake-quant)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * 2


def test_default_excludes_first_conv_and_classifier_and_warns_on_indivisible(tiny_net) -> None:
    with pytest.warns(SparsityWarning, match=r"'block\.conv_b' has 6 input channels"):
        prune_(tiny_net, SparsitySpec("2:4"))
    assert list(weight_masks(tiny_net)) == ["block.conv_a"]
    conv = tiny_net.block.conv_a
    # The mask is the first (here only) parametrization and its buffer is in the state_dict.
    assert isinstance(conv.parametrizations.weight[0], WeightMask)
    assert "block.conv_a.parametrizations.weight.0.mask" in tiny_net.state_dict()
    assert nm_compliant(conv.weight, 2, 4)
    assert float((conv.weight == 0).float().mean()) == 0.5


def test_strict_makes_an_indivisible_layer_an_error_and_changes_nothing(tiny_net) -> None:
    with pytest.raises(SparsityError, match=r"'block\.conv_b' has 6 input channels.*exclude it"):
        prune_(tiny_net, SparsitySpec("2:4", strict=True))
    assert not weight_masks(tiny_net)


def test_overrides_last_match_wins_and_can_include_an_excluded_layer(tiny_net) -> None:
    spec = SparsitySpec(
        "0.5",
        overrides=(
            LayerOverride("block.*", sparsity="0.25"),
            LayerOverride("block.conv_b", sparsity="1:2"),
            LayerOverride("fc", sparsity="0.75"),
        ),
    )
    prune_(tiny_net, spec)
    masks = weight_masks(tiny_net)
    assert sorted(masks) == ["block.conv_a", "block.conv_b", "fc"]
    assert masks["block.conv_b"].pattern == NMPattern(1, 2)
    assert float((tiny_net.block.conv_a.weight == 0).float().mean()) == pytest.approx(
        0.25, abs=0.01
    )
    assert float((tiny_net.fc.weight == 0).float().mean()) == 0.75


def test_skip_override_and_unknown_pattern(tiny_net) -> None:
    spec = SparsitySpec("0.5", overrides=(LayerOverride("block.conv_a", skip=True),))
    prune_(tiny_net, spec)
    assert list(weight_masks(tiny_net)) == ["block.conv_b"]
    with pytest.raises(ConfigError, match="matches no layer"):
        prune_(
            nn.Sequential(nn.Linear(4, 4)), SparsitySpec("0.5", overrides=(LayerOverride("nope"),))
        )


def test_nothing_left_to_prune_is_an_error() -> None:
    model = nn.Sequential()
    model.add_module("fc", nn.Linear(4, 4))
    with pytest.raises(SparsityError, match="no layer left to prune"):
        prune_(model, SparsitySpec("0.5"))


@pytest.mark.parametrize("text", ["3:2", "0:4", "1.0", "-0.5"])
def test_bad_levels_fail_before_any_change(tiny_net, text: str) -> None:
    with pytest.raises(ConfigError):  # the spec itself is refused, before any model is seen
        prune_(tiny_net, SparsitySpec(text))
    assert not weight_masks(tiny_net)
    with pytest.raises(SparsityError):  # and a pattern parsed in code, by the same rule
        parse_pattern(text)


def test_prune_after_quantization_or_twice_is_an_error(tiny_net) -> None:
    parametrize.register_parametrization(tiny_net.block.conv_a, "weight", Scale())
    with pytest.raises(SparsityError, match="prune before quantizing"):
        prune_(tiny_net, SparsitySpec("0.5"))
    fresh = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    prune_(fresh, SparsitySpec("0.5", exclude=()))
    with pytest.raises(SparsityError, match="already pruned"):
        prune_(fresh, SparsitySpec("0.5", exclude=()))


def test_masks_survive_optimizer_steps_and_load_from_state_dict(tiny_net) -> None:
    spec = SparsitySpec("0.6", overrides=(LayerOverride("block.conv_b", sparsity="dense"),))
    prune_(tiny_net, spec)
    zeros_before = tiny_net.block.conv_a.weight == 0
    optimizer = torch.optim.SGD(tiny_net.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        loss = tiny_net(torch.randn(4, 3, 8, 8, generator=generator)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(tiny_net.block.conv_a.weight == 0, zeros_before)
    # A fresh model pruned with the same spec takes the trained masks from the state_dict.
    other = type(tiny_net)()
    prune_(other, spec)
    other.load_state_dict(tiny_net.state_dict())
    assert torch.equal(other.block.conv_a.weight, tiny_net.block.conv_a.weight)


def test_gradual_update_is_monotone_and_global_scope_shares_one_threshold(tiny_net) -> None:
    spec = SparsitySpec("0.8", scope="global", exclude=())
    prune_(tiny_net, spec, target_fraction=0.0)
    layers = [tiny_net.conv1, tiny_net.block.conv_a, tiny_net.block.conv_b, tiny_net.fc]
    assert all((layer.weight != 0).all() for layer in layers)
    previous = None
    for fraction in (0.25, 0.5, 1.0):
        update_masks_(tiny_net, fraction)
        zeros = torch.cat([(layer.weight == 0).flatten() for layer in layers])
        assert int(zeros.sum()) == round(0.8 * fraction * zeros.numel())
        if previous is not None:
            assert bool((zeros | ~previous).all())  # every earlier zero is still zero
        previous = zeros
    kept = torch.cat([layer.weight[layer.weight != 0].abs() for layer in layers])
    original = torch.cat(
        [layer.parametrizations.weight.original.flatten().abs() for layer in layers]
    )
    assert kept.min() >= original.kthvalue(round(0.8 * original.numel())).values


def test_update_masks_needs_a_pruned_model(tiny_net) -> None:
    with pytest.raises(SparsityError, match="call prune_"):
        update_masks_(tiny_net, 0.5)


def test_remove_pruning_bakes_masks_and_keeps_a_following_parametrization(tiny_net) -> None:
    prune_(tiny_net, SparsitySpec("0.5", exclude=()))
    parametrize.register_parametrization(tiny_net.fc, "weight", Scale())
    conv_param = tiny_net.block.conv_a.parametrizations.weight.original
    expected_conv, expected_fc = (
        tiny_net.block.conv_a.weight.detach().clone(),
        tiny_net.fc.weight.detach().clone(),
    )
    remove_pruning(tiny_net)
    assert not weight_masks(tiny_net)
    assert not parametrize.is_parametrized(tiny_net.block.conv_a)
    assert tiny_net.block.conv_a.weight is conv_param  # optimizers stay valid
    assert torch.equal(tiny_net.block.conv_a.weight, expected_conv)
    assert isinstance(tiny_net.fc.parametrizations.weight[0], Scale)
    assert torch.equal(tiny_net.fc.weight, expected_fc)


def test_lamp_scope_prunes_the_spec_level_in_total_and_updates_monotonically(tiny_net) -> None:
    spec = SparsitySpec("0.8", scope="lamp", exclude=())
    prune_(tiny_net, spec, target_fraction=0.0)
    layers = [tiny_net.conv1, tiny_net.block.conv_a, tiny_net.block.conv_b, tiny_net.fc]
    previous = None
    for fraction in (0.5, 1.0):
        update_masks_(tiny_net, fraction)
        zeros = torch.cat([(layer.weight == 0).flatten() for layer in layers])
        assert int(zeros.sum()) == round(0.8 * fraction * zeros.numel())
        if previous is not None:
            assert bool((zeros | ~previous).all())
        previous = zeros
    # Every layer keeps its largest weight (LAMP score 1).
    assert all(int((layer.weight != 0).sum()) >= 1 for layer in layers)
