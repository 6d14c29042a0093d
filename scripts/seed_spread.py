"""How much of a study's accuracy ordering survives another training seed.

A study (`codesign run` / `codesign search` output) trains some variants (fine-tuning, QAT) and
the search's verified configurations with the recipe's one seed. On a test split of ~1000
images one training run moves top-1 by several images, as much as the margins the search's
"dominates" verdicts rest on. This script re-builds the trained variants (or the ones named)
with other seeds, into the same study directory (the recipe seed is part of every variant's
cache key, so nothing is overwritten and a re-run reuses what is done), and reports:

- per variant: top-1 at every seed (the study's own seed included), mean, min, max, and the
  energy per inference on the datapath (uJ, mean over seeds);
- per verified search configuration: the recipe variants it dominates at each seed (same seed
  on both sides) and on the seed means.

Variants that train nothing (PTQ, one-shot pruning) are seed-independent: the recipe seed only
drives training (data order, augmentation); calibration and pruning are deterministic. They keep
the study's figures unless named with ``--variants``, which re-builds them too. A trained
variant left out of ``--variants`` is unknown at the other seeds: it is not compared there, and
no "dominates every recipe variant" verdict is given for those seeds.

Usage (after `codesign search ... --out runs/resnet20`):

    python scripts/seed_spread.py runs/resnet20 --seeds 1 2
    python scripts/seed_spread.py runs/resnet20 --seeds 1 2 --variants qat-w4a4 search-160

Cost: one build per selected variant and seed (a QAT W4A4 ResNet-20 ~5 min on the idle
2-core machine, a fine-tuned + QAT configuration ~6 min).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from codesign.errors import CodesignError, ConfigError
from codesign.experiment import open_study, run_variant
from codesign.io import write_json_atomic
from codesign.recipe import VariantSpec, recipe_from_dict
from codesign.report.pareto import dominates
from codesign.report.results import RESULTS_SCHEMA


def trains(variant: VariantSpec) -> bool:
    finetunes = variant.finetune is not None and variant.finetune.epochs > 0
    return finetunes or (variant.qat is not None and variant.qat.epochs > 0)


def load_study_files(study_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results.json, recipe.json) of a finished study, or a ConfigError saying what to run."""
    files = [study_dir / "results.json", study_dir / "recipe.json"]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not found: give the --out directory of a finished "
            "`codesign run` or `codesign search`"
        )
    results = json.loads(files[0].read_text())
    if results.get("schema_version") != RESULTS_SCHEMA:
        raise ConfigError(
            f"{files[0]} has schema_version {results.get('schema_version')!r}, this script reads "
            f"{RESULTS_SCHEMA}: re-run the same `codesign run` / `codesign search` command"
        )
    return results, json.loads(files[1].read_text())


def variant_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every scored variant of the study by name (recipe variants, then verified search
    configurations) with its top-1 and energy per datapath, from results.json's points."""
    scored: dict[str, dict[str, Any]] = {}
    for p in results["points"]:
        entry = scored.setdefault(
            p["variant"], {"top1": p["top1"], "source": p["source"], "datapaths": {}}
        )
        entry["datapaths"][p["datapath"]] = {
            "energy_uj_per_inference": p["energy_uj_per_inference"]
        }
    return scored


def spread_rows(
    by_seed: dict[int, dict[str, dict[str, Any]]], datapath: str
) -> list[dict[str, Any]]:
    """Per variant: top-1 (%) at every seed where it is known (None elsewhere), mean/min/max
    over those, mean energy (uJ) on ``datapath``."""
    seeds = list(by_seed)
    names = list(by_seed[seeds[0]])
    rows = []
    for name in names:
        known = [by_seed[s][name] for s in seeds if name in by_seed[s]]
        top1 = [float(p["top1"]) for p in known]
        rows.append(
            {
                "variant": name,
                "source": known[0]["source"],
                "trained": known[0]["trained"],
                "seeds": seeds,
                "top1": [by_seed[s][name]["top1"] if name in by_seed[s] else None for s in seeds],
                "top1_mean": statistics.fmean(top1),
                "top1_min": min(top1),
                "top1_max": max(top1),
                "energy_uj_per_inference_mean": statistics.fmean(
                    p["energy_uj_per_inference"] for p in known
                ),
                "datapath": datapath,
            }
        )
    return rows


