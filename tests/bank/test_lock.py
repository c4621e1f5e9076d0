"""The writer lock: a second writer is refused with the holder's pid; a killed holder never blocks the bank."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys

import pytest

import bankfactory as bf
from cns_cli.bank import Bank
from cns_cli.bank.history import forget, undo
from cns_cli.bank.verify import verify
from cns_cli.errors import BankLockedError

HOLD = """
import sys, time
from cns_cli.bank import Bank
bank = Bank.open(sys.argv[1])
with bank.transaction() as tx:
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(bank):
    proc = bf.spawn_python(HOLD, str(bank.root))
    try:
        bf.wait_for_line(proc, "ready")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_second_writer_refused_then_stale_lock_taken_over(bank, holder, unchanged):
    pid = holder.pid
    check = unchanged(bank.root)
    assert json.loads((bank.root / "lock").read_text()) == {"pid": pid, "host": socket.gethostname()}

    with pytest.raises(BankLockedError, match=rf"^bank is locked by pid {pid}; wait for it to finish"):
        with bank.transaction():
            pytest.fail("entered a transaction while another process holds the lock")
    with pytest.raises(BankLockedError, match=rf"locked by pid {pid}\b"):
        forget(bank, "concept-0")
    with pytest.raises(BankLockedError, match=rf"locked by pid {pid}\b"):
        undo(bank)
    # readers never take the lock
    assert Bank.open(bank.root).head().number == 2
    assert verify(bank).ok
    check()
    # the refused writer did not disturb the holder's record
    assert json.loads((bank.root / "lock").read_text())["pid"] == pid

    dead = bf.kill9(holder)
    with bank.transaction() as tx:
        assert tx.stale_pid == dead
        assert json.loads((bank.root / "lock").read_text())["pid"] == os.getpid()
    assert (bank.root / "lock").read_bytes() == b""
    rev = forget(bank, "concept-0")  # and writing works again
    assert rev.number == 3 and Bank.open(bank.root).head_number() == 3 and verify(bank).ok


def test_cleanly_finished_writer_leaves_no_stale_pid(bank):
    script = "import sys\nimport bankfactory as bf\nfrom cns_cli.bank import Bank\nbf.learn(Bank.open(sys.argv[1]), 'child', seed=9)\n"
    proc = bf.spawn_python(script, str(bank.root))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert (bank.root / "lock").read_bytes() == b""
    with bank.transaction() as tx:
        assert tx.stale_pid is None and tx.parent.number == 3


def test_same_process_cannot_nest_transactions(bank, unchanged):
    check = unchanged(bank.root)
    with bank.transaction():
        with pytest.raises(BankLockedError, match=rf"locked by pid {os.getpid()}\b"):
            with bank.transaction():
                pass
    check()


def _hold_flock(root, content: bytes) -> int:
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.pwrite(fd, content, 0)
    return fd


def test_holder_on_another_host_is_named(bank):
    fd = _hold_flock(bank.root, json.dumps({"pid": 4242, "host": "build-box-7"}).encode())
    try:
        with pytest.raises(BankLockedError, match=r"locked by pid 4242 on build-box-7;"):
            with bank.transaction():
                pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("content", [b"", b"garbage", b'{"pid": "12"}', b"[1, 2]"])
def test_holder_without_a_readable_pid(bank, content):
    fd = _hold_flock(bank.root, content)
    try:
        with pytest.raises(BankLockedError, match=r"^bank is locked by another process;"):
            with bank.transaction():
                pass
    finally:
        os.close(fd)


def test_leftover_lock_file_of_a_dead_process(bank):
    # A lock file naming a pid that no longer exists, with no flock held: the writer proceeds and says so.
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = int(proc.stdout)
    (bank.root / "lock").write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with bank.transaction() as tx:
        assert tx.stale_pid == dead


@pytest.mark.parametrize("content", [b"garbage", b"", b'{"pid": null}'])
def test_unreadable_unheld_lock_file_is_ignored(bank, content):
    (bank.root / "lock").write_bytes(content)
    with bank.transaction() as tx:
        assert tx.stale_pid is None


def test_live_unlocked_pid_is_not_stale(bank):
    # our own pid in the file (e.g. a previous transaction of this process that was not cleaned up)
    (bank.root / "lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with bank.transaction() as tx:
        assert tx.stale_pid is None
