"""Per-image test correctness: packed bits that round-trip exactly, refuse anything that is not
exactly ``samples`` bits, and must agree with the counts beside them in ``variant.json``."""

from __future__ import annotations

import base64
import copy

import numpy as np
import pytest
import torch

from codesign.errors import ResultError
from codesign.per_image import PerImageCorrect
from codesign.pipeline.results import VariantResult

from .report.test_writer import _variant


@pytest.mark.parametrize("samples", [1, 7, 8, 9, 360, 1017])
def test_round_trip_is_exact_and_compact(samples: int) -> None:
    vector = np.random.default_rng(samples).random(samples) < 0.9
    stored = PerImageCorrect.of(torch.from_numpy(vector), "sha")
    again = PerImageCorrect.from_json(stored.to_json())
    assert again == stored and np.array_equal(again.vector(), vector)
    assert again.correct == int(vector.sum())
    # One bit per image, rounded up to whole bytes, in base64 (4 characters per 3 bytes).
    assert len(base64.b64decode(stored.bits)) == (samples + 7) // 8
    assert len(stored.bits) == 4 * -(-((samples + 7) // 8) // 3)


def test_bit_order_is_the_split_order() -> None:
    # Images 0 and 2 right: 0b10100000 = 0xA0, base64 "oA==".
    assert PerImageCorrect.of(np.array([True, False, True]), "d").bits == "oA=="
    assert PerImageCorrect.from_json(
        {"samples": 3, "split_sha256": "d", "bits": "oA=="}
    ).vector().tolist() == [True, False, True]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"samples": 3, "split_sha256": "d", "bits": "oQ=="}, "padding"),  # 0xA1: bit 8 set
        ({"samples": 9, "split_sha256": "d", "bits": "oA=="}, "do not hold 9"),
        ({"samples": 3, "split_sha256": "d", "bits": "o!=="}, "base64"),
        ({"samples": 0, "split_sha256": "d", "bits": ""}, ">= 1"),
        ({"samples": 3, "split_sha256": "d"}, "missing keys"),
    ],
)
def test_damaged_vectors_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ResultError, match=message):
        PerImageCorrect.from_json(data)


def test_pairing_needs_the_same_split() -> None:
    a = PerImageCorrect.of(np.ones(4, bool), "split-a")
    assert a.pairs_with(PerImageCorrect.of(np.zeros(4, bool), "split-a"))
    assert not a.pairs_with(PerImageCorrect.of(np.ones(4, bool), "split-b"))
    assert not a.pairs_with(PerImageCorrect.of(np.ones(5, bool), "split-a"))


def test_variant_json_needs_a_vector_that_matches_its_counts() -> None:
    data = _variant("v", 100.0, {"a": 1.0}).to_json()
    assert "test_correct" in data
    assert "test_correct" not in _variant("v", 100.0, {"a": 1.0}).summary_json()
    # A variant.json written before the vectors existed: refused (and so rebuilt), not read.
    missing = {k: v for k, v in data.items() if k != "test_correct"}
    with pytest.raises(ResultError, match="test_correct"):
        VariantResult.from_json(missing)
    wrong = copy.deepcopy(data)
    wrong["test_correct"]["bits"] = "AA=="  # 0 right, but the counts say 1 of 1
    with pytest.raises(ResultError, match="disagrees"):
        VariantResult.from_json(wrong)
