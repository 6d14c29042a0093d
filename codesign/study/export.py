"""``export = true`` in a recipe variant: the built model as ONNX, beside its ``model.pt``.

The export changes no figure, so it is not in the variant's cache key: a variant built before
(or by a run without the flag) is exported from its stored ``model.pt``, and an export already
on disk is reused when its ``export.json`` matches its sha256, was made from the ``model.pt``
now there (its sha256) and names a file that exists.
"""

from __future__ import annotations

import sys
from typing import Any

from codesign.errors import ResultError
from codesign.io import read_json_verified, sha256_of, write_json_verified
from codesign.recipe import VariantSpec
from codesign.study.study import Study
from codesign.study.variants import variant_dir

EXPORT_FILE = "export.json"


def export_variant(study: Study, variant: VariantSpec) -> dict[str, Any]:
    """Export a built variant (``OUT/variants/<name>-<key>/model.pt``) to ``model.onnx`` in
    the same folder, checked in onnxruntime on the test split; returns the check
    (:func:`codesign.export.export_onnx`), also written to ``export.json``."""
    from codesign.export import export_onnx
    from codesign.pipeline import load_model

    directory, _ = variant_dir(study, variant)
    path, checkpoint = directory / EXPORT_FILE, directory / "model.pt"
    checkpoint_sha256 = sha256_of(checkpoint)
    if path.exists():
        try:
            cached = read_json_verified(path)
            if not isinstance(cached, dict) or cached.get("checkpoint_sha256") != checkpoint_sha256:
                raise ResultError("it was exported from another model.pt")
            if not (directory / str(cached.get("onnx"))).is_file():
                raise ResultError("its ONNX file is missing")
            return cached
        except ResultError as reason:
            print(f"codesign: warning: {path}: {reason}; exporting again", file=sys.stderr)
    model, _, _ = load_model(checkpoint)
    result = export_onnx(model, directory, study.dataset.test)
    return write_json_verified(path, {**result, "checkpoint_sha256": checkpoint_sha256})
