"""ImageNet-shaped end to end: a torchvision-format ResNet-18 checkpoint (3 classes, the
file name torch.hub gives the real one) on a synthetic 224x224 image folder, through
``codesign run`` (streamed) and ``codesign eval`` (ImageNet evaluation transforms by default).

No accuracy is claimed (the weights are random): every path runs and every number is finite.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from codesign.cli import main

CLASSES = 3


def _image_folder(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    """Per split and class, one PNG of each (height, width): noise over a per-class stripe
    pattern, so the classes differ in content."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, shapes in sizes.items():
        for c in range(CLASSES):
            (root / split / f"c{c}").mkdir(parents=True)
            for i, (h, w) in enumerate(shapes):
                stripes = ((np.arange(w) // (4 * (c + 1))) % 2 * 128).astype(np.uint8)
                pixels = rng.integers(0, 128, (h, w, 3), dtype=np.uint8) + stripes[None, :, None]
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """torchvision's ResNet-18 state dict fine-tuned to 3 classes, saved as a user has it."""
    path = tmp_path_factory.mktemp("hub") / "resnet18-f37072fd.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=CLASSES).state_dict(), path)
    return path


def _numbers(value, where="results"):
    """Every (path, number) in a JSON value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{where}[{index}]")


def test_resnet18_recipe_on_a_streamed_224_folder_runs_every_path(tmp_path, checkpoint):
    folder = _image_folder(tmp_path / "data", {"train": [(224, 224)] * 4, "val": [(224, 224)] * 2})
    recipe = tmp_path / "rn18.toml"
    # 12 training images (one held out for validation), 6 test images: ResNet-18 at 224 costs
    # about 0.1 s per image forward on a CPU core.
    recipe.write_text(
        f"""schema_version = 1
name = "rn18-synthetic"
[model]
checkpoint = "{checkpoint}"
[data]
source = "imagefolder:{folder}"
image_size = 224
stream = true
workers = 0
calib_samples = 4
capture_samples = 1
[hardware]
archs = ["systolic-16x16-ws", "scnn", "sparse-tc-2of4"]
[[variants]]
name = "fp32"
[[variants]]
name = "ptq-w8a8"
quant = {{ weight_bits = 8, act_bits = 8 }}
[[variants]]
name = "2:4+w8a8"
sparsity = {{ sparsity = "2:4" }}
quant = {{ weight_bits = 8, act_bits = 8 }}
[[variants]]
name = "qat-w4a4"
quant = {{ weight_bits = 4, act_bits = 4, keep_8bit = ["first", "last"], method = "minmax" }}
qat = {{ epochs = 1, batch_size = 6 }}
"""
    )
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    variants = {v["variant"]: v for v in results["variants"]}
    assert set(variants) == {"fp32", "ptq-w8a8", "2:4+w8a8", "qat-w4a4"}
    for variant in variants.values():
        assert variant["samples"] == 6 and variant["captured_samples"] == 1
        assert sum(variant["subsets"]["validation"]["per_class"]) == 1
    assert variants["qat-w4a4"]["subsets"]["calibration"]["size"] == 4
    assert variants["2:4+w8a8"]["weight_sparsity"] > 0.4  # every 3x3 conv but conv1 is 2:4
    assert len(results["points"]) == 4 * 3
    numbers = list(_numbers(results))
    assert len(numbers) > 100
    assert [where for where, value in numbers if not math.isfinite(value)] == []
    assert (out / "report.html").is_file()


def test_eval_of_an_imagenet_checkpoint_uses_the_224_transforms(tmp_path, checkpoint):
    # Sizes differ, as in ImageNet: only the default resize-256 / centre-crop-224 makes them a
    # batch; streamed and preloaded evaluation then agree exactly.
    sizes = [(240, 300), (256, 230)]
    folder = _image_folder(tmp_path / "data", {"train": sizes * 2, "test": sizes})
    top1 = []
    for extra in ([], ["--stream", "--workers", "0"]):
        out = tmp_path / f"eval{len(extra)}"
        command = ["eval", "--checkpoint", str(checkpoint), "--data", f"imagefolder:{folder}"]
        assert main([*command, "--out", str(out), *extra]) == 0
        result = json.loads((out / "result.json").read_text())
        assert result["samples"] == 6
        top1.append(result["top1"])
    assert top1[0] == top1[1]
