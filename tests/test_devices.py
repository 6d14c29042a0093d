"""The pipeline on every available device: the CPU always, CUDA where there is one.

On a GPU machine these run the same builds on ``cuda`` and compare them with the CPU's; the
CPU parametrization checks the same invariants (and the runtime plumbing) everywhere.
"""

import dataclasses

import pytest
import torch
from torch import nn

from codesign.config import QuantSpec, SparsitySpec, TrainSpec
from codesign.data import evaluate, load_dataset, make_forward_loop
from codesign.hw import capture
from codesign.pipeline import BuildContext, build, load_model, variant_steps
from codesign.quant import quant_layers
from codesign.quant.quantizers import ActQuantizer, WeightQuantizer
from codesign.resources import bundled_checkpoint
from codesign.runtime import Runtime, resolve_device
from codesign.sparsity.masks import nm_compliant

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
QAT = TrainSpec(epochs=1, lr=2e-4, batch_size=128, distill_temperature=4.0, distill_weight=0.7)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def float_model() -> nn.Module:
    return load_model(bundled_checkpoint("resnet8-digits"))[0]


def on(device: str, **fields) -> Runtime:
    return Runtime(device=resolve_device(device), **fields)


def built(digits, runtime: Runtime, steps) -> nn.Module:
    ctx = BuildContext(float_model(), digits, calib_samples=128, progress=False, runtime=runtime)
    return build(ctx, steps)[0]


def states_close(a: nn.Module, b: nn.Module) -> None:
    """Equal structure; weights within 1e-4 (kernels sum in other orders); quantizer scales
    within 2 %: an MSE range is an argmin over clipping candidates 1 % apart, which a rounding
    difference may move to the neighbouring one; corrected biases follow the scales."""
    left, right = a.state_dict(), b.state_dict()
    assert left.keys() == right.keys()
    for name, tensor in left.items():
        other = right[name].to(tensor.device)
        if not tensor.is_floating_point():
            assert torch.equal(tensor, other), name
            continue
        tolerances = {"scale": (2e-2, 0.0), "bias": (1e-3, 1e-3)}
        rtol, atol = tolerances.get(name.rsplit(".", 1)[-1], (1e-4, 1e-5))
        torch.testing.assert_close(tensor, other, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_ptq_on_device_matches_the_cpu(device, digits):
    """Calibration (observers, MSE ranges, bias correction) on the device gives the CPU's
    quantizers and accuracy, with every tensor of the model on the device."""
    spec = QuantSpec(weight_bits=4, act_bits=4, method="mse")
    model = built(digits, on(device), variant_steps(quant=spec))
    target = torch.device(resolve_device(device))
    assert {t.device for t in (*model.parameters(), *model.buffers())} == {target}
    reference = built(digits, on("cpu"), variant_steps(quant=spec))
    states_close(model, reference)
    assert abs(evaluate(model, digits.test)["top1"] - evaluate(reference, digits.test)["top1"]) < 1


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_qat_on_device_stays_finite_with_fp32_quantizers(device, digits):
    """QAT under bf16 autocast: convolutions compute in bf16, every quantizer in fp32, the
    trained model is finite and keeps the PTQ accuracy."""
    runtime = on(device, amp="bf16")
    spec = QuantSpec(weight_bits=4, act_bits=4, method="mse")
    ptq = built(digits, runtime, variant_steps(quant=spec))
    ptq_top1 = evaluate(ptq, digits.test)["top1"]
    dtypes: dict[str, set[torch.dtype]] = {"quantizer": set(), "conv": set()}

    def record(kind: str):
        def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            if torch.is_grad_enabled():  # the training forwards, not evaluation
                dtypes[kind].add(output.dtype)

        return hook

    from codesign.quant.qat import train_qat

    handles = []
    for _, layer in quant_layers(ptq):
        handles.append(layer.register_forward_hook(record("conv")))
        handles.append(layer.input_quantizer.register_forward_hook(record("quantizer")))
        weights = layer.parametrizations.weight
        handles += [q.register_forward_hook(record("quantizer")) for q in weights]
    history = train_qat(ptq, digits, QAT, teacher=float_model(), progress=False, runtime=runtime)
    for handle in handles:
        handle.remove()
    assert dtypes == {"quantizer": {torch.float32}, "conv": {torch.bfloat16}}
    assert history["final_loss"] == pytest.approx(history["final_loss"])  # not NaN
    assert all(torch.isfinite(t).all() for t in ptq.state_dict().values() if t.is_floating_point())
    assert evaluate(ptq, digits.test)["top1"] >= ptq_top1 - 2.0
    for module in ptq.modules():
        if isinstance(module, (ActQuantizer, WeightQuantizer)):
            assert module.scale.dtype is torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_pruned_fine_tune_on_device_keeps_its_pattern(device, digits):
    sparsity = SparsitySpec(sparsity="2:4")
    finetune = dataclasses.replace(QAT, lr=0.01)
    model = built(digits, on(device), variant_steps(sparsity=sparsity, finetune=finetune))
    pruned = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[1] % 4 == 0]
    assert pruned and all(m.weight.device.type == device for m in pruned)
    assert all(nm_compliant(module.weight, 2, 4) for module in pruned)
    assert evaluate(model, digits.test)["top1"] > 90.0


@pytest.mark.parametrize("device", DEVICES)
def test_capture_on_device_counts_what_the_cpu_counts(device, digits):
    """Nonzero counts and effectual MACs are exact integers: the device's reductions must
    give the CPU's, batch for batch."""
    model = float_model()
    images, _ = digits.capture_set(32)
    on_cpu = capture(model, make_forward_loop(images, 16))
    model.to(resolve_device(device))
    on_device = capture(model, make_forward_loop(images, 16))
    assert [r.effectual_macs for r in on_device] == [r.effectual_macs for r in on_cpu]
    assert [r.input_nonzeros for r in on_device] == [r.input_nonzeros for r in on_cpu]
    for a, b in zip(on_device, on_cpu, strict=True):
        assert (a.input_nonzeros_per_tile == b.input_nonzeros_per_tile).all()
