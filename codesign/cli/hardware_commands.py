"""``codesign simulate``: one datapath on a checkpoint's captured tensors."""

from __future__ import annotations

import argparse
from typing import Any

from codesign.cli.common import finish, load_data_for, start_runtime
from codesign.resources import resolve_named_file


def cmd_simulate(args: argparse.Namespace) -> dict[str, Any]:
    from codesign.data import make_forward_loop
    from codesign.hw import (
        capture,
        load_arch,
        load_energy_table,
        simulate,
        summarize,
        write_layers_csv,
    )
    from codesign.pipeline import load_model

    runtime = start_runtime(args)
    arch_path = resolve_named_file(args.arch, "hardware")
    arch = load_arch(arch_path)
    energy_path = None if args.energy is None else resolve_named_file(args.energy, "energy")
    energy = load_energy_table(energy_path)
    model, _, _ = load_model(args.checkpoint, args.model)
    model.to(runtime.torch_device)  # the capture's reductions run there; per-layer sums come back
    dataset = load_data_for(args, model)
    images, captured = dataset.capture_set(args.samples)
    records = capture(model, make_forward_loop(images, 64, device=runtime.torch_device))
    costs = simulate(records, arch, energy)
    result = summarize(costs, arch_path.stem)
    result["subsets"] = {
        "validation": dataset.validation_info.to_dict(),
        "capture": captured.to_dict(),
    }
    if runtime.is_writer:
        write_layers_csv(costs, args.out / "layers.csv")
    return finish(args.out, result, seed=args.seed, runtime=runtime)
