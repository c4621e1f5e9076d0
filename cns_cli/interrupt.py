"""Ctrl-C (and SIGTERM, the same way) that ends a command promptly even while torch runs one long native operation.

Python runs signal handlers only between bytecodes of the main thread, so a SIGINT that arrives during one
long native call (an attention or VAE decode at a runaway image size) waits until that call returns —
minutes. The interpreter's C-level handler still writes the signal number to the wakeup fd at once, so a
watcher thread learns of the Ctrl-C immediately (torch releases the GIL inside its operations). It gives
the main thread `GRACE_S` to raise KeyboardInterrupt and clean up as usual (cli._handled: message, exit
130); if the main thread is still busy after that, it ends the process with the same message and status.

SIGTERM (`kill PID`, a job scheduler's stop) is handled like Ctrl-C: `Terminated`, a KeyboardInterrupt, unwinds
the command the same way, and the exit status is 143 (128 + 15, what a shell reports for SIGTERM). A command
that must undo something when interrupted (a first `cns learn` removes the bank it created) registers it with
`undo_on_hard_exit`, so that the watcher's hard exit undoes it too and its message stays true.

Ending the process this way is safe by construction: a bank changes only by atomic renames (a kill at any
instant leaves the last good revision; tests/bank/test_crash.py kills writers with SIGKILL), and generated
images are moved into place whole.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GRACE_S = 2.0
INTERRUPTED_EXIT = 130
TERMINATED_EXIT = 143
AS_IT_WAS = "nothing was committed, the bank is as it was"
_pending_undo: list[Callable[[], str]] = []  # what the running command rolls back on a hard exit (innermost last)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt so that it unwinds the same way."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def describe(e: KeyboardInterrupt) -> str:
    """The one-line message of an interruption: what ended the command and what it left. A command that undid
    something sets `e.outcome` (a first learn's "no bank was created"); otherwise nothing was committed."""
    what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
    return f"{what}; {getattr(e, 'outcome', AS_IT_WAS)}"


def exit_code(e: KeyboardInterrupt) -> int:
    return TERMINATED_EXIT if isinstance(e, Terminated) else INTERRUPTED_EXIT


@contextmanager
def undo_on_hard_exit(undo: Callable[[], str]) -> Iterator[None]:
    """While inside, a hard exit of the watcher first runs `undo()`, which returns what it left (the message's
    second half). The main thread's own unwinding is the caller's to handle."""
    _pending_undo.append(undo)
    try:
        yield
    finally:
        _pending_undo.remove(undo)


def install(grace_s: float = GRACE_S) -> bool:
    """Start the watcher (main thread only; once per process). False where it cannot run."""
    if threading.current_thread() is not threading.main_thread() or getattr(install, "done", False):
        return False
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # set_wakeup_fd requires it: a full pipe must never block a signal
    try:
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        os.close(read_fd)
        os.close(write_fd)
        return False
    signal.signal(signal.SIGTERM, _raise_terminated)  # was: die at once, silently
    threading.Thread(target=_watch, args=(read_fd, grace_s), name="cns-interrupt", daemon=True).start()
    install.done = True
    return True


def _watch(read_fd: int, grace_s: float) -> None:
    while True:
        try:
            received = os.read(read_fd, 64)
        except OSError:
            return
        if not received:
            return
        for signum, what, status in ((signal.SIGINT, "interrupted", INTERRUPTED_EXIT),
                                     (signal.SIGTERM, "terminated (SIGTERM)", TERMINATED_EXIT)):
            if signum in received:
                time.sleep(grace_s)  # the main thread normally exits within this time and takes us with it
                _hard_exit(what, status)


def _hard_exit(what: str, status: int) -> None:
    """End the process from the watcher: undo what the command registered, say what is left, exit `status`."""
    left = AS_IT_WAS
    for undo in reversed(list(_pending_undo)):
        try:
            left = undo()
        except Exception:  # noqa: BLE001 - exiting regardless; the bank's atomic writes keep it valid
            pass
    os.write(2, f"\nerror: {what}; {left}\n".encode())
    os._exit(status)
