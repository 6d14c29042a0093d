"""``auto`` with a calibration time limit: the best validation score wins (top-1, then KL
from the float logits), candidates that would not fit are skipped, and the choice is
recorded in result.json."""

import json

import pytest
import torch
from torch import nn

from codesign.cli import demo_checkpoint, main
from codesign.quant import choice
from codesign.quant.choice import choose_method, kl_from_float


class FakeClock:
    """Seconds advance only when a stand-in candidate 'runs'."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stand_ins(clock: FakeClock, seconds: dict[str, float], scores: dict[str, tuple]):
    """calibrate_with / score closures: each method takes ``seconds[method]`` on the clock
    and scores ``scores[method]`` = (top-1, KL)."""
    ran = []

    def calibrate_with(method):
        ran.append(method)
        clock.now += seconds[method]
        model = nn.Identity()
        model.method = method
        return model, {"method": method}

    def score(model):
        top1, kl = scores[model.method]
        return {"validation_top1": top1, "validation_kl": kl}

    return calibrate_with, score, ran


def test_best_top1_wins_and_kl_breaks_ties():
    clock = FakeClock()
    seconds = {"gptq": 1.0, "adaround": 9.0, "brecq": 17.0}
    scores = {"gptq": (99.0, 0.01), "adaround": (100.0, 0.05), "brecq": (100.0, 0.02)}
    calibrate_with, score, ran = stand_ins(clock, seconds, scores)
    model, record = choose_method(
        ("gptq", "adaround", "brecq"), calibrate_with, score, 1000.0, clock
    )
    assert ran == ["gptq", "adaround", "brecq"]
    assert model.method == record["chosen"] == "brecq"
    assert record["candidates"]["adaround"]["calib_seconds"] == 9.0
    assert record["candidates"]["gptq"]["validation_top1"] == 99.0
    assert record["seconds"] == 27.0


def test_candidates_estimated_past_the_limit_are_skipped_but_the_first_always_runs(monkeypatch):
    monkeypatch.setattr(choice, "RELATIVE_COST", {"gptq": 1.0, "adaround": 9.0, "brecq": 17.0})
    clock = FakeClock()
    seconds = {"gptq": 2.0, "adaround": 18.0, "brecq": 34.0}
    scores = {"gptq": (90.0, 0.1), "adaround": (95.0, 0.05), "brecq": (99.0, 0.01)}
    calibrate_with, score, ran = stand_ins(clock, seconds, scores)
    # gptq takes 2 s; adaround is estimated at 2 * 9 = 18 s and fits in 25 - 2 = 23 s left;
    # brecq at 2 * 17 = 34 s does not fit in the 5 s then left.
    _, record = choose_method(("gptq", "adaround", "brecq"), calibrate_with, score, 25.0, clock)
    assert ran == ["gptq", "adaround"]
    assert record["chosen"] == "adaround"
    skipped = record["candidates"]["brecq"]
    assert skipped["estimated_seconds"] == pytest.approx(34.0)
    assert skipped["seconds_left"] == pytest.approx(5.0)
    # A limit shorter than the first candidate still yields its model.
    clock = FakeClock()
    calibrate_with, score, ran = stand_ins(clock, seconds, scores)
    _, record = choose_method(("gptq", "adaround", "brecq"), calibrate_with, score, 0.5, clock)
    assert ran == ["gptq"] and record["chosen"] == "gptq"


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan"), float("inf")])
def test_choose_method_refuses_a_bad_limit(budget):
    with pytest.raises(ValueError, match="finite number > 0"):
        choose_method(("gptq",), lambda m: (nn.Identity(), {}), lambda m: {}, budget)


def test_kl_from_float_is_zero_for_equal_logits_and_matches_the_definition():
    torch.manual_seed(0)
    p_logits, q_logits = torch.randn(6, 10), torch.randn(6, 10)
    assert kl_from_float(p_logits, p_logits) == pytest.approx(0.0, abs=1e-7)
    p, q = p_logits.softmax(1), q_logits.softmax(1)
    expected = float((p * (p.log() - q.log())).sum(1).mean())
    assert kl_from_float(p_logits, q_logits) == pytest.approx(expected, rel=1e-5)


def test_ptq_auto_with_a_limit_records_every_candidate_and_keeps_the_best(tmp_path, monkeypatch):
    # Two quick real candidates on the bundled digits model: nearest rounding with min-max
    # ranges, and GPTQ; the pipeline scores both on the validation split.
    monkeypatch.setattr(choice, "AUTO_CANDIDATES", ("minmax", "gptq"))
    monkeypatch.setattr(choice, "RELATIVE_COST", {"minmax": 1.0, "gptq": 1.0})
    out = tmp_path / "out"
    code = main(
        [
            "ptq",
            "--checkpoint",
            str(demo_checkpoint()),
            "--weight-bits",
            "3",
            "--act-bits",
            "4",
            "--calib-samples",
            "32",
            "--calib-budget-s",
            "100000",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    record = result["method_choice"]
    candidates = record["candidates"]
    assert set(candidates) == {"minmax", "gptq"}
    best = max(candidates, key=lambda m: choice.rank_key(candidates[m]))
    assert record["chosen"] == best
    assert result["quant"]["calib_budget_s"] == 100000.0
    assert result["calib_seconds"] >= sum(c["calib_seconds"] for c in candidates.values())


@pytest.mark.parametrize(
    "weight_bits,act_bits,learned,expected",
    [
        (8, 8, True, "adaround"),  # nothing below 8 bits: min-max ranges, nothing to round
        (4, 8, True, "gptq"),
        (4, 4, True, "brecq"),
        (8, 4, True, "brecq"),
        (4, 4, False, "adaround"),  # before QAT: MSE ranges, nearest rounding
    ],
)
def test_auto_without_a_limit_follows_the_bit_widths(weight_bits, act_bits, learned, expected):
    from codesign.config import QuantSpec
    from codesign.models import create_model
    from codesign.quant import quantize_
    from codesign.quant.ptq import auto_method

    spec = QuantSpec(weight_bits=weight_bits, act_bits=act_bits, keep_8bit=("first", "last"))
    model = quantize_(create_model("resnet8", num_classes=10), spec)
    assert auto_method(model, learned) == expected
