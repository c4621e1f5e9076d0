"""Crash-safe file writes: write a sibling temp file, fsync it, rename it over the target, fsync the folder.

A reader sees either the old file or the new one, never a half-written one, and an existing file is never
truncated in place (a file we mmapped earlier keeps its bytes; cf. safetensors #764). Disk-full and other
OS errors become CommitError with the temp file removed.
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


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CommitError(f"disk full while writing {path.name}; free some space and run the command again") from None
        raise CommitError(f"could not write {path}: {e.strerror or e}; check the permissions and free space") from None
    fsync_dir(path.parent)
