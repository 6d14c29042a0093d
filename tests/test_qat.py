"""QAT: the LSQ gradient scale, progressive stages (widths, range re-estimation, resumable
stages) and the progressive settings through specs, recipes and the command line.

ResNet-8 on a 400-image digits sample trains an epoch in a fraction of a second, so every
claim is checked on real training rather than on stubs.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

import codesign.quant.qat as qat_module
from codesign.config import (
    DEFAULT_QAT,
    LayerOverride,
    QATSpec,
    QATStage,
    QuantSpec,
    check_progressive,
    to_dict,
)
from codesign.data import load_dataset
from codesign.data.loops import make_forward_loop
from codesign.errors import ConfigError
from codesign.models import create_model
from codesign.pipeline import BuildContext, build, variant_steps
from codesign.quant import calibrate, quantize_
from codesign.quant.ptq import quant_layers
from codesign.quant.qat import layer_widths, recalibrate_, set_widths_, stage_widths
from codesign.quant.quantizers import ActQuantizer, WeightQuantizer
from codesign.recipe import load_recipe, recipe_from_dict

from .test_cli import run_cli

W2A2 = QuantSpec(weight_bits=2, act_bits=2, keep_8bit=("first", "last"), method="minmax")
# One optimizer step per epoch (400 images, batch 512): kill points are exact.
PROGRESSIVE = QATSpec(epochs=2, lr=1e-3, batch_size=512, progressive=(QATStage(bits=4, epochs=2),))


class Killed(Exception):
    """Stands in for a scheduler's kill in the middle of a run."""


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", max_train=400)


def float_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10, in_channels=1).eval()


def lsq_step_gradient(x: torch.Tensor, s: float, qmin: int, qmax: int) -> torch.Tensor:
    """d/ds of s * clamp(round(x / s), qmin, qmax) summed over x, the straight-through
    estimator on the rounding (LSQ, Esser et al. 2020, eq. 3): round(v) - v strictly inside
    the grid, the bound itself where the rounded code reaches or passes it."""
    v = x / s
    r = torch.round(v)
    return torch.where(r <= qmin, float(qmin), torch.where(r >= qmax, float(qmax), r - v)).sum()


def test_activation_step_gradient_is_scaled_by_one_over_sqrt_n_qmax():
    torch.manual_seed(1)
    quantizer = ActQuantizer(bits=3)
    quantizer.scale.data.fill_(0.4)
    quantizer.learn_scale = True
    quantizer.scale.requires_grad_(True)
    x = torch.randn(2, 3, 4, 4) * 2
    quantizer(x).sum().backward()
    factor = 1.0 / math.sqrt(3 * 4 * 4 * 7)  # features per sample, unsigned 3-bit qmax = 7
    expected = factor * lsq_step_gradient(x, 0.4, 0, 7)
    assert quantizer.scale.grad is not None
    assert torch.allclose(quantizer.scale.grad, expected, atol=1e-5)


def test_weight_step_gradient_is_scaled_per_channel():
    torch.manual_seed(2)
    weight = torch.randn(3, 2, 3, 3)
    quantizer = WeightQuantizer(weight.shape, bits=2)
    quantizer.scale.data.copy_(torch.tensor([0.5, 0.8, 1.1]).view(3, 1, 1, 1))
    quantizer.learn_scale = True
    quantizer.scale.requires_grad_(True)
    quantizer(weight).sum().backward()
    factor = 1.0 / math.sqrt(2 * 3 * 3 * 1)  # weights per channel, signed 2-bit qmax = 1
    expected = torch.stack(
        [factor * lsq_step_gradient(weight[k], s, -2, 1) for k, s in enumerate([0.5, 0.8, 1.1])]
    )
    assert quantizer.scale.grad is not None
    assert torch.allclose(quantizer.scale.grad.flatten(), expected, atol=1e-5)


def test_stage_widths_raise_only_the_narrower_quantizers():
    final = {"conv1": (8, 8), "a": (2, 2), "b": (2, 4), "fc": (8, 8)}
    assert stage_widths(final, 3) == {"conv1": (8, 8), "a": (3, 3), "b": (3, 4), "fc": (8, 8)}


