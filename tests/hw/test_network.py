"""NetworkCost: per-inference totals that add only over the same number of captured samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codesign.errors import HardwareError
from codesign.hw import NetworkCost
from codesign.hw.arch import load_arch
from codesign.hw.simulate import simulate

SCNN = Path(__file__).resolve().parents[2] / "recipes" / "hardware" / "scnn.toml"


def cost_over(make_conv, make_record, images: int, seed: int = 0) -> NetworkCost:
    torch.manual_seed(seed)
    x = torch.relu(torch.randn(images, 8, 16, 16))
    return NetworkCost.of(simulate([make_record(make_conv(seed=seed), x)], load_arch(SCNN)))


def test_per_inference_quantities_are_capture_totals_over_samples(make_conv, make_record):
    network = cost_over(make_conv, make_record, images=3)
    (layer,) = network.layers
    assert network.samples == layer.record.n == 3
    assert network.energy_uj_per_inference == pytest.approx(layer.energy_pj / 1e6 / 3)
    assert network.energy_by_component_uj_per_inference == pytest.approx(
        {k: v / 1e6 / 3 for k, v in layer.energy_pj_by_component.items()}
    )
    assert network.cycles == pytest.approx(layer.cycles / 3)
    assert network.compute_cycles + network.stall_cycles == pytest.approx(network.cycles)
    assert network.layer_energy_uj_per_inference == {
        layer.record.name: pytest.approx(network.energy_uj_per_inference)
    }
    (row,) = network.layer_rows()
    assert row["macs"] == layer.record.dense_macs // 3


def test_costs_over_the_same_samples_add(make_conv, make_record):
    a = cost_over(make_conv, make_record, images=2, seed=0)
    b = cost_over(make_conv, make_record, images=2, seed=1)
    both = a + b
    assert both.samples == 2 and both.layers == a.layers + b.layers
    assert both.energy_uj_per_inference == pytest.approx(
        a.energy_uj_per_inference + b.energy_uj_per_inference
    )
    assert both.cycles == pytest.approx(a.cycles + b.cycles)
    assert both.stall_cycles == pytest.approx(a.stall_cycles + b.stall_cycles)


def test_costs_over_other_sample_counts_do_not_add(make_conv, make_record):
    two = cost_over(make_conv, make_record, images=2)
    four = cost_over(make_conv, make_record, images=4)
    with pytest.raises(HardwareError, match="2 and 4 captured samples"):
        two + four
    with pytest.raises(HardwareError, match="another number of samples"):
        NetworkCost(two.layers + four.layers, 2)
    with pytest.raises(HardwareError, match="no layer costs"):
        NetworkCost.of([])
