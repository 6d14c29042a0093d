"""Faults on the embedded digits data: a process killed (SIGKILL) at seeded random points of
``qat``, ``prune`` with fine-tuning and ``run`` resumes to the result of an uninterrupted run;
a full or read-only output disk fails with one line and leaves the earlier results as they
were; Ctrl-C (SIGINT) stops with one line and a state the next run resumes from.

The killed runs are forked processes (no second import of torch) that kill themselves at a
chosen point: the k-th training step, or the k-th file rename (the moment a file's temporary
copy is complete but not yet in place). Where a run can be killed is counted on an
uninterrupted reference run first, so the points cover the whole run whatever the machine's
speed. Everything runs on one thread, so the forked and the in-process parts compute the same
bytes.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.abc
import io
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

# Every training step of a preloaded split augments its batch here (data.loops.training_batches).
import codesign
import codesign.data.loops as loops
import codesign.io
import codesign.study.variants as variants
from codesign import launch
from codesign.cli import demo_checkpoint, main
from codesign.errors import ResultError

from .conftest import digits_recipe_head

FORK = multiprocessing.get_context("fork")
TRIALS = 5
# result.json keys that legitimately differ between two runs of the same command: where and
# when it ran (``runtime``: versions, commit, CPU, threads) and how long the parts took.
TIMINGS = {"runtime", "calib_seconds", "train_seconds", "train_cpu_seconds"}
RUN_RECIPE = digits_recipe_head("faults", ["scnn"]) + (
    '[[variants]]\nname = "fp32"\n'
    '[[variants]]\nname = "w8a8"\nquant = { weight_bits = 8, act_bits = 8 }\n'
    '[[variants]]\nname = "2:4-ft"\nsparsity = { sparsity = "2:4" }\nfinetune = { epochs = 2 }\n'
    '[[variants]]\nname = "qat-w4a4"\nquant = { weight_bits = 4, act_bits = 4 }\n'
    "qat = { epochs = 2 }\n"
)
STEPS_PER_EPOCH = 11  # ceil(1,293 digits training images after validation / batch 128)


class KillPoints:
    """Counts the points a run can be killed at (``step``: a training step; ``write``: a file
    rename) and, given ``kill_at = (kind, k)``, SIGKILLs the process at the k-th one."""

    def __init__(self, kill_at: tuple[str, int] | None = None) -> None:
        self.counts = {"step": 0, "write": 0}
        self.kill_at = kill_at

    def install(self, patch: Callable[[Any, str, Any], None]) -> KillPoints:
        real_augment, real_replace = loops.augment, os.replace

        def augment(*args: Any, **kwargs: Any) -> Any:
            self._reached("step")
            return real_augment(*args, **kwargs)

        def replace(*args: Any, **kwargs: Any) -> Any:
            self._reached("write")
            return real_replace(*args, **kwargs)

        patch(loops, "augment", augment)
        patch(os, "replace", replace)
        return self

    def _reached(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.kill_at == (kind, self.counts[kind]):
            os.kill(os.getpid(), signal.SIGKILL)


def _killed_child(argv: list[str], kill_at: tuple[str, int]) -> None:
    torch.set_num_threads(1)
    KillPoints(kill_at).install(setattr)
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    os._exit(code)  # never back into the forked pytest


def run_killed(argv: list[str], kill_at: tuple[str, int]) -> None:
    """Run ``argv`` in a forked process that SIGKILLs itself at ``kill_at``."""
    child = FORK.Process(target=_killed_child, args=(argv, kill_at))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, (kill_at, child.exitcode)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def without_timings(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in TIMINGS}


def state_epoch(path: Path) -> int:
    """Epochs a keyed training state holds (0 without one): its header is three text lines,
    then the torch.save body (see codesign.io.write_keyed_state)."""
    if not path.exists():
        return 0
    body = path.read_bytes().split(b"\n", 3)[3]
    return int(torch.load(io.BytesIO(body), weights_only=True)["epoch"])


def command_argv(command: str, out: Path) -> list[str]:
    checkpoint = ["--checkpoint", str(demo_checkpoint())]
    flags = {
        "qat": ["--weight-bits", "4", "--act-bits", "4", "--epochs", "3", "--calib-samples", "64"],
        "prune": ["--sparsity", "0.5", "--schedule", "cubic", "--epochs", "3"],
    }[command]
    return [command, *checkpoint, *flags, "--quiet", "--out", str(out)]


@pytest.mark.parametrize("command,state", [("qat", "qat_state.pt"), ("prune", "finetune_state.pt")])
def test_killed_training_resumes_from_its_last_epoch_to_the_same_result(
    command: str, state: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread
) -> None:
    with monkeypatch.context() as patch:
        points = KillPoints().install(patch.setattr)
        assert main(command_argv(command, tmp_path / "whole")) == 0
    reference = tmp_path / "whole"
    total_steps = 3 * STEPS_PER_EPOCH
    assert points.counts["step"] == total_steps
    rng = random.Random(f"{command}-kills")
    trials = []
    for trial in range(TRIALS):
        out = tmp_path / f"killed{trial}"
        kind = rng.choice(["step", "step", "write"])
        kill_at = (kind, rng.randint(1, points.counts[kind]))
        run_killed(command_argv(command, out), kill_at)
        done_epochs = state_epoch(out / state)
        trials.append(f"{kind} {kill_at[1]}: resumed after epoch {done_epochs}")
        with monkeypatch.context() as patch:
            resumed = KillPoints().install(patch.setattr)
            assert main(command_argv(command, out)) == 0
        # Resumed from the last finished epoch: only the epochs after it were trained.
        assert resumed.counts["step"] == total_steps - done_epochs * STEPS_PER_EPOCH, kill_at
        assert (out / "model.pt").read_bytes() == (reference / "model.pt").read_bytes(), kill_at
        result, expected = (json.loads((d / "result.json").read_text()) for d in (out, reference))
        assert without_timings(result) == without_timings(expected), kill_at
        assert not (out / state).exists()
    print(f"{command}: {TRIALS} SIGKILL trials resumed to the uninterrupted result ({trials})")


def test_killed_run_resumes_from_its_last_variant_to_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread
) -> None:
    recipe = tmp_path / "faults.toml"
    recipe.write_text(RUN_RECIPE)
    reference = tmp_path / "whole"
    with monkeypatch.context() as patch:
        points = KillPoints().install(patch.setattr)
        assert main(["run", str(recipe), "--out", str(reference), "--quiet"]) == 0
    models = sorted(p.relative_to(reference) for p in reference.glob("variants/*/model.pt"))
    assert len(models) == 4
    rng = random.Random("run-kills")
    trials = []
    for trial in range(TRIALS):
        out = tmp_path / f"killed{trial}"
        kind = rng.choice(["step", "write"])
        kill_at = (kind, rng.randint(1, points.counts[kind]))
        argv = ["run", str(recipe), "--out", str(out), "--quiet"]
        run_killed(argv, kill_at)
        finished = sum(_verified(p) for p in out.glob("variants/*/variant.json"))
        trials.append(f"{kind} {kill_at[1]}: {finished} of 4 variants kept")
        built: list[str] = []
        real_build = variants.build_variant

        def counting(study, variant, _built=built, _real=real_build):
            _built.append(variant.name)
            return _real(study, variant)

        with monkeypatch.context() as patch:
            patch.setattr(variants, "build_variant", counting)
            assert main(argv) == 0
        assert len(built) == 4 - finished, kill_at  # finished variants came from OUT
        results = (out / "results.json").read_bytes()
        assert results == (reference / "results.json").read_bytes(), kill_at
        for model in models:
            assert (out / model).read_bytes() == (reference / model).read_bytes(), (kill_at, model)
    print(f"run: {TRIALS} SIGKILL trials resumed to the uninterrupted results ({trials})")


def _verified(path: Path) -> bool:
    try:
        codesign.io.read_json_verified(path)
    except ResultError:
        return False
    return True


def _interrupted_child(argv: list[str], at_step: int, reached, stderr_path: str) -> None:
    """Run ``argv``; at training step ``at_step`` tell the parent and wait for its SIGINT."""
    # As in a foreground terminal: a shell starts background jobs with SIGINT ignored, and
    # the test must not depend on how its own runner was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(1)
    real_augment = loops.augment
    steps = [0]

    def augment(*args: Any, **kwargs: Any) -> Any:
        steps[0] += 1
        if steps[0] == at_step:
            reached.set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # Python code: the signal lands in here
                time.sleep(0.01)
        return real_augment(*args, **kwargs)

    loops.augment = augment
    with (
        open(stderr_path, "w") as err,
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        code = main(argv)
    os._exit(code)


def test_ctrl_c_stops_with_one_line_and_the_next_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread
) -> None:
    reference, out = tmp_path / "whole", tmp_path / "interrupted"
    assert main(command_argv("qat", reference)) == 0
    reached, stderr_path = FORK.Event(), tmp_path / "stderr.txt"
    at_step = STEPS_PER_EPOCH + 5  # in the second epoch
    child = FORK.Process(
        target=_interrupted_child,
        args=(command_argv("qat", out), at_step, reached, str(stderr_path)),
    )
    child.start()
    assert reached.wait(timeout=300)
    os.kill(child.pid, signal.SIGINT)  # what Ctrl-C sends
    child.join(timeout=300)  # generous: on a crowded machine the child may wait for a core
    assert child.exitcode == 130
    assert stderr_path.read_text() == "codesign: interrupted\n"
    assert state_epoch(out / "qat_state.pt") == 1  # the finished epoch, nothing half-written
    assert not (out / "result.json").exists() and not (out / "model.pt").exists()
    with monkeypatch.context() as patch:
        resumed = KillPoints().install(patch.setattr)
        assert main(command_argv("qat", out)) == 0
    assert resumed.counts["step"] == 2 * STEPS_PER_EPOCH
    assert (out / "model.pt").read_bytes() == (reference / "model.pt").read_bytes()


@contextlib.contextmanager
def _failing_disk(path, *, code: int, real=codesign.io.atomic_path):
    """``atomic_path`` on a disk that fails as the temporary file is finished: half of it
    reaches the disk, then the write fails with ``code`` (ENOSPC: full, EROFS: read-only)."""
    with real(path) as tmp:
        yield tmp
        data = tmp.read_bytes()
        tmp.write_bytes(data[: len(data) // 2])
        raise OSError(code, os.strerror(code), str(tmp))


@pytest.mark.parametrize(
    "code,advice",
    [(errno.ENOSPC, "free space on that disk"), (errno.EROFS, "the file system is read-only")],
)
@pytest.mark.parametrize("command", ["ptq", "run"])
def test_a_full_or_read_only_disk_fails_with_one_line_and_keeps_earlier_results(
    command: str,
    code: int,
    advice: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    if command == "ptq":
        argv = [
            "ptq", "--checkpoint", str(demo_checkpoint()), "--weight-bits", "8",
            "--act-bits", "8", "--calib-samples", "64", "--quiet", "--out", str(out),
        ]  # fmt: skip
        rerun = [*argv[:8], "32", *argv[9:]]  # other settings: a new model.pt and result.json
        results = ["model.pt", "model.pt.sha256", "result.json"]
    else:
        recipe = tmp_path / "r.toml"
        recipe.write_text(RUN_RECIPE.split('[[variants]]\nname = "2:4-ft"')[0])
        argv = ["run", str(recipe), "--out", str(out), "--quiet"]
        rerun = [*argv, "--force"]  # every variant rebuilt and written again
        results = ["results.json", "results.csv", "report.html"]
    assert main(argv) == 0
    before = {name: (out / name).read_bytes() for name in results}
    capsys.readouterr()
    monkeypatch.setattr(codesign.io, "atomic_path", lambda p: _failing_disk(p, code=code))
    assert main(rerun) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("codesign: error: "), lines
    assert os.strerror(code) in lines[0] and advice in lines[0], lines
    assert {name: (out / name).read_bytes() for name in results} == before
    assert not list(out.rglob("*.tmp"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_a_read_only_out_is_refused_before_work_and_keeps_earlier_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["eval", "--checkpoint", str(demo_checkpoint()), "--quiet", "--out", str(out)]
    assert main(argv) == 0
    before = (out / "result.json").read_bytes()
    out.chmod(0o500)
    try:
        capsys.readouterr()
        assert main(argv) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and "is not writable" in lines[0], lines
        assert (out / "result.json").read_bytes() == before
    finally:
        out.chmod(0o700)


class _InterruptedImport(importlib.abc.MetaPathFinder):
    """A Ctrl-C that arrives while ``codesign.cli`` (torch and all) is being imported."""

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name == "codesign.cli":
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_the_command_imports_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "codesign.cli" or m.startswith("codesign.cli.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    assert launch.run(["--help"]) == launch.INTERRUPTED_EXIT
    assert capsys.readouterr().err == "codesign: interrupted\n"


def test_the_launcher_imports_nothing_heavy() -> None:
    """What runs before the launcher's try block must not pull in torch."""
    code = "import sys, codesign.launch; print('torch' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.stdout.strip() == "False", shown.stderr
    # and the lazy package still offers its whole API
    code = "import codesign; print(sorted(n for n in codesign.__all__ if getattr(codesign, n)))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.stdout.strip() == str(sorted(codesign.__all__)), shown.stderr
