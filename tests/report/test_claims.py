"""Dominance claims in results.json and report.html carry their paired test: constructed
studies whose margins are known, so the p-values are known (computed another way here)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from codesign.errors import ResultError
from codesign.per_image import PerImageCorrect
from codesign.pipeline.results import VariantResult
from codesign.report import build_results
from codesign.report.claims import Claim, format_p
from codesign.report.html import render_report
from codesign.report.results import points_of, search_claims
from codesign.report.seeds import group_runs
from codesign.stats import seed_mean_comparison, wilson_interval

from .test_writer import _variant

IMAGES = 1000


def scored(
    name: str, correct: np.ndarray, energy: float, seed: int = 0, trained: bool = False
) -> VariantResult:
    """A scored variant on datapath "a" with the given per-image correctness and energy (uJ)."""
    config = {"name": name, **({"qat": {"epochs": 1}} if trained else {})}
    return dataclasses.replace(
        _variant(name, 0.0, {"a": energy}),
        config=config,
        seed=seed,
        top1=100.0 * int(correct.sum()) / correct.size,
        correct=int(correct.sum()),
        samples=correct.size,
        test_correct=PerImageCorrect.of(correct, "test-split"),
    )


def right(*ranges: tuple[int, int]) -> np.ndarray:
    """Correct exactly on the images of the given [start, stop) ranges."""
    vector = np.zeros(IMAGES, dtype=bool)
    for start, stop in ranges:
        vector[start:stop] = True
    return vector


BASE = right((0, 905))  # 90.5 %
CLOSE = right((0, 906))  # one image more than BASE: b = 1, c = 0
BIG = right((5, 935))  # 93.0 %: against BASE b = 30 (905..934), c = 5 (0..4)
P_BIG = 2 * sum(math.comb(35, i) for i in range(6)) / 2**35  # exact McNemar (30, 5)

# On datapath "a": the front is close (1 uJ) and big (3 uJ); base (2 uJ) is off it only
# because of close, by one image; other (4 uJ, base's images) is off it because of both.
STUDY = [
    scored("close", CLOSE, 1.0),
    scored("base", BASE, 2.0),
    scored("big", BIG, 3.0),
    scored("other", BASE, 4.0),
]
RECIPE = {"name": "claims", "seed": 0, "data": {"source": "digits"}}


def test_a_one_image_margin_is_not_significant_and_a_large_one_is() -> None:
    results = build_results(RECIPE, STUDY)
    assert results.pareto == {"a": ["close", "big"]}
    claims = {(c.winner, c.loser): c for c in results.pareto_claims}
    assert set(claims) == {("close", "base"), ("close", "other"), ("big", "other")}
    one_image = claims["close", "base"]
    assert (one_image.b, one_image.c, one_image.p_value) == (1, 0, 1.0)
    assert one_image.significant is False
    assert one_image.difference_points == pytest.approx(0.1)
    assert one_image.verdict() == "dominates base (p = 1, not significant)"
    large = claims["big", "other"]
    assert (large.b, large.c) == (30, 5)
    assert large.p_value == pytest.approx(P_BIG, rel=1e-12) and P_BIG < 1e-4
    assert large.significant is True
    assert large.verdict() == "dominates other (p < 0.0001, significant)"
    # In results.json: the claims with their verdicts, no per-image vectors.
    data = json.loads(json.dumps(results.to_json()))
    stored = {(c["winner"], c["loser"]): c for c in data["dominance"]["pareto"]}
    assert stored["close", "base"]["significant"] is False
    assert stored["big", "other"]["significant"] is True
    assert Claim.from_json(stored["big", "other"]) == large
    assert '"bits"' not in json.dumps(data) and "test_correct" not in json.dumps(data)
    # In report.html, beside the dominated point.
    html = render_report(results, RECIPE, [])
    assert "close (p = 1, not significant)" in html
    assert "big (p &lt; 0.0001, significant)" in html


def test_search_claims_use_the_search_rule_and_the_same_test() -> None:
    mine = scored("search-1", BIG, 1.5)
    runs = group_runs([*STUDY, mine])
    points = [p for v in STUDY for p in points_of(v)] + points_of(mine, "search")
    claims = search_claims(points, "a", runs, (0,))
    # Strictly less energy and at least the top-1: base, big (as accurate, the same images
    # right) and other; close is cheaper.
    assert [(c.winner, c.loser) for c in claims] == [
        ("search-1", "base"),
        ("search-1", "big"),
        ("search-1", "other"),
    ]
    tie = claims[1]
    assert (tie.b, tie.c, tie.p_value, tie.difference_points) == (0, 0, 1.0, 0.0)
    assert claims[0].p_value == pytest.approx(P_BIG, rel=1e-12)


def test_without_vectors_on_the_same_images_no_test_is_claimed() -> None:
    other_split = dataclasses.replace(
        STUDY[1], test_correct=PerImageCorrect.of(BASE, "another-split")
    )
    results = build_results(RECIPE, [STUDY[0], other_split])
    (claim,) = results.pareto_claims
    assert claim.p_value is None and claim.significant is None
    assert claim.verdict() == "dominates base (no paired test: not scored on the same test images)"
    assert claim.difference_points == pytest.approx(0.1)


# --- seeds ---------------------------------------------------------------------------------------


def test_seed_means_spread_and_claims() -> None:
    seeds = (0, 1, 2)
    recipe = {"name": "seeds", "seeds": list(seeds), "data": {"source": "digits"}}
    # "trained" at three seeds, 1 uJ; "fixed" (seed-independent, built once), 2 uJ.
    trained = [right((0, 910)), right((0, 880)), right((0, 886))]  # 91.0, 88.0, 88.6 %
    fixed = right((0, 900))  # 90.0 % at every seed
    variants = [
        scored("trained", trained[0], 1.0, seed=0, trained=True),
        scored("fixed", fixed, 2.0, seed=0),
        *(
            scored("trained", v, 1.0, seed=s, trained=True)
            for s, v in zip(seeds[1:], trained[1:], strict=True)
        ),
    ]
    results = build_results(recipe, variants)
    assert results.seeds == seeds and results.seed == 0
    assert [v.variant for v in results.variants] == ["trained", "fixed"]  # first seed's builds
    rows = {row.variant: row for row in results.seed_spread}
    assert rows["trained"].top1 == (91.0, 88.0, 88.6)
    assert rows["trained"].top1_mean == pytest.approx(89.2)
    assert (rows["trained"].top1_min, rows["trained"].top1_max) == (88.0, 91.0)
    assert rows["trained"].top1_std == pytest.approx(np.std([91.0, 88.0, 88.6], ddof=1))
    assert rows["trained"].top1_ci95[1] == wilson_interval(880, IMAGES)  # seed 1's own
    assert rows["fixed"].built_at == (0,) and rows["fixed"].top1 == (90.0,) * 3
    assert rows["fixed"].top1_std == 0.0
    points = {p.variant: p for p in results.points}
    assert points["trained"].top1 == 91.0 and points["trained"].top1_mean == pytest.approx(89.2)
    # At seed 0 "trained" (91.0 %, 1 uJ) would dominate "fixed"; on the means (89.2 %) it
    # does not, and both are on the front.
    assert results.pareto == {"a": ["trained", "fixed"]} and results.pareto_claims == ()
    data = results.to_json()
    assert data["seeds"] == [0, 1, 2] and len(data["seed_spread"]) == 2
    html = render_report(results, recipe, [])
    assert "Across seeds" in html and "89.20" in html


def test_a_claim_on_seed_means_is_the_sign_flip_test_of_the_stacked_builds() -> None:
    seeds = (0, 1)
    recipe = {"name": "seeds", "seeds": list(seeds), "data": {"source": "digits"}}
    trained = [right((0, 930)), right((3, 925))]
    fixed = right((0, 905))
    variants = [
        scored("trained", trained[0], 1.0, seed=0, trained=True),
        scored("trained", trained[1], 1.0, seed=1, trained=True),
        scored("fixed", fixed, 2.0, seed=0),
    ]
    (claim,) = build_results(recipe, variants).pareto_claims
    reference = seed_mean_comparison(np.stack(trained), np.stack([fixed, fixed]))
    assert (claim.winner, claim.loser, claim.seeds) == ("trained", "fixed", 2)
    assert (claim.b, claim.c, claim.p_value) == (reference.b, reference.c, reference.p_value)
    assert claim.significant and format_p(claim.p_value).startswith("p")


def test_a_trained_variant_missing_a_seed_is_refused() -> None:
    recipe = {"name": "seeds", "seeds": [0, 1], "data": {"source": "digits"}}
    only_first = [scored("trained", BASE, 1.0, seed=0, trained=True), STUDY[0]]
    with pytest.raises(ResultError, match="no result at seed 1"):
        build_results(recipe, only_first)