def test_widening_re_estimates_ranges_and_codes_lie_on_the_new_grid(digits):
    model = quantize_(float_model(), W2A2)
    loop = make_forward_loop(digits.calibration_set(64)[0], 64)
    calibrate(model, loop, W2A2, learned_rounding=False, float_model=float_model())
    final = layer_widths(model)
    before = {name: layer.weight_quantizer.scale.clone() for name, layer in quant_layers(model)}
    changed = set_widths_(model, stage_widths(final, 4))
    narrow = [name for name, (w, a) in final.items() if (w, a) == (2, 2)]
    assert len(changed) == 2 * len(narrow) and narrow  # the weight and input quantizer each
    recalibrate_(model, loop, changed)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        layer.input_quantizer.register_forward_hook(
            lambda module, inputs, output, name=name: seen.setdefault(name, output / module.scale)
        )
        for name, layer in quant_layers(model)
    ]
    with torch.no_grad():
        model(digits.train.images[:32])
    for hook in hooks:
        hook.remove()
    for name, layer in quant_layers(model):
        weights = layer.weight_quantizer
        with torch.no_grad():
            exact = layer.weight / weights.scale
        codes = exact.round()
        assert torch.allclose(exact, codes, atol=1e-4)
        if name in narrow:
            assert (weights.qmin, weights.qmax, layer.input_quantizer.qrange) == (-8, 7, (0, 15))
            assert codes.min() >= -8 and codes.max() <= 7 and codes.abs().max() > 1
            assert not torch.equal(weights.scale, before[name])  # re-estimated for 4 bits
            inputs = seen[name]
            assert torch.allclose(inputs, inputs.round(), atol=1e-4)
            assert inputs.round().min() >= 0 and inputs.round().max() <= 15
        else:
            assert torch.equal(weights.scale, before[name])  # 8-bit layers keep their ranges
    set_widths_(model, final)
    assert layer_widths(model) == final


def record_stage_widths(monkeypatch, kill_at: int | None = None) -> list[dict]:
    """Wrap the training loop QAT calls: record the widths each stage trains at, and raise
    Killed before optimizer step number ``kill_at`` (1-based, counted over all stages)."""
    widths: list[dict] = []
    steps = [0]
    real_train = qat_module.train

    def train(model, *args, on_step=None, **kwargs):
        widths.append(layer_widths(model))
        inner = on_step  # QAT's own hook (the step-size bound below 3 bits)

        def counted(step: int) -> None:
            steps[0] += 1
            if kill_at is not None and steps[0] == kill_at:
                raise Killed
            if inner is not None:
                inner(step)

        return real_train(model, *args, on_step=counted, **kwargs)

    monkeypatch.setattr(qat_module, "train", train)
    return widths


def progressive_build(digits, state_dir: Path | None) -> torch.nn.Module:
    ctx = BuildContext(float_model(), digits, calib_samples=64, state_dir=state_dir, progress=False)
    model, _ = build(ctx, variant_steps(quant=W2A2, qat=PROGRESSIVE))
    return model


def test_progressive_stages_train_wider_first_and_end_at_the_requested_widths(digits, monkeypatch):
    widths = record_stage_widths(monkeypatch)
    model = progressive_build(digits, None)
    narrow = {name for name, bits in widths[-1].items() if bits == (2, 2)}
    assert len(widths) == 2 and narrow and len(narrow) < len(widths[-1])
    assert all(widths[0][name] == (4, 4) for name in narrow)
    assert all(widths[0][name] == (8, 8) for name in widths[0] if name not in narrow)
    for name, layer in quant_layers(model):
        expected = (2, 2) if name in narrow else (8, 8)
        assert (layer.weight_bits, layer.input_bits) == expected
        codes, _ = layer.integer_weight()
        low, high = (-2, 1) if name in narrow else (-128, 127)
        assert low <= codes.min() and codes.max() <= high
        assert not layer.weight_quantizer.scale.requires_grad  # LSQ switched off again


@pytest.mark.parametrize("kill_at", [2, 4], ids=["in-stage-1", "in-final-stage"])
def test_a_killed_progressive_run_resumes_to_the_uninterrupted_model(
    digits, tmp_path, monkeypatch, kill_at
):
    with monkeypatch.context() as patch:
        record_stage_widths(patch)
        straight = progressive_build(digits, tmp_path / "straight")
    with monkeypatch.context() as patch:
        record_stage_widths(patch, kill_at=kill_at)
        with pytest.raises(Killed):
            progressive_build(digits, tmp_path / "killed")
    stage_file = tmp_path / "killed" / "qat_state.stage1.pt"
    assert stage_file.is_file()
    assert (tmp_path / "killed" / "qat_state.pt").is_file() == (kill_at == 4)
    with monkeypatch.context() as patch:
        widths = record_stage_widths(patch)
        resumed = progressive_build(digits, tmp_path / "killed")
    assert len(widths) == 2
    straight_state, resumed_state = straight.state_dict(), resumed.state_dict()
    assert straight_state.keys() == resumed_state.keys()
    for name, tensor in straight_state.items():
        assert torch.equal(tensor, resumed_state[name]), name


