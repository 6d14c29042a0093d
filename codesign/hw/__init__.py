"""Hardware model: capture measured layer workloads, simulate accelerators, price actions.

Pure functions from ``LayerRecord``s and frozen architecture specs to ``LayerCost``s, summed
per inference by ``NetworkCost``; the only forward hooks of the project live in :mod:`codesign.hw.capture`. Nothing here imports the
quantization or sparsity packages: bit widths arrive as plain layer attributes.
"""

from codesign.hw.arch import ArchSpec, load_arch
from codesign.hw.capture import capture, hooked
from codesign.hw.energy import EnergyTable, horowitz45, load_energy_table
from codesign.hw.network import NetworkCost
from codesign.hw.records import Action, LayerCost, LayerRecord
from codesign.hw.simulate import reprice, simulate, summarize, write_layers_csv
from codesign.hw.summary import LayerSummary, NetworkSummary

__all__ = [
    "Action",
    "ArchSpec",
    "EnergyTable",
    "LayerCost",
    "LayerRecord",
    "LayerSummary",
    "NetworkCost",
    "NetworkSummary",
    "capture",
    "hooked",
    "horowitz45",
    "load_arch",
    "load_energy_table",
    "reprice",
    "simulate",
    "summarize",
    "write_layers_csv",
]
