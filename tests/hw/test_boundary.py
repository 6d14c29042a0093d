"""codesign.hw must not import codesign.quant or codesign.sparsity (DESIGN.md boundary)."""

from __future__ import annotations

import ast
from pathlib import Path

import codesign.hw

FORBIDDEN = ("codesign.quant", "codesign.sparsity")


def test_hw_imports_nothing_from_quant_or_sparsity():
    package = Path(codesign.hw.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against codesign.hw
                    names = [f"codesign.{node.module or ''}"] if node.level == 2 else []
                else:
                    names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(FORBIDDEN)]
    assert not offenders, offenders