def test_progressive_settings_round_trip_and_stay_out_of_keys_when_unused():
    assert "progressive" not in to_dict(DEFAULT_QAT)
    data = to_dict(PROGRESSIVE)
    assert data["progressive"] == [{"bits": 4, "epochs": 2}]
    assert QATSpec.from_dict(data) == PROGRESSIVE
    assert PROGRESSIVE.total_epochs == 4
    with pytest.raises(ConfigError, match="must decrease"):
        QATSpec(progressive=(QATStage(3, 1), QATStage(4, 1)))
    with pytest.raises(ConfigError, match="not wider than the final W2A2"):
        check_progressive(
            QuantSpec(weight_bits=2, act_bits=2), QATSpec(progressive=(QATStage(2, 1),))
        )
    check_progressive(QuantSpec(weight_bits=2, act_bits=4), QATSpec(progressive=(QATStage(3, 1),)))


RECIPE = """schema_version = 1
[model]
checkpoint = "bundled:resnet8-digits"
[[variants]]
name = "w2a2"
quant = {{ weight_bits = 2, act_bits = 2 }}
qat = {{ epochs = 1, progressive = {stages} }}
"""


def test_recipe_progressive_loads_round_trips_and_bad_stages_name_their_path(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(stages="[{ bits = 4, epochs = 2 }, { bits = 3, epochs = 1 }]"))
    recipe = load_recipe(path)
    qat = recipe.variants[0].qat
    assert isinstance(qat, QATSpec) and qat.progressive == (QATStage(4, 2), QATStage(3, 1))
    assert qat.lr == DEFAULT_QAT.lr  # the keys left out take the command's settings
    assert recipe_from_dict(recipe.to_dict()) == recipe
    bad = {
        "[{ bits = 9, epochs = 2 }]": r"variants\[0\]\.qat\.progressive\[0\]\.bits: .*2 to 8",
        "[{ bits = 4, epochs = 0 }]": r"variants\[0\]\.qat\.progressive\[0\]\.epochs: .*>= 1",
        "[{ bits = 4 }]": r"missing key .*progressive\[0\]\.epochs",
        "[{ bits = 2, epochs = 1 }]": "not wider than the final W2A2",
        "[{ bits = 3, epochs = 1 }, { bits = 4, epochs = 1 }]": "must decrease",
    }
    for stages, message in bad.items():
        path.write_text(RECIPE.format(stages=stages))
        with pytest.raises(ConfigError, match=message):
            load_recipe(path)


def test_cli_progressive_flag_builds_the_spec_and_bad_values_exit_2(tmp_path):
    import argparse

    from codesign.cli import demo_checkpoint
    from codesign.cli.specs import qat_train_spec

    args = argparse.Namespace(epochs=3, lr=None, batch_size=None, progressive="4:2, 3:1", seed=0)
    assert qat_train_spec(args).progressive == (QATStage(4, 2), QATStage(3, 1))
    base = ["qat", "--checkpoint", str(demo_checkpoint()), "--data", "digits"]
    cases = {
        ("2", "4-2"): "expected BITS:EPOCHS",
        ("2", "3:1,4:1"): "must decrease",
        ("2", "2:1"): "not wider than the final W2A2",
        ("4", "9:1"): "from 2 to 8",
    }
    for (bits, stages), message in cases.items():
        out = tmp_path / f"out-{len(stages)}-{bits}"
        flags = ["--weight-bits", bits, "--act-bits", bits, "--progressive", stages]
        result = run_cli(*base, *flags, "--out", str(out))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert not out.exists() or not any(out.iterdir())


