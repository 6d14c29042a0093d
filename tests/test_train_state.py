"""Resumable training state is keyed by its settings and verified; divergence stops training.

A tiny conv + BN + linear model on a 400-image sample of the digits trains in a fraction of a
second per epoch, so every claim is checked on real training rather than on stubs.
"""

import dataclasses
import math

import pytest
import torch
from torch import nn

from codesign.config import TrainSpec
from codesign.data import load_dataset
from codesign.errors import CheckpointError, DivergenceError
from codesign.io import StaleStateWarning
from codesign.train import train

SPEC = TrainSpec(epochs=3, lr=0.05, batch_size=128, seed=3)


class Killed(Exception):
    """Stands in for a scheduler's kill in the middle of a run."""


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", max_train=400)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


def steps_per_epoch(dataset, spec: TrainSpec) -> int:
    return math.ceil(len(dataset.train) / spec.batch_size)


def trained(dataset, spec=SPEC, **kwargs) -> tuple[nn.Module, list[int]]:
    """A tiny model trained with ``spec``; also the steps this call ran."""
    model = tiny_model()
    seen: list[int] = []
    train(model, dataset, spec, on_step=seen.append, progress=False, **kwargs)
    return model, seen


def kill_after_first_epoch(dataset, path, spec=SPEC, **kwargs) -> None:
    """Run until the first epoch's state is written, then die."""
    first_of_second = steps_per_epoch(dataset, spec)

    def on_step(step: int) -> None:
        if step == first_of_second:
            raise Killed

    with pytest.raises(Killed):
        train(
            tiny_model(), dataset, spec, on_step=on_step, state_path=path, progress=False, **kwargs
        )
    assert path.is_file()


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_resume_with_same_settings_equals_an_uninterrupted_run(digits, tmp_path):
    uninterrupted, _ = trained(digits)
    path = tmp_path / "state.pt"
    kill_after_first_epoch(digits, path)
    resumed, seen = trained(digits, state_path=path)
    assert seen[0] == steps_per_epoch(digits, SPEC)  # it resumed: epoch 1 was not re-run
    assert_same_weights(resumed, uninterrupted)
    # and a state file makes no difference to an uninterrupted run either
    with_state, _ = trained(digits, state_path=tmp_path / "fresh.pt")
    assert_same_weights(with_state, uninterrupted)


@pytest.mark.parametrize(
    "change",
    [{"spec": dataclasses.replace(SPEC, lr=0.02)}, {"state_key": "quant W8A8"}],
    ids=["other TrainSpec", "other state_key"],
)
def test_state_from_other_settings_is_not_resumed(digits, tmp_path, change):
    path = tmp_path / "state.pt"
    kill_after_first_epoch(digits, path, state_key="quant W4A4")
    spec = change.get("spec", SPEC)
    state_key = change.get("state_key", "quant W4A4")
    with pytest.warns(StaleStateWarning, match=r"written with other settings.*starting over"):
        rerun, seen = trained(digits, spec, state_path=path, state_key=state_key)
    assert seen[0] == 0  # started from the beginning
    fresh, _ = trained(digits, spec)
    assert_same_weights(rerun, fresh)
    # the stale state was overwritten: the same settings now find their own state (complete)
    again, seen_again = trained(digits, spec, state_path=path, state_key=state_key)
    assert seen_again == []
    assert_same_weights(again, fresh)


def test_truncated_state_is_refused_and_nothing_loaded(digits, tmp_path):
    path = tmp_path / "state.pt"
    kill_after_first_epoch(digits, path)
    path.write_bytes(path.read_bytes()[:-50])
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as exc_info:
        train(model, digits, SPEC, state_path=path, progress=False)
    assert str(exc_info.value) == (
        f"training state {path} is corrupt (truncated or modified: its sha256 does not match "
        "the one written in it); delete it to start over"
    )
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_diverging_loss_names_epoch_and_step_and_writes_no_state(digits, tmp_path):
    path = tmp_path / "state.pt"
    spec = dataclasses.replace(SPEC, lr=1e30)
    with pytest.raises(DivergenceError) as exc_info:
        train(tiny_model(), digits, spec, state_path=path, progress=False)
    message = str(exc_info.value)
    total = spec.epochs * steps_per_epoch(digits, spec)
    assert message.startswith("training diverged: the loss became NaN/Inf at epoch 1, step ")
    assert message.endswith(f"(of {total}); lower the learning rate (lr=1e+30)")
    assert not path.exists()  # a diverged state is never written, so never resumed


def test_non_finite_weights_with_a_finite_loss_are_caught(digits):
    model = tiny_model()
    bn = model[1]

    def poison(step: int) -> None:
        # In training mode BN normalises with batch statistics, so the loss stays finite
        # while the running mean it will use at inference becomes Inf.
        if step == 1:
            bn.running_mean.fill_(float("inf"))

    with pytest.raises(DivergenceError, match=r"^training diverged: 1.running_mean became "):
        train(model, digits, SPEC, on_step=poison, progress=False)


def test_qat_state_is_keyed_by_the_build(digits, tmp_path):
    """Through the pipeline: a W4A4 QAT state in a folder is not resumed by a W8A8 build."""
    import warnings

    from codesign.config import QuantSpec
    from codesign.models import create_model
    from codesign.pipeline import BuildContext, build, variant_steps

    float_model = create_model("resnet8", num_classes=10, in_channels=1).eval()
    ctx = BuildContext(float_model, digits, calib_samples=64, state_dir=tmp_path, progress=False)
    qat = TrainSpec(epochs=1, lr=1e-3, batch_size=512)

    def quant(bits: int) -> QuantSpec:
        return QuantSpec(weight_bits=bits, act_bits=bits, method="minmax")

    w4, _ = build(ctx, variant_steps(quant=quant(4), qat=qat))
    assert (tmp_path / "qat_state.pt").is_file()
    with pytest.warns(StaleStateWarning):
        w8, _ = build(ctx, variant_steps(quant=quant(8), qat=qat))
    # the W8A8 state replaced it; with its own finished state there, the same build resumes
    # (nothing left to train) and gives the same model
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleStateWarning)
        again, _ = build(ctx, variant_steps(quant=quant(8), qat=qat))
    assert_same_weights(again, w8)
    assert not all(torch.equal(a, b) for a, b in zip(w4.parameters(), w8.parameters(), strict=True))
