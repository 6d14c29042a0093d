"""Lock files: exactly one holder, stale holders taken over, live ones named, never removed by
a process that no longer holds them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from codesign import locks
from codesign.cli import main
from codesign.cli.study_commands import demo_checkpoint
from codesign.errors import LockHeldError
from codesign.locks import Lock, LockInfo, hold_directory, read_lock, try_lock


def dead_pid() -> int:
    """The id of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(path: Path, host: str, pid: int, age_s: float = 0.0) -> None:
    """A lock file as another process would have left it, its heartbeat ``age_s`` old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"host": host, "pid": pid, "started": "2020-01-01T00:00:00Z", "token": "x" * 32}
    path.write_text(json.dumps({**record, "what": "test"}) + "\n")
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))


def test_a_lock_has_one_holder_until_released(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    first = try_lock(path, "first")
    assert isinstance(first, Lock)
    second = try_lock(path, "second")
    assert isinstance(second, LockInfo)
    assert (second.host, second.pid, second.what) == (socket.gethostname(), os.getpid(), "first")
    assert second.token == first.info.token
    first.release()
    assert not path.exists()
    third = try_lock(path)
    assert isinstance(third, Lock)
    third.release()


def test_racing_processes_get_exactly_one_lock(tmp_path: Path) -> None:
    # Threads issue the same O_EXCL create as processes do: one file, one winner.
    path, barrier, won = tmp_path / "race.lock", threading.Barrier(8), []

    def contend() -> None:
        barrier.wait()
        got = try_lock(path)
        if isinstance(got, Lock):
            won.append(got)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    won[0].release()


def test_a_dead_holder_on_this_host_is_taken_over_once(tmp_path: Path) -> None:
    path, barrier, won = tmp_path / "stale.lock", threading.Barrier(8), []
    write_lock(path, socket.gethostname(), dead_pid())
    assert locks.is_stale(read_lock(path), path)

    def contend() -> None:
        barrier.wait()
        got = try_lock(path)
        if isinstance(got, Lock):
            won.append(got)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every contender saw the stale lock; the takeover guard lets only one replace it.
    assert len(won) == 1
    assert read_lock(path).token == won[0].info.token
    won[0].release()


def test_another_host_is_trusted_until_its_heartbeat_stops(tmp_path: Path) -> None:
    path = tmp_path / "remote.lock"
    write_lock(path, "elsewhere", 1, age_s=locks.STALE_AFTER_S / 2)
    held = try_lock(path)
    assert isinstance(held, LockInfo) and held.describe().startswith("pid 1 on host elsewhere")
    write_lock(path, "elsewhere", 1, age_s=locks.STALE_AFTER_S * 2)
    got = try_lock(path)
    assert isinstance(got, Lock)
    got.release()


def test_a_lock_file_without_its_record_is_live_only_briefly(tmp_path: Path) -> None:
    path = tmp_path / "empty.lock"
    path.touch()
    held = try_lock(path)
    assert isinstance(held, LockInfo) and held.describe() == "a process that is just starting"
    past = time.time() - 2 * locks.UNWRITTEN_GRACE_S
    os.utime(path, (past, past))
    got = try_lock(path)
    assert isinstance(got, Lock)
    got.release()


def test_release_leaves_a_lock_taken_over_by_another(tmp_path: Path) -> None:
    path = tmp_path / "taken.lock"
    mine = try_lock(path)
    assert isinstance(mine, Lock)
    write_lock(path, "elsewhere", 7)  # what a takeover leaves: another holder's record
    mine.release()
    assert read_lock(path).host == "elsewhere"


def test_the_heartbeat_refreshes_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    path = tmp_path / "beat.lock"
    lock = try_lock(path)
    assert isinstance(lock, Lock)
    past = time.time() - 1000
    os.utime(path, (past, past))
    deadline = time.monotonic() + 30  # hang guard only
    while time.time() - path.stat().st_mtime > 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.time() - path.stat().st_mtime < 500
    lock.release()


def test_hold_directory_names_the_holder_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper"
    with hold_directory(out, "ptq") as lock:
        assert (out / locks.LOCK_NAME).is_file()
        with pytest.raises(LockHeldError) as refused, hold_directory(out, "qat"):
            pass
        info = lock.info
        assert str(refused.value) == (
            f"{out} is in use by pid {info.pid} on host {info.host} since {info.started} "
            "(ptq); wait for it or choose another --out"
        )
    assert not (tmp_path / "new").exists()  # created only for the lock, left empty: removed


def test_a_single_command_refuses_a_directory_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(demo_checkpoint()), "--out", str(out)]
    with hold_directory(out, "qat") as lock:
        # the holder's half-written file: a refused command must not touch it
        in_flight = out / ".model.pt.a1b2c3.tmp"
        in_flight.write_bytes(b"half")
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"codesign: error: {out} is in use by {lock.info.describe()} (qat); wait for it "
            "or choose another --out"
        ]
        assert not (out / "result.json").exists()
        assert in_flight.read_bytes() == b"half"
    # A holder that died is taken over, and what it left half-written is removed; the
    # command's lock is gone once it is done.
    write_lock(out / locks.LOCK_NAME, socket.gethostname(), dead_pid())
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["result.json"]  # the temporary swept
