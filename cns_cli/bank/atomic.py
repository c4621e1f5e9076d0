"""Crash-safe file writes: write a sibling temp file, fsync it, then put it in place, fsync the folder.

`atomic_write` renames the temp file over the target (HEAD, objects): a reader sees either the old file or
the new one, never a half-written one, and an existing file is never truncated in place (a file we mmapped
earlier keeps its bytes; cf. safetensors #764). `create_exclusive` hard-links it to a name that must not
exist yet (revision files: history is never replaced). Disk-full and other OS errors become CommitError with
the temp file removed.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ..errors import CommitError

TMP_PREFIX = ".tmp-"


def canonical_json(obj: Any) -> bytes:
    """The one JSON serialisation the bank writes: sorted keys, 2-space indent, UTF-8, no NaN, final newline."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except ValueError as e:  # NaN / Infinity
        raise CommitError(f"refusing to write non-finite numbers into the bank ({e})") from None
    return (text + "\n").encode("utf-8")


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable. Not every platform can open a directory; that is fine there."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def write_new(path: Path, data: bytes) -> None:
    """Create `path` (which must not exist: O_EXCL), write `data` and fsync it. If writing fails, the file
    this call created is removed again (never one that existed before: O_EXCL refused that)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _write_failed(path: Path, e: OSError) -> CommitError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CommitError(f"disk full while writing {path.name}; free some space and run the command again")
    return CommitError(f"could not write {path}: {e.strerror or e}; check the permissions and free space")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    tmp = temp_name(path)
    try:
        write_new(tmp, data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_failed(path, e) from None
    fsync_dir(path.parent)


# link(2) errors that mean "this file system has no hard links" (FAT, exFAT, some network shares).
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS} | {
    getattr(errno, name) for name in ("ENOTSUP", "EOPNOTSUPP") if hasattr(errno, name)}


def place_new(tmp: Path, path: Path) -> bool:
    """Give the complete, fsynced file `tmp` the name `path` unless a file of that name exists; False (and
    nothing changed) if one does. Never replaces a file. With hard links this is one atomic link(2), which
    fails if the name is taken; without them the name is claimed with O_EXCL and `tmp` renamed over that
    empty claim (a crash in between leaves an empty file under the name, never a half-written one)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except (OSError, AttributeError) as e:  # AttributeError: a platform without os.link
        if isinstance(e, OSError) and e.errno not in _NO_HARD_LINKS:
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return False
        os.replace(tmp, path)  # over our own empty claim only
        return True
    tmp.unlink(missing_ok=True)
    return True


def create_exclusive(path: Path, data: bytes) -> None:
    """Create `path` holding `data`, durably, only if no file of that name exists (`place_new`). An existing
    `path` raises CommitError and is left untouched: it is never replaced."""
    tmp = temp_name(path)
    try:
        write_new(tmp, data)
        if not place_new(tmp, path):
            raise CommitError(
                f"{path.parent.name}/{path.name} already exists and is never replaced; another program wrote to the "
                "bank without its lock, nothing was committed; run the command again"
            )
    except OSError as e:
        raise _write_failed(path, e) from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
