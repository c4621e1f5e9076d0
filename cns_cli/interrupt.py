"""Ctrl-C that ends a command promptly even while torch runs one long native operation.

Python runs signal handlers only between bytecodes of the main thread, so a SIGINT that arrives during one
long native call (an attention or VAE decode at a runaway image size) waits until that call returns —
minutes. The interpreter's C-level handler still writes the signal number to the wakeup fd at once, so a
watcher thread learns of the Ctrl-C immediately (torch releases the GIL inside its operations). It gives
the main thread `GRACE_S` to raise KeyboardInterrupt and clean up as usual (cli._handled: message, exit
130); if the main thread is still busy after that, it ends the process with the same message and status.

Ending the process this way is safe by construction: a bank changes only by atomic renames (a kill at any
instant leaves the last good revision; tests/bank/test_crash.py kills writers with SIGKILL), and generated
images are moved into place whole.
"""

from __future__ import annotations

import os
import signal
import threading
import time

GRACE_S = 2.0
INTERRUPTED_EXIT = 130
MESSAGE = b"error: interrupted; nothing was committed, the bank is as it was\n"


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
        if signal.SIGINT in received:
            time.sleep(grace_s)  # the main thread normally exits within this time and takes us with it
            os.write(2, b"\n" + MESSAGE)
            os._exit(INTERRUPTED_EXIT)
