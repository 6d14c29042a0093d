"""How much of a study's accuracy ordering survives another training seed: re-builds the
trained variants and verified search configurations of a finished study with other seeds and
judges dominance per seed and on the means (see :mod:`codesign.study.seeds`).

Usage (after `codesign search ... --out runs/resnet20`):

    python scripts/seed_spread.py runs/resnet20 --seeds 1 2
    python scripts/seed_spread.py runs/resnet20 --seeds 1 2 --variants qat-w4a4 search-160

Cost: one build per selected variant and seed (a QAT W4A4 ResNet-20 ~5 min on the idle
2-core machine, a fine-tuned + QAT configuration ~6 min).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codesign.errors import CodesignError
from codesign.study.seeds import format_table, seed_spread


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
    out = args.out or args.study / "seed_spread.json"
    try:
        report = seed_spread(
            args.study, args.seeds, args.variants, args.datapath, out, progress=not args.quiet
        )
    except CodesignError as exc:
        sys.stderr.write(f"seed_spread: error: {exc}\n")
        return 2
    print(format_table(report))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
