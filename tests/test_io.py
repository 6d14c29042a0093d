import json

import pytest

from codesign.config import QuantSpec, SparsitySpec, TrainSpec
from codesign.errors import ConfigError
from codesign.io import atomic_path, write_json_atomic


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out" / "result.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}


@pytest.mark.parametrize("cls", [QuantSpec, SparsitySpec, TrainSpec])
def test_specs_round_trip_through_json(cls):
    spec = cls()
    assert cls.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_unknown_key_names_path_and_valid_keys():
    with pytest.raises(ConfigError, match=r"quant\.weight_bit: valid keys are .*weight_bits"):
        QuantSpec.from_dict({"weight_bit": 4})
