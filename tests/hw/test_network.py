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


def test_bit_operations_are_macs_times_both_widths_known_answer(make_record):
    """A 2-in, 3-out 1x1 conv on one 2x2 image, 4-bit weights and 8-bit inputs: K x C x P x Q
    = 3 x 2 x 2 x 2 = 24 dense MACs, so 24 x 4 x 8 = 768 BOPs."""
    conv = torch.nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[1, 0] = 0.0  # output 1 ignores input channel 0
    conv.weight_bits, conv.input_bits = 4, 8
    x = torch.ones(1, 2, 2, 2)
    x[0, 0, 0, 0] = 0.0  # one zero pixel in channel 0
    record = make_record(conv, x)
    # Effectual MACs: channel 0 has 3 nonzero pixels x 2 nonzero weights (outputs 0 and 2);
    # channel 1 has 4 nonzero pixels x 3 nonzero weights: 6 + 12 = 18.
    assert record.dense_macs == 24 and record.effectual_macs == 18
    assert (record.dense_bops, record.effectual_bops) == (24 * 4 * 8, 18 * 4 * 8)
    network = NetworkCost.of(simulate([record], load_arch(SCNN)))
    (row,) = network.layer_rows()
    assert (row["bops"], row["effectual_bops"]) == (768, 576.0)
    assert (network.bops, network.effectual_bops) == (768, 576.0)
    assert network.totals()["bops"] == 768


def test_bit_operations_are_per_inference(make_conv, make_record):
    network = cost_over(make_conv, make_record, images=3)
    (layer,) = network.layers
    record = layer.record
    assert network.bops * 3 == record.dense_macs * record.weight_bits * record.input_bits
    assert network.effectual_bops * 3 == pytest.approx(record.effectual_bops)
    assert record.weight_bits == record.input_bits == 32  # a float layer counts 32 x 32