def dominance(
    by_seed: dict[int, dict[str, dict[str, Any]]], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """For every search configuration: the recipe variants it dominates at each seed (both
    sides trained with that seed) and on the seed means (strictly less energy, at least the
    top-1). A verdict over "every recipe variant" needs all of them known at that seed."""
    seeds = list(by_seed)
    complete = {r["variant"] for r in rows if None not in r["top1"]}
    means = {r["variant"]: (r["energy_uj_per_inference_mean"], r["top1_mean"]) for r in rows}
    recipe_names = [r["variant"] for r in rows if r["source"] == "recipe"]
    verdicts = {}
    for name in (r["variant"] for r in rows if r["source"] == "search"):
        per_seed: dict[str, list[str] | None] = {}
        for seed in seeds:
            scored = by_seed[seed]
            if name not in scored:
                per_seed[str(seed)] = None
                continue
            per_seed[str(seed)] = [
                other
                for other in recipe_names
                if other in scored
                and dominates(
                    (scored[name]["energy_uj_per_inference"], scored[name]["top1"]),
                    (scored[other]["energy_uj_per_inference"], scored[other]["top1"]),
                )
            ]
        every = [
            seed
            for seed in seeds
            if per_seed[str(seed)] is not None
            and all(o in by_seed[seed] for o in recipe_names)
            and len(per_seed[str(seed)] or []) == len(recipe_names)
        ]
        on_means = None
        if name in complete:
            on_means = [
                o for o in recipe_names if o in complete and dominates(means[name], means[o])
            ]
        verdicts[name] = {
            "dominates_per_seed": per_seed,
            "dominates_every_recipe_variant_at_seeds": every,
            "dominates_on_means": on_means,
            "unknown_at_other_seeds": sorted(set(recipe_names) - complete),
        }
    return verdicts


def point(scored: dict[str, Any], datapath: str, source: str, trained: bool) -> dict[str, Any]:
    if datapath not in scored["datapaths"]:
        raise ConfigError(
            f"datapath {datapath!r} was not simulated in this study "
            f"(it has {', '.join(scored['datapaths'])}): pass --datapath"
        )
    return {
        "top1": float(scored["top1"]),
        "energy_uj_per_inference": float(scored["datapaths"][datapath]["energy_uj_per_inference"]),
        "source": source,
        "trained": trained,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    results, recipe_data = load_study_files(args.study)
    # The verified search configurations are recipe variants with per-layer overrides: parse
    # them with the recipe's own reader.
    verified = [v["config"] for v in (results.get("search") or {}).get("verified", [])]
    recipe_data = {**recipe_data, "variants": [*recipe_data["variants"], *verified]}
    recipe = recipe_from_dict(recipe_data, where=str(args.study / "recipe.json"))
    study_results = variant_results(results)
    datapath = args.datapath or (results.get("search") or {}).get("datapath") or "scnn"
    specs = {v.name: v for v in recipe.variants}
    unscored = [n for n in specs if n not in study_results]
    if unscored:
        raise ConfigError(
            f"variant {unscored[0]!r} has no result in {args.study / 'results.json'}: "
            "finish the study first (re-run the same command; it resumes)"
        )
    if args.variants:
        unknown = [n for n in args.variants if n not in specs]
        if unknown:
            raise ConfigError(
                f"no variant {unknown[0]!r} in {args.study}: the study has {', '.join(specs)}"
            )
        selected = list(args.variants)
    else:
        selected = [n for n, spec in specs.items() if trains(spec)]
    if not selected:
        raise ConfigError(
            "nothing to re-run: the study trains no variant; name some with --variants"
        )
    seeds = [recipe.seed] + [s for s in dict.fromkeys(args.seeds) if s != recipe.seed]
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for seed in seeds:
        study = None
        by_seed[seed] = {}
        for name, spec in specs.items():
            trained = trains(spec)
            if seed == recipe.seed or (name not in selected and not trained):
                scored = study_results[name]
            elif name not in selected:
                continue  # trained with the study's seed only: unknown at this one
            else:
                if study is None:
                    study = open_study(
                        dataclasses.replace(recipe, seed=seed), args.study, not args.quiet
                    )
                print(f"seed {seed}: {name}", file=sys.stderr)
                scored = run_variant(study, spec)
            by_seed[seed][name] = point(scored, datapath, study_results[name]["source"], trained)
    rows = spread_rows(by_seed, datapath)
    report = {
        "study": str(args.study),
        "datapath": datapath,
        "seeds": seeds,
        "rebuilt": selected,
        "variants": rows,
        "search": dominance(by_seed, rows),
    }
    out = args.out or args.study / "seed_spread.json"
    write_json_atomic(out, report)
    print_table(rows, report["search"])
    print(f"written: {out}")
    return report


def print_table(rows: list[dict[str, Any]], verdicts: dict[str, Any]) -> None:
    seeds = rows[0]["seeds"]
    head = "variant".ljust(24) + "".join(f"seed {s}".rjust(9) for s in seeds)
    print(head + "mean".rjust(8) + "min".rjust(8) + "max".rjust(8) + "uJ".rjust(9))
    for r in rows:
        cells = "".join("       --" if t is None else f"{t:9.2f}" for t in r["top1"])
        print(
            r["variant"][:23].ljust(24)
            + cells
            + f"{r['top1_mean']:8.2f}{r['top1_min']:8.2f}{r['top1_max']:8.2f}"
            + f"{r['energy_uj_per_inference_mean']:9.2f}"
        )
    for name, v in verdicts.items():
        means = v["dominates_on_means"]
        print(
            f"{name}: dominates every recipe variant at seeds "
            f"{v['dominates_every_recipe_variant_at_seeds'] or 'none'}; on the means: "
            + ("(not re-built)" if means is None else ", ".join(means) or "nothing")
            + (
                f"; not re-built: {', '.join(v['unknown_at_other_seeds'])}"
                if v["unknown_at_other_seeds"]
                else ""
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, help="a `codesign run` / `codesign search` --out DIR")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="other seeds")
    parser.add_argument(
        "--variants", nargs="+", help="variants to re-build (default: every trained one)"
    )
    parser.add_argument("--datapath", help="energy from this datapath (default: the search's)")
    parser.add_argument("--out", type=Path, help="JSON report (default STUDY/seed_spread.json)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        run(args)
    except CodesignError as exc:
        sys.stderr.write(f"seed_spread: error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
