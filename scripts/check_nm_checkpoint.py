"""Check a saved N:M checkpoint: every M-group along C of every pruned layer keeps <= N nonzeros.

The check reads the file fresh, twice, by two independent routes:

1. raw: the saved ``state_dict`` alone (``<layer>.parametrizations.weight.original`` times its
   ``mask`` buffer), grouped here with plain ``permute``/``reshape`` rather than the library's
   ``nm_group_nonzeros``, so a bug in that helper cannot hide a violation;
2. loaded: ``codesign.pipeline.load_model`` (re-applies the recipe, then loads the weights) and
   the effective ``module.weight`` the forward pass sees (after any quantizer).

It also checks that every *eligible* layer was pruned: each conv whose C is a multiple of M,
minus the spec's exclusions (the first conv and the classifier by default).

Usage::

    python scripts/check_nm_checkpoint.py DIR/model.pt            # exit 0: all groups comply
    python scripts/check_nm_checkpoint.py DIR/model.pt --n 2 --m 4
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import torch
from torch import nn

from codesign.config import SparsitySpec
from codesign.io import checkpoint_meta, read_checkpoint
from codesign.models import extract_state_dict
from codesign.pipeline import load_model
from codesign.sparsity import masked_weights_from_state_dict, weight_masks

_ORIGINAL = ".parametrizations.weight.original"


def group_nonzeros(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Nonzeros in every group of m consecutive input channels at each (k, r, s).

    weight [K, C, R, S] (or [K, C]) -> int64 [K * R * S * C / m], written out here by hand:
    channels last, then split C into C/m groups of m.
    """
    k, c = weight.shape[:2]
    if c % m:
        raise ValueError(f"C={c} is not a multiple of M={m}")
    channels_last = weight.reshape(k, c, -1).permute(0, 2, 1)  # [K, R*S, C]
    return (channels_last.reshape(-1, m) != 0).sum(dim=1)


def eligible_layers(model: nn.Module, spec: SparsitySpec, m: int) -> list[str]:
    """Convs with C a multiple of m that the spec's exclusions leave in (names)."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or module.in_channels % m:
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in spec.exclude):
            continue
        names.append(name)
    return names


def check(path: Path, n: int, m: int) -> tuple[bool, list[dict[str, object]]]:
    """(all comply, one row per pruned layer) for the checkpoint at ``path``."""
    raw = read_checkpoint(path)
    _, recipe, _ = checkpoint_meta(raw)
    if "sparsity" not in recipe:
        raise SystemExit(f"{path} carries no sparsity recipe: not a pruned codesign checkpoint")
    spec = SparsitySpec.from_dict(recipe["sparsity"])
    raw_weights = masked_weights_from_state_dict(extract_state_dict(raw))
    model, _, _ = load_model(path)
    masks = weight_masks(model)
    ok = True
    rows: list[dict[str, object]] = []
    for name in eligible_layers(model, spec, m):
        if name not in raw_weights or name not in masks:
            rows.append({"name": name, "error": "eligible but not pruned"})
            ok = False
            continue
        raw_max = int(group_nonzeros(raw_weights[name], m).max())
        loaded = model.get_submodule(name).weight.detach()
        loaded_max = int(group_nonzeros(loaded, m).max())
        sparsity = float((loaded == 0).float().mean())
        layer_ok = raw_max <= n and loaded_max <= n
        ok = ok and layer_ok
        rows.append(
            {
                "name": name,
                "pattern": str(masks[name].pattern),
                "groups": group_nonzeros(loaded, m).numel(),
                "max_nonzeros_raw": raw_max,
                "max_nonzeros_loaded": loaded_max,
                "sparsity": sparsity,
                "ok": layer_ok,
            }
        )
    extra = sorted(set(raw_weights) - {str(row["name"]) for row in rows})
    for name in extra:  # pruned but not an N:M-eligible conv: report, do not judge
        rows.append({"name": name, "note": "pruned, not N:M-eligible"})
    return ok, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="DIR/model.pt written by `codesign prune`")
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--m", type=int, default=4)
    args = parser.parse_args()
    ok, rows = check(args.checkpoint, args.n, args.m)
    for row in rows:
        print(row)
    checked = sum(1 for row in rows if "ok" in row)
    verdict = "OK" if ok else "FAIL"
    print(
        f"{verdict}: {checked} eligible layers, every {args.m}-group along C checked for "
        f"<= {args.n} nonzeros (raw state_dict and reloaded model)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
