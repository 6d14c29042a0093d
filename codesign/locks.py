"""Lock files that let many processes, on one machine or many, share one output directory.

A lock is a small JSON file (``host``, ``pid``, ``started``, ``token``, ``what``) created with
``O_CREAT | O_EXCL``: the create succeeds in exactly one process, on a local file system and
on NFS from version 3 on (where the server performs the exclusive create), so no two
processes ever hold the same lock. While it is held a daemon thread touches the file every
:data:`HEARTBEAT_S` seconds; its modification time is the holder's heartbeat.

A lock is stale, and is taken over, when its holder is a process on this host that no longer
runs, or when its heartbeat is older than :data:`STALE_AFTER_S` (a holder on another host,
whose pid cannot be checked from here, that died or lost the file system). A holder killed
outright (SIGKILL, a lost node) therefore blocks its lock for at most that long.

Taking over is itself guarded by a short-lived ``<lock>.takeover`` file, created the same
way, so two processes that both find a stale lock cannot both remove it: the second could
otherwise delete the first's fresh lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from codesign.errors import LockHeldError
from codesign.io import sweep_temporaries

HEARTBEAT_S = 30.0  # a held lock's file is touched this often
# Generous against clock skew between hosts and file-server hiccups: a live holder is taken
# for dead only after 20 missed heartbeats.
STALE_AFTER_S = 600.0
# A lock file too young to have been written yet (created, its JSON not yet in it) is live.
UNWRITTEN_GRACE_S = 60.0
POLL_S = 1.0  # how often a waiting process looks at a lock again
LOCK_NAME = ".codesign.lock"  # an output directory's lock (see hold_directory)


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """Who holds a lock: host name, process id, start (UTC, ISO 8601), a unique token, what
    it is doing, and the age of its last heartbeat (seconds, from the file's mtime)."""

    host: str
    pid: int
    started: str
    token: str
    what: str
    heartbeat_age_s: float = 0.0

    def describe(self) -> str:
        """``pid P on host H since T``."""
        if not self.token:  # created an instant ago, its record not written yet
            return "a process that is just starting"
        return f"pid {self.pid} on host {self.host} since {self.started}"


def utc_now_iso() -> str:
    """Now, in UTC, as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def read_lock(path: Path) -> LockInfo | None:
    """The holder recorded in the lock file at ``path``; None when there is no file or it
    holds no complete record (being written, or its writer died between create and write)."""
    try:
        text = path.read_text(encoding="utf-8")
        age_s = time.time() - path.stat().st_mtime
        data = json.loads(text)
        return LockInfo(
            host=str(data["host"]),
            pid=int(data["pid"]),
            started=str(data["started"]),
            token=str(data["token"]),
            what=str(data.get("what", "")),
            heartbeat_age_s=max(age_s, 0.0),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _file_age_s(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def is_stale(info: LockInfo | None, path: Path) -> bool:
    """A lock whose holder is gone: a dead process on this host, a heartbeat older than
    :data:`STALE_AFTER_S`, or a file that never got its record (older than the grace)."""
    if info is None:
        age_s = _file_age_s(path)
        return age_s is not None and age_s > UNWRITTEN_GRACE_S
    if info.heartbeat_age_s > STALE_AFTER_S:
        return True
    return info.host == socket.gethostname() and not _pid_alive(info.pid)


class Lock:
    """A held lock: release it with :meth:`release` (or use it as a context manager). The
    heartbeat thread keeps its file's modification time fresh until then."""

    def __init__(self, path: Path, info: LockInfo) -> None:
        self.path = path
        self.info = info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {path}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            current = read_lock(self.path)
            if current is None or current.token != self.info.token:
                sys.stderr.write(
                    f"codesign: warning: lock {self.path} was taken over by another process "
                    "(this one was thought dead); its files are written atomically either way\n"
                )
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Stop the heartbeat and remove the file, if it is still this holder's (after a
        takeover it belongs to another process and stays)."""
        self._stop.set()
        current = read_lock(self.path)
        if current is not None and current.token == self.info.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create(path: Path, what: str) -> Lock | None:
    """Create the lock file exclusively and write its record; None if it exists."""
    info = LockInfo(socket.gethostname(), os.getpid(), utc_now_iso(), uuid.uuid4().hex, what)
    try:
        # O_CREAT | O_EXCL: atomic "create if absent" on local file systems and on NFSv3+
        # (the server does the exclusive create), so exactly one process gets the file.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    record = {k: v for k, v in dataclasses.asdict(info).items() if k != "heartbeat_age_s"}
    try:
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return Lock(path, info)


def _take_over(path: Path, seen: LockInfo | None) -> None:
    """Remove the stale lock ``seen`` at ``path``, unless another process is taking it over
    or it changed since it was judged stale."""
    guard = path.with_name(path.name + ".takeover")
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)  # atomic, as above
    except FileExistsError:
        age_s = _file_age_s(guard)
        if age_s is not None and age_s > UNWRITTEN_GRACE_S:  # its owner died mid-takeover
            guard.unlink(missing_ok=True)
        return
    try:
        current = read_lock(path)
        if seen is None:  # still an unwritten file, and still an old one (not a new holder's)
            same = current is None and is_stale(None, path)
        else:
            same = current is not None and current.token == seen.token
        if same:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)
        guard.unlink(missing_ok=True)


def try_lock(path: str | os.PathLike[str], what: str = "") -> Lock | LockInfo:
    """The lock at ``path`` (its directory is created), taking over a stale one; or, when a
    live process holds it, that holder's :class:`LockInfo`. ``what`` is recorded in the file
    (e.g. ``"variant fp32"``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a takeover race lost is retried; a fresh holder then wins
        lock = _create(path, what)
        if lock is not None:
            return lock
        seen = read_lock(path)
        if not is_stale(seen, path):
            if seen is not None:
                return seen
            return _unwritten(what)
        _take_over(path, seen)
    lock = _create(path, what)
    if lock is not None:
        return lock
    return read_lock(path) or _unwritten(what)


def _unwritten(what: str) -> LockInfo:
    """The holder of a lock file created but not yet written (an instant's window)."""
    return LockInfo("?", 0, "?", "", what)


def wait_lock(path: str | os.PathLike[str], what: str, message: str) -> Lock:
    """Block until the lock at ``path`` is held; ``message``, its ``{holder}`` replaced by
    the holder's description, goes to stderr once per holder it waits for."""
    announced: set[str] = set()
    while True:
        got = try_lock(path, what)
        if isinstance(got, Lock):
            return got
        if got.token not in announced:
            announced.add(got.token)
            sys.stderr.write(message.replace("{holder}", got.describe()) + "\n")
        time.sleep(POLL_S)


@contextlib.contextmanager
def hold_directory(out: Path, command: str) -> Iterator[Lock]:
    """Hold ``OUT/.codesign.lock`` for a command's duration (released in ``finally``).

    Raises :class:`LockHeldError` naming the holder when a live process has it. Holding it,
    the temporaries a killed writer left in ``out`` are removed first. Directories
    created only to hold the lock are removed again if the command left them empty.
    """
    created = [d for d in (out, *out.absolute().parents) if not d.exists()]
    got = try_lock(out / LOCK_NAME, command)
    if isinstance(got, LockInfo):
        raise LockHeldError(
            f"{out} is in use by {got.describe()} ({got.what or 'codesign'}); wait for it "
            "or choose another --out"
        )
    try:
        sweep_temporaries(out)  # a killed earlier command's half-written files
        yield got
    finally:
        got.release()
        for directory in created:  # innermost first; rmdir only succeeds when empty
            try:
                directory.rmdir()
            except OSError:
                break
