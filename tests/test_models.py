import pytest
import torch

from codesign.errors import CheckpointError, ModelError
from codesign.io import read_checkpoint, save_checkpoint
from codesign.models import (
    create_model,
    extract_state_dict,
    infer_model,
    list_models,
    load_state_into,
)
from codesign.pipeline import load_model

from .conftest import RESNET20_CHECKPOINT, needs_shared


@pytest.mark.parametrize("depth,params", [(20, 269_722), (32, 464_154), (56, 853_018)])
def test_cifar_resnet_parameter_counts_match_he_et_al(depth, params):
    # He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M parameters.
    model = create_model(f"resnet{depth}")
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs(name):
    cifar = name in {
        "resnet8",
        "resnet14",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
    }
    kwargs = {"num_classes": 7} if cifar else {"num_classes": 7, "cifar_stem": True}
    model = create_model(name, **kwargs).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError, match="did you mean .*resnet20"):
        create_model("resnet21")


def test_own_checkpoint_round_trip(tmp_path):
    model = create_model("resnet8", num_classes=5)
    path = save_checkpoint(
        tmp_path / "m.pt",
        model.state_dict(),
        model_name="resnet8",
        extra={"model_kwargs": {"num_classes": 5}},
    )
    assert (tmp_path / "m.pt.sha256").read_text().split()[0]
    loaded, name, _ = load_model(path)
    assert name == "resnet8"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_wrong_model_for_checkpoint_names_the_keys(tmp_path):
    path = save_checkpoint(
        tmp_path / "m.pt", create_model("resnet8").state_dict(), model_name="resnet8"
    )
    with pytest.raises(CheckpointError, match="missing keys layer1.1"):
        load_model(path, "resnet14")


def test_shape_mismatch_is_named(tmp_path):
    path = save_checkpoint(
        tmp_path / "m.pt", create_model("resnet8", num_classes=4).state_dict(), model_name="resnet8"
    )
    with pytest.raises(CheckpointError, match="linear.weight has shape"):
        load_model(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a module: unpickling needs code
    with pytest.raises(CheckpointError, match="that a safe load refuses"):
        read_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.th")


@needs_shared
def test_foreign_resnet20_checkpoint_loads_as_is():
    raw = read_checkpoint(RESNET20_CHECKPOINT)
    assert infer_model(raw) == ("resnet20", {"num_classes": 10, "in_channels": 3})
    state = extract_state_dict(raw)
    assert not any(k.startswith("module.") for k in state)
    model = create_model("resnet20")
    load_state_into(model, state, "shared")
    assert torch.equal(model.linear.weight, state["linear.weight"])


def _torchvision_file(directory, name: str, file_name: str, **kwargs) -> object:
    """A torchvision state dict saved as torchvision's download would be (no codesign
    metadata, no sha256 beside it), under the file name torch.hub gives it."""
    import torchvision

    path = directory / file_name
    state = getattr(torchvision.models, name)(weights=None, **kwargs).state_dict()
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize(
    "name, file_name",
    [("resnet18", "resnet18-f37072fd.pth"), ("resnet50", "resnet50-11ad3fa6.pth")],
)
def test_torchvision_checkpoints_load_as_they_are(tmp_path, name, file_name):
    path, state = _torchvision_file(tmp_path, name, file_name)
    assert infer_model(read_checkpoint(path)) == (name, {"num_classes": 1000, "in_channels": 3})
    model, inferred, recipe = load_model(path)
    assert inferred == name and recipe == {}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_resnet_inferred_from_keys_and_shapes(name):
    import torchvision

    with torch.device("meta"):  # keys and shapes only: nothing is allocated or initialised
        state = getattr(torchvision.models, name)(weights=None, num_classes=5).state_dict()
    assert infer_model({"state_dict": state}) == (name, {"num_classes": 5, "in_channels": 3})
    prefixed = {f"module.{k}": v for k, v in state.items()}  # saved from nn.DataParallel
    assert infer_model(prefixed)[0] == name


def test_torchvision_checkpoint_fine_tuned_to_7_classes_loads_with_7(tmp_path):
    path, state = _torchvision_file(tmp_path, "resnet18", "resnet18-f37072fd.pth", num_classes=7)
    for given in (None, "resnet18"):  # inferred, or named as a recipe's model.name does
        model, _, _ = load_model(path, given)
        assert model.fc.out_features == 7
        assert torch.equal(model.fc.weight, state["fc.weight"])
    with pytest.raises(CheckpointError, match=r"fc.weight has shape \(7, 512\)"):
        load_model(path, "resnet18", num_classes=1000)  # an explicit contradiction


def test_unregistered_torchvision_resnet_is_named():
    import torchvision

    with torch.device("meta"):
        wide = torchvision.models.wide_resnet50_2(weights=None).state_dict()
    with pytest.raises(CheckpointError, match=r"bottleneck blocks \[3, 4, 6, 3\].*width 128"):
        infer_model(wide)


def test_imagenet_input_size_only_for_the_imagenet_stem():
    from codesign.models import imagenet_input_size

    assert imagenet_input_size(create_model("resnet18")) == 224
    assert imagenet_input_size(create_model("resnet18", cifar_stem=True)) is None
    assert imagenet_input_size(create_model("resnet20")) is None