def test_step_bounds_hold_a_step_size_under_an_exploding_gradient():
    weight = torch.randn(4, 3, 3, 3)
    quantizer = WeightQuantizer(weight.shape, bits=2)
    quantizer.calibrate(weight, "mse")
    quantizer.learn_scale = True
    quantizer.scale.requires_grad_(True)
    start = quantizer.scale.detach().clone()
    bounds = qat_module.StepBounds([quantizer.scale], ratio=2.0)
    optimizer = torch.optim.SGD([quantizer.scale], lr=1.0)
    for sign in (1e6, -1e6):
        (sign * quantizer(weight).sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
        stepped = quantizer.scale.detach().abs().clone()
        assert bool(((stepped > start * 2) | (stepped < start / 2)).all())  # far outside
        bounds.apply_()
        expected = torch.where(stepped > start * 2, start * 2, start / 2)
        assert torch.allclose(quantizer.scale.detach(), expected)
    with pytest.raises(ValueError, match="at least 1"):
        qat_module.StepBounds([quantizer.scale], ratio=0.5)


def lsq_run(digits, spec: QuantSpec, lr: float) -> tuple[dict, dict]:
    """QAT a calibrated ResNet-8 one epoch at ``lr``; returns each quantizer's step size
    before and after (by its position among the model's quantizers)."""
    model = quantize_(float_model(), spec)
    loop = make_forward_loop(digits.calibration_set(64)[0], 64)
    calibrate(model, loop, spec, learned_rounding=False, float_model=float_model())
    before = {
        i: q.scale.detach().abs().clone() for i, q in enumerate(qat_module._quantizers(model))
    }
    train = QATSpec(epochs=1, lr=lr, batch_size=100, weight_decay=0.0)
    qat_module.train_qat(model, digits, train, progress=False)
    after = {i: q.scale.detach().clone() for i, q in enumerate(qat_module._quantizers(model))}
    return before, after


def test_two_bit_qat_keeps_every_step_size_within_its_bound_and_four_bit_does_not(digits):
    assert qat_module.bounds_step_sizes({"a": (8, 8), "b": (2, 4)})
    assert not qat_module.bounds_step_sizes({"a": (8, 8), "b": (3, 3), "c": (4, 4)})
    ratio = qat_module.STEP_BOUND_RATIO
    w4a4 = QuantSpec(weight_bits=4, act_bits=4, keep_8bit=("first", "last"), method="minmax")
    before, after = lsq_run(digits, w4a4, lr=0.5)
    ratios = [float((after[i] / before[i]).max().clamp(min=1e-12)) for i in before]
    assert max(ratios) > ratio  # unbounded at 4 bits, this rate moves some step far
    before, after = lsq_run(digits, W2A2, lr=0.5)
    moved = False
    for i in before:
        assert bool((after[i] >= before[i] / ratio * (1 - 1e-6)).all()), i
        assert bool((after[i] <= before[i] * ratio * (1 + 1e-6)).all()), i
        moved |= not torch.allclose(after[i], before[i])
    assert moved


def test_command_schedule_follows_the_final_widths_below_four_bits():
    import argparse

    from codesign.cli.specs import qat_train_spec

    def spec(weight_bits, act_bits, epochs=None, progressive=None):
        args = argparse.Namespace(
            weight_bits=weight_bits,
            act_bits=act_bits,
            epochs=epochs,
            lr=None,
            batch_size=None,
            progressive=progressive,
            seed=0,
        )
        return qat_train_spec(args)

    assert spec(4, 4) == spec(8, 4) == dataclasses.replace(DEFAULT_QAT)  # W4A4 as before
    w3a3 = spec(3, 3)
    assert (w3a3.epochs, w3a3.progressive, w3a3.lr) == (16, (QATStage(4, 4),), DEFAULT_QAT.lr)
    assert (spec(2, 2).epochs, spec(2, 2).progressive) == (32, ())
    assert (spec(2, 4).epochs, spec(4, 3).progressive) == (32, (QATStage(4, 4),))
    # A given --epochs or --progressive replaces the whole derived schedule.
    assert (spec(3, 3, epochs=5).epochs, spec(3, 3, epochs=5).progressive) == (5, ())
    given = spec(2, 2, progressive="4:1")
    assert (given.epochs, given.progressive) == (DEFAULT_QAT.epochs, (QATStage(4, 1),))


def test_auto_starts_qat_from_learned_rounding_only_below_three_bits():
    def rounding(weight_bits, act_bits, method="auto"):
        quant = QuantSpec(weight_bits=weight_bits, act_bits=act_bits, method=method)
        (ptq, _) = variant_steps(quant=quant, qat=DEFAULT_QAT)
        return ptq.learned_rounding

    assert rounding(2, 2) and rounding(2, 4) and rounding(4, 2)
    assert not rounding(3, 3) and not rounding(4, 4) and not rounding(8, 8)
    assert rounding(4, 4, "brecq") and not rounding(2, 2, "mse")
    # A per-layer override below 3 bits counts; a skipped layer's widths do not.
    mixed = QuantSpec(overrides=(LayerOverride("layer1.*", act_bits=2),))
    assert variant_steps(quant=mixed, qat=DEFAULT_QAT)[0].learned_rounding
    skipped = QuantSpec(overrides=(LayerOverride("fc", weight_bits=2, skip=True),))
    assert not variant_steps(quant=skipped, qat=DEFAULT_QAT)[0].learned_rounding
    assert (mixed.narrowest_bits, skipped.narrowest_bits, QuantSpec().narrowest_bits) == (2, 8, 8)
    (ptq,) = variant_steps(quant=QuantSpec(weight_bits=4, act_bits=4))
    assert ptq.learned_rounding  # PTQ alone: as before
