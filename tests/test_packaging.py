"""The wheel is the whole package: installed on its own (not editable), ``codesign demo`` runs.

The editable install used for development finds recipes and checkpoints in the repository
whatever the wheel holds, so only a real wheel in a separate environment shows a file left out.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# What the build reads: pyproject (with its readme) and the trees its package-dir maps. A
# copy, because setuptools builds in place (build/, *.egg-info) and a stale build/lib from an
# earlier build would hide a file the current configuration leaves out.
BUILD_INPUTS = ("pyproject.toml", "README.md", "codesign", "recipes", "checkpoints")
DATA_PACKAGES = {"codesign.recipes": "recipes", "codesign.checkpoints": "checkpoints"}


def _source_packages() -> set[str]:
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in ROOT.glob("codesign/**/__init__.py")
    }
    return found | set(DATA_PACKAGES)


def test_pyproject_lists_every_package() -> None:
    # packages are listed by hand (packages.find cannot add the mapped data packages), so a
    # new subpackage must be added there or the wheel silently lacks it.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _source_packages()
    assert config["package-dir"] == DATA_PACKAGES


def _run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False, **kwargs
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*pip_wheel, "--no-index", "-q", "-w", wheels, source])
    (wheel,) = wheels.glob("codesign-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> tuple[Path, Path]:
    """A venv holding only the wheel; the dependencies (torch: minutes to install) are read
    from this interpreter's site-packages through a .pth path line. A plain path line adds
    the folder but runs none of its .pth files, so the editable install's finder, which
    those register, never loads there: ``codesign`` can only come from the wheel."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    purelib = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    deps = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (purelib / "_codesign_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    # pip --python installs into the venv as its own pip would (console script included).
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            wheel,
        ]
    )
    return python, purelib


@pytest.mark.slow
def test_wheel_installs_whole_and_runs_the_demo(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("codesign/**/*.py")}
    assert sources <= names
    for package, folder in DATA_PACKAGES.items():
        data = {p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*.*")}
        data = {f for f in data if "__pycache__" not in f}
        prefix = package.replace(".", "/")
        assert {f"{prefix}/{f}" for f in data} <= names, package

    python, purelib = _fresh_venv(tmp_path, wheel)
    # Away from the repository and without PYTHONPATH: nothing but the venv's own paths.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = json.loads(
        _run(
            [
                python,
                "-c",
                "import json, codesign, codesign.resources as r; print(json.dumps("
                "[codesign.__file__, str(r.bundled_dir(r.RECIPES_PACKAGE)), "
                "str(r.bundled_checkpoint('resnet8-digits'))]))",
            ],
            cwd=tmp_path,
            env=env,
        ).stdout
    )
    installed = purelib / "codesign"
    for path in where:
        assert Path(path).is_relative_to(installed), (path, installed)

    started = time.perf_counter()
    out = tmp_path / "demo"
    _run([python.parent / "codesign", "demo", "--out", out, "--quiet"], cwd=tmp_path, env=env)
    print(f"demo from the wheel: {time.perf_counter() - started:.0f} s")
    assert (out / "report.html").is_file()
    assert (out / "results.json").is_file()
