"""The one place output happens: results on stdout (human text or exactly one JSON document), everything
else (progress, warnings, errors) on stderr through rich.

Under a launcher (docs/distributed.md) only the main process reports: `info` and `warn` are silent on the other
ranks (they say what the main one says), and errors reach the user once through distributed.DistributedError.

A closed stdout (`cns generate ... | head -1`) surfaces as BrokenPipeError from every writer here, rich's
included, so the CLI ends the command in one place (cli._handled) the way Unix tools do.
"""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache

from . import distributed

# What a shell reports for a process ended by SIGPIPE (128 + 13): the status of `yes | head -1`'s `yes`.
BROKEN_PIPE_EXIT = 141
STDOUT_CLOSED = "stdout is closed (`>&-`), so no result could be printed; redirect it instead (`>/dev/null` discards it)"


def _console(stderr: bool):
    from rich.console import Console

    class _PipeAwareConsole(Console):
        def on_broken_pipe(self) -> None:  # rich's default exits 1 on its own; let the CLI decide
            raise BrokenPipeError

    return _PipeAwareConsole(stderr=stderr, highlight=False, soft_wrap=True)


@lru_cache(maxsize=1)
def err_console():
    return _console(stderr=True)


@lru_cache(maxsize=1)
def out_console():
    return _console(stderr=False)


def silence_stdout() -> None:
    """After the reader of stdout went away: point fd 1 at /dev/null so that the interpreter's final flush
    does not fail a second time (the recipe of the Python docs, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout replaced by something without a file descriptor (tests)
        pass


def fill_closed_standard_fds() -> list[int]:
    """Open /dev/null on any of fds 0-2 the caller closed (`cns ... >&-`, `2>&-`, `<&-`), so that no file cns opens
    later gets one of these numbers and a stray print lands in it (a bank object, an image). Returns the closed
    ones; a closed stdout (1) the CLI refuses, since its results would go nowhere. A stdout closed *later* by its
    reader is a broken pipe instead (exit 141)."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # EBADF: not open
            closed.append(fd)
    for fd in closed:  # lowest free number first, so os.open lands on exactly this fd
        if os.open(os.devnull, os.O_RDWR) != fd:
            break
    for fd, name, mode in ((0, "stdin", "r"), (2, "stderr", "w")):  # Python set these to None at startup
        if fd in closed and getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))
    return closed


def emit_json(doc) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def emit_jsonl(doc) -> None:
    sys.stdout.write(json.dumps(doc, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def info(msg: str) -> None:
    if distributed.is_main():
        err_console().print(msg)


def warn(msg: str) -> None:
    from rich.markup import escape  # a warning quotes the user's text, which may hold "[/b]": print it as it is

    if distributed.is_main():
        err_console().print(f"[yellow]warning:[/yellow] {escape(msg)}")


def error(msg: str) -> None:
    from rich.markup import escape

    err_console().print(f"[bold red]error:[/bold red] {escape(msg)}")


def human_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}"
