"""The writer lock: one process at a time may commit to a bank.

We use an advisory `fcntl.flock` on `<bank>/lock` rather than git's O_EXCL lockfile because the kernel drops
a flock when its holder dies, so a lock left by a killed process can never block the bank: the next writer
gets the lock and reads the dead holder's pid from the file to say so. The file holds the holder's pid as
JSON for the "locked by pid N" message. Readers never take the lock (they see whole files only).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from ..errors import BankLockedError, CommitError

LOCK_NAME = "lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    """`with WriterLock(bank_root) as lock:` holds the bank's writer lock; `lock.stale_pid` names a dead
    previous holder whose lock we took over (None if the lock was free)."""

    def __init__(self, root: Path):
        self.path = root / LOCK_NAME
        self.fd: int | None = None
        self.stale_pid: int | None = None

    def __enter__(self) -> WriterLock:
        if sys.platform == "win32":  # pragma: no cover - every writer of a bank must use flock (SPEC: lock)
            raise CommitError("writing a bank needs a POSIX system (fcntl); use Linux, macOS or WSL")
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CommitError(f"cannot open the bank's lock file {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f"pid {holder['pid']}" if holder else "another process"
            where = f" on {holder['host']}" if holder and holder.get("host") != socket.gethostname() else ""
            raise BankLockedError(
                f"bank is locked by {who}{where}; wait for it to finish (or stop it) and try again"
            ) from None
        except OSError as e:  # e.g. ENOLCK on a network file system
            os.close(fd)
            raise CommitError(f"cannot lock {self.path}: {e.strerror}; put the bank on a local disk") from None
        previous = _read_holder(fd)
        if previous and previous.get("pid") != os.getpid() and not _pid_alive(int(previous["pid"])):
            self.stale_pid = int(previous["pid"])
        try:
            _write_holder(fd)
        except OSError as e:  # disk full, quota: let go of the lock and name the file (cli maps the errno)
            os.close(fd)
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty file = nobody holds the lock
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def lock_is_held(root: Path) -> bool:
    """Whether some process holds the bank's writer lock now (probed without waiting, released at once)."""
    if sys.platform == "win32":  # pragma: no cover
        return False
    import fcntl

    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody has written yet
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases a flock we got


def _write_holder(fd: int) -> None:
    """Record this process as the holder: {"pid": N, "host": NAME} (the "locked by pid N" message reads it)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)


def _read_holder(fd: int) -> dict | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw) if raw.strip() else None
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None
    except (OSError, ValueError):
        return None
