"""A study across processes: concurrent `codesign run`s on one --out build every variant
exactly once, `--jobs`, `--variants` and `codesign report` give the serial run's
results.json byte for byte, a dead builder's lock is taken over, and one --out holds one
recipe."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from codesign.cli import main

from ..conftest import digits_recipe_head
from ..test_locks import dead_pid, write_lock

# Three cheap variants on one datapath: a float one, a PTQ one, a one-shot 2:4 one.
VARIANTS = """[[variants]]
name = "fp32"
[[variants]]
name = "ptq-w8a8"
quant = { weight_bits = 8, act_bits = 8, method = "minmax" }
[[variants]]
name = "2:4"
sparsity = { sparsity = "2:4" }
"""
NAMES = ["fp32", "ptq-w8a8", "2:4"]
# One torch thread everywhere (this process and every child): the numbers of a run must not
# depend on which process computed them, and two cores are shared by two runs at once.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _codesign(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "codesign", *args, "--quiet"]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def _finish(process: subprocess.Popen[str]) -> str:
    """The process's stderr once it has exited 0."""
    _, err = process.communicate(timeout=900)
    assert process.returncode == 0, err
    return err


def _builds(out: Path) -> dict[str, list[dict]]:
    """Per variant built, by name, the builds recorded in its builds.json."""
    manifest = json.loads((out / "study.json").read_text())
    paths = {
        v["name"]: out / "variants" / v["directory"] / "builds.json" for v in manifest["variants"]
    }
    return {name: json.loads(p.read_text())["builds"] for name, p in paths.items() if p.is_file()}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(recipe, OUT of a serial run in one process, on one thread)."""
    directory = tmp_path_factory.mktemp("fanout")
    recipe = directory / "fanout.toml"
    recipe.write_text(digits_recipe_head("fanout-test", ["scnn"]) + VARIANTS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(recipe), "--out", str(directory / "serial"), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    yield recipe, directory / "serial"


def test_two_processes_on_one_out_build_each_variant_once(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    recipe, serial = study
    out = tmp_path / "shared"
    first = _codesign("run", str(recipe), "--out", str(out))
    second = _codesign("run", str(recipe), "--out", str(out))
    _finish(first)
    _finish(second)
    builds = _builds(out)
    assert sorted(builds) == sorted(NAMES)
    assert all(len(b) == 1 for b in builds.values()), builds
    assert {b[0]["pid"] for b in builds.values()} <= {first.pid, second.pid}
    assert all(b[0]["host"] == socket.gethostname() for b in builds.values())
    assert (out / "results.json").read_bytes() == (serial / "results.json").read_bytes()
    assert not list(out.rglob("*.lock"))


def test_jobs_2_equals_a_serial_run(study: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, serial = study
    out = tmp_path / "jobs"
    assert main(["run", str(recipe), "--out", str(out), "--jobs", "2", "--quiet"]) == 0
    builds = _builds(out)
    assert sorted(builds) == sorted(NAMES) and all(len(b) == 1 for b in builds.values())
    assert os.getpid() not in {b[0]["pid"] for b in builds.values()}  # built by the workers
    assert (out / "results.json").read_bytes() == (serial / "results.json").read_bytes()


def test_variants_subsets_then_report(
    study: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, serial = study
    out = tmp_path / "parts"
    assert main(["run", str(recipe), "--out", str(out), "--variants", "2:4", "--quiet"]) == 0
    assert sorted(_builds(out)) == ["2:4"]
    assert not (out / "results.json").exists()  # a subset writes no (partial) report
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not built yet: fp32, ptq-w8a8" in err[0]
    assert not (out / "results.json").exists()
    args = ["run", str(recipe), "--out", str(out), "--variants", "ptq-w8a8,fp32", "--quiet"]
    assert main(args) == 0
    assert all(len(b) == 1 for b in _builds(out).values())
    assert main(["report", str(out)]) == 0
    assert (out / "results.json").read_bytes() == (serial / "results.json").read_bytes()


def test_an_unknown_variant_name_stops_before_any_work(
    study: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, _ = study
    out = tmp_path / "never"
    assert main(["run", str(recipe), "--out", str(out), "--variants", "fp32,ptq-w8"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no variant 'ptq-w8' (close: ptq-w8a8)" in line
    assert "its variants: fp32, ptq-w8a8, 2:4" in line
    assert not out.exists()


def _lock_of(out: Path, name: str) -> Path:
    (entry,) = [
        v for v in json.loads((out / "study.json").read_text())["variants"] if v["name"] == name
    ]
    return out / "variants" / f"{entry['directory']}.lock"


def test_a_dead_builders_lock_is_taken_over(study: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, serial = study
    out = tmp_path / "stale"
    out.mkdir()
    shutil.copy(serial / "study.json", out)
    shutil.copy(serial / "study.json.sha256", out)
    lock = _lock_of(out, "fp32")
    write_lock(lock, socket.gethostname(), dead_pid())
    # what the dead builder was writing when it was killed
    half_written = lock.with_suffix("") / ".model.pt.k1ll3d.tmp"
    half_written.parent.mkdir(parents=True)
    half_written.write_bytes(b"half")
    assert main(["run", str(recipe), "--out", str(out), "--variants", "fp32", "--quiet"]) == 0
    assert [b["pid"] for b in _builds(out)["fp32"]] == [os.getpid()]
    assert not lock.exists()
    assert not half_written.exists() and not list(out.rglob("*.tmp"))


def test_a_live_builder_is_waited_for_with_a_message(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    from codesign.locks import Lock, try_lock

    recipe, serial = study
    out = tmp_path / "wait"
    out.mkdir()
    shutil.copy(serial / "study.json", out)
    shutil.copy(serial / "study.json.sha256", out)
    held = try_lock(_lock_of(out, "fp32"), "variant fp32")
    assert isinstance(held, Lock)
    expected = f"variant 'fp32' is being built by {held.info.describe()}; waiting for it"
    log = tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "codesign", "run", str(recipe), "--out", str(out)]
    with log.open("w") as stderr:
        waiting = subprocess.Popen(
            [*command, "--variants", "fp32", "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=ENV,
        )
    try:
        deadline = time.monotonic() + 600  # a hang guard, not a timing
        while expected not in log.read_text() and waiting.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert waiting.poll() is None and not _builds(out)  # it waits and builds nothing
    finally:
        held.release()
    assert waiting.wait(timeout=600) == 0, log.read_text()
    assert [b["pid"] for b in _builds(out)["fp32"]] == [waiting.pid]


def test_one_out_holds_one_recipe(
    study: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, serial = study
    other = tmp_path / "other.toml"
    other.write_text(recipe.read_text().replace('name = "fanout-test"', 'name = "another"'))
    before = (serial / "study.json").read_bytes()
    capsys.readouterr()
    assert main(["run", str(other), "--out", str(serial), "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "holds the study of recipe 'fanout-test', not 'another'" in line
    assert (serial / "study.json").read_bytes() == before
