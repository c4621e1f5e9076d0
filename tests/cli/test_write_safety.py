"""Issue 35, writes: no command writes over what cns reads (the bank, its base model, the base's --config
folder), and what the environment refuses (read-only disk, disk full, no permission, …) is one line and exit 2,
never exit 101 or a damaged bank."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.clitools import cns, one_line_error


def _tree_digest(folder: Path) -> str:
    """One sha256 over every file's relative path and bytes: equal digests = the folder is unchanged (but for
    the bank's lock file, which a writer creates and empties again: it is no bank state)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p == folder / "lock" and p.read_bytes() == b"":
            continue
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def own_base_bank(tiny_base, dog_photos, tmp_path_factory):
    """(bank, base): a bank with <dog> on its own copy of the tiny base, `./tiny-sd-copy` of the issue."""
    from cns_cli.learn import LearnConfig, learn

    root = tmp_path_factory.mktemp("own-base")
    base = root / "tiny-sd-copy"
    shutil.copytree(tiny_base, base)
    bank = root / "base1.cnsbank"
    learn(bank, "dog", dog_photos, class_word="dog", base=str(base), config=LearnConfig(steps=2, score_steps=1))
    return bank, base


def test_export_pipeline_over_the_banks_own_base_is_refused_and_the_base_kept(own_base_bank):
    bank, base = own_base_bank
    before = _tree_digest(base)
    r = cns("--bank", bank, "export", base, "--format", "pipeline", "--force")
    line = one_line_error(r)
    assert "base model" in line and str(base.resolve()) in line, line
    assert _tree_digest(base) == before
    assert cns("--bank", bank, "verify").exit_code == 0


@pytest.mark.parametrize("where", ["bank", "bank/revisions", "bank/objects/new", "base/unet"])
def test_export_into_the_bank_or_its_base_is_refused(own_base_bank, where):
    bank, base = own_base_bank
    out = {"bank": bank, "base": base}[where.split("/")[0]].joinpath(*where.split("/")[1:])
    before = _tree_digest(bank), _tree_digest(base)
    line = one_line_error(cns("--bank", bank, "export", out, "--force"))
    assert ("lies inside" if "/" in where else " is ") in line, line
    assert (_tree_digest(bank), _tree_digest(base)) == before


def test_export_into_a_folder_holding_the_bank_is_refused_with_force(own_base_bank):
    """--force may replace what OUT holds; a folder that holds the bank (or the base) is never such a folder."""
    bank, base = own_base_bank
    line = one_line_error(cns("--bank", bank, "export", bank.parent, "--force", "--format", "pipeline"))
    assert "contains" in line, line


def test_a_symlink_to_the_base_does_not_hide_it(own_base_bank, tmp_path):
    bank, base = own_base_bank
    link = tmp_path / "looks-new"
    link.symlink_to(base, target_is_directory=True)
    before = _tree_digest(base)
    line = one_line_error(cns("--bank", bank, "export", link, "--format", "pipeline", "--force"))
    assert str(base.resolve()) in line, line
    assert _tree_digest(base) == before


@pytest.mark.parametrize("where", ["bank/revisions", "bank", "base"])
def test_generate_into_the_bank_or_its_base_is_refused(own_base_bank, where, no_model_load):
    bank, base = own_base_bank
    out = {"bank": bank, "base": base}[where.split("/")[0]].joinpath(*where.split("/")[1:])
    before = _tree_digest(bank), _tree_digest(base)
    one_line_error(cns("--bank", bank, "generate", "<dog>", "--steps", "1", "--out", out))
    assert (_tree_digest(bank), _tree_digest(base)) == before


def test_generate_next_to_the_bank_is_fine(own_base_bank):
    """`--out .` beside ./.cnsbank only adds new files (protected.py): allowed, and the bank is untouched."""
    bank, _ = own_base_bank
    before = _tree_digest(bank)
    r = cns("--bank", bank, "generate", "<dog>", "--steps", "1", "--out", bank.parent)
    assert r.exit_code == 0, r.stderr
    assert Path(r.stdout.strip()).parent == bank.parent
    assert _tree_digest(bank) == before


def test_a_new_bank_inside_its_base_model_folder_is_refused(tiny_base, dog_photos, tmp_path, no_model_load):
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    before = _tree_digest(base)
    line = one_line_error(cns("--bank", base / ".cnsbank", "learn", "dog", dog_photos, "--class", "dog", "--base", base))
    assert "lies inside the base model" in line, line
    one_line_error(cns("--bank", base / "b.cnsbank", "init", "--base", base))
    assert _tree_digest(base) == before


def test_demo_out_inside_its_base_model_is_refused(tiny_demo_base, tmp_path):
    base = tmp_path / "demo-base"
    shutil.copytree(tiny_demo_base, base)
    before = _tree_digest(base)
    line = one_line_error(cns("demo", "--base", base, "--out", base / "cns-demo", "--steps", "1"))
    assert "lies inside the base model" in line, line
    assert _tree_digest(base) == before


def test_bench_out_over_its_base_model_is_refused(tiny_demo_base, tmp_path):
    base = tmp_path / "demo-base"
    shutil.copytree(tiny_demo_base, base)
    before = _tree_digest(base)
    line = one_line_error(cns("bench", "--quick", "--base", base, "--out", base))
    assert "is the base model" in line, line
    assert _tree_digest(base) == before


# -- what the environment refuses: one line naming the path, exit 2 --------------------------------------------


@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): every write under `folder` fails with EROFS from then on, as on a read-only mount
    (the tests run as root, where chmod 555 stops nothing). Covers what cns and its libraries write with:
    os.mkdir (Path.mkdir, tempfile), os.open (bank.atomic), open/io.open (PIL, Path.write_text), renames, links."""
    import builtins
    import errno
    import io
    import os

    folders: list[Path] = []

    def refuse(path) -> None:
        if isinstance(path, int):
            return
        p = Path(os.fsdecode(path)).absolute()
        if any(p == f or f in p.parents for f in folders):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def guard(fn, *checked: int, writes=lambda *a, **k: True):
        def guarded(*args, **kwargs):
            if writes(*args, **kwargs):
                for i in checked:
                    refuse(args[i])
            return fn(*args, **kwargs)
        return guarded

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    opens_for_writing = lambda file, mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
    monkeypatch.setattr(os, "mkdir", guard(os.mkdir, 0))
    monkeypatch.setattr(os, "open", guard(os.open, 0, writes=lambda path, flags, *a, **k: bool(flags & write_flags)))
    for name in ("replace", "rename", "link", "symlink"):
        monkeypatch.setattr(os, name, guard(getattr(os, name), 1))
    monkeypatch.setattr(builtins, "open", guard(builtins.open, 0, writes=opens_for_writing))
    real_access = os.access

    def access(path, mode, *a, **k):  # access(2) reports EROFS for root too
        try:
            refuse(path) if mode & os.W_OK else None
        except OSError:
            return False
        return real_access(path, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(io, "open", guard(io.open, 0, writes=opens_for_writing))
    return lambda folder: folders.append(Path(folder).absolute())


def _names_the_path(line: str, path: str) -> None:
    assert path in line and "read-only" in line, line


def test_export_in_a_read_only_folder_is_one_line(own_base_bank, tmp_path, monkeypatch, read_only):
    bank, _ = own_base_bank
    monkeypatch.chdir(tmp_path)
    read_only(tmp_path)
    _names_the_path(one_line_error(cns("--bank", bank, "export", "exp")), "exp")


def test_demo_in_a_read_only_folder_is_one_line(tiny_demo_base, tmp_path, monkeypatch, read_only):
    monkeypatch.chdir(tmp_path)
    read_only(tmp_path)
    _names_the_path(one_line_error(cns("demo", "--base", tiny_demo_base, "--steps", "1")), "cns-demo")


def test_bench_in_a_read_only_folder_is_one_line(tiny_demo_base, tmp_path, monkeypatch, read_only):
    monkeypatch.chdir(tmp_path)
    read_only(tmp_path)
    _names_the_path(one_line_error(cns("bench", "--quick", "--base", tiny_demo_base)), "cns-bench")


@pytest.mark.parametrize("command", ["learn", "init"])
def test_a_new_bank_in_a_read_only_folder_is_refused_before_the_model_loads(tiny_base, dog_photos, tmp_path, read_only,
                                                                            no_model_load, command):
    read_only(tmp_path)
    args = ["learn", "dog", dog_photos, "--class", "dog"] if command == "learn" else ["init"]
    line = one_line_error(cns("--bank", tmp_path / "new.cnsbank", *args, "--base", tiny_base))
    assert "not writable" in line and str(tmp_path) in line, line


@pytest.fixture
def disk_full_at_lock(monkeypatch):
    """The disk fills up just as the writer lock records its holder (os.ftruncate / os.pwrite of bank/lock.py)."""
    import errno
    import os
    import types

    from cns_cli.bank import lock

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lock, "os", types.SimpleNamespace(**{**vars(os), "pwrite": full}))
    return monkeypatch


def test_disk_full_at_the_lock_is_one_line_and_the_lock_is_free_again(own_base_bank, dog_photos, disk_full_at_lock,
                                                                      tmp_path):
    bank = tmp_path / "b.cnsbank"
    shutil.copytree(own_base_bank[0], bank)  # this test writes to it
    before = _tree_digest(bank)
    for args in (["forget", "dog"], ["learn", "cat", dog_photos, "--class", "cat", "--steps", "1", "--score-steps", "1"]):
        line = one_line_error(cns("--bank", bank, *args))
        assert str(bank / "lock") in line and "no space left" in line, line
        assert _tree_digest(bank) == before
    disk_full_at_lock.undo()  # space again: the lock was let go, so the next writer gets it
    r = cns("--bank", bank, "undo")
    assert r.exit_code == 0, r.stderr
    assert cns("--bank", bank, "verify").exit_code == 0


@pytest.mark.parametrize("case", ["name too long", "under a file", "a link loop"])
def test_export_to_a_path_the_os_refuses_is_one_line(own_base_bank, tmp_path, case):
    """Real refusals of the OS (no mocking): a name over NAME_MAX, a path through a file, a link to itself."""
    bank, _ = own_base_bank
    (tmp_path / "a-file").write_text("user data\n")
    (tmp_path / "loop").symlink_to("loop")
    out = {"name too long": tmp_path / ("x" * 300), "under a file": tmp_path / "a-file" / "exp",
           "a link loop": tmp_path / "loop"}[case]
    line = one_line_error(cns("--bank", bank, "export", out))
    assert str(out if case != "under a file" else tmp_path / "a-file") in line, line
    assert (tmp_path / "a-file").read_text() == "user data\n"


# -- standard streams closed by the caller ---------------------------------------------------------------------


def _cns_in_shell(args: list, redirect: str, cwd: Path):
    """`cns ARGS REDIRECT` through sh in a fresh process (the console script's run(), as installed)."""
    import os
    import shlex
    import subprocess
    import sys

    code = "import sys; sys.argv[0] = 'cns'; from cns_cli.cli import run; run()"
    line = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-c", code, *args]) + " " + redirect
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_generate_with_stdout_closed_refuses_before_writing(dog_bank_readonly, tmp_path):
    """`cns generate … --json >&-`: no result could be printed, so nothing is drawn (it was exit 101 after one PNG)."""
    out = tmp_path / "imgs"
    r = _cns_in_shell(["--bank", dog_bank_readonly, "generate", "<dog>", "-n", "2", "--steps", "1", "--json",
                       "--out", out], ">&-", tmp_path)
    assert r.returncode == 2, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        "error: stdout is closed (`>&-`), so no result could be printed; redirect it instead (`>/dev/null` discards it)"]
    assert not out.exists()


def test_generate_with_stderr_closed_writes_whole_images(dog_bank_readonly, tmp_path):
    """`2>&-`: the results still come; stderr's progress goes to /dev/null, never into a file cns opened."""
    from PIL import Image

    out = tmp_path / "imgs"
    r = _cns_in_shell(["--bank", dog_bank_readonly, "generate", "<dog>", "-n", "2", "--steps", "1", "--json",
                       "--out", out], "2>&-", tmp_path)
    assert r.returncode == 0, r.stdout
    paths = [Path(__import__("json").loads(line)["path"]) for line in r.stdout.splitlines()]
    assert len(paths) == 2 and sorted(out.iterdir()) == sorted(paths)
    for p in paths:
        Image.open(p).verify()


# -- SIGTERM and Ctrl-C: one line, nothing committed, and a first learn leaves no bank --------------------------


def _start_cns(args: list, cwd: Path):
    """`cns ARGS` as a fresh process (the console script's run(), which installs the signal handling)."""
    import os
    import subprocess
    import sys

    import signal

    code = "import sys; sys.argv[0] = 'cns'; from cns_cli.cli import run; run()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # SIGINT as a terminal gives it: a suite started in the background (`pytest &`, nohup) ignores SIGINT, and
    # children inherit that, so Ctrl-C would never reach the command under test
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _signal_once_it_holds_the_lock(proc, bank: Path, signum) -> tuple[int, str]:
    """Wait until `proc` holds the bank's writer lock (it wrote its pid there: the bank exists and a commit is
    under way), let it get into loading or training, send `signum`; (exit status, stderr)."""
    import json
    import time

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads((bank / "lock").read_text() or "{}").get("pid") == proc.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(f"never took the lock: {proc.communicate()}")
    time.sleep(1.0)
    assert proc.poll() is None, "finished before the signal; give it more steps"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


LONG_LEARN = ["--class", "cat", "--steps", "100000", "--score-steps", "1"]


def test_sigterm_ends_a_learn_like_ctrl_c_with_143(own_base_bank, dog_photos, tmp_path):
    import signal

    bank = tmp_path / "b.cnsbank"
    shutil.copytree(own_base_bank[0], bank)
    before = _tree_digest(bank)
    status, err = _signal_once_it_holds_the_lock(_start_cns(["--bank", bank, "learn", "cat", dog_photos, *LONG_LEARN],
                                                            tmp_path), bank, signal.SIGTERM)
    assert status == 143, err
    assert _errors(err) == ["error: terminated (SIGTERM); nothing was committed, the bank is as it was"], err
    assert "Traceback" not in err
    assert _tree_digest(bank) == before


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_an_interrupted_first_learn_leaves_no_bank(tiny_base, dog_photos, tmp_path, signame):
    import signal

    bank = tmp_path / "new.cnsbank"
    status, err = _signal_once_it_holds_the_lock(
        _start_cns(["--bank", bank, "learn", "cat", dog_photos, "--base", tiny_base, *LONG_LEARN], tmp_path), bank,
        getattr(signal, signame))
    what = {"SIGINT": "interrupted", "SIGTERM": "terminated (SIGTERM)"}[signame]
    assert status == {"SIGINT": 130, "SIGTERM": 143}[signame], err
    assert _errors(err) == [f"error: {what}; nothing was committed and no bank was created at {bank}"], err
    assert not bank.exists() and sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", ["absent", "empty folder"])
def test_a_failed_first_learn_leaves_the_path_as_it_was(tiny_base, dog_photos, tmp_path, disk_full_at_lock, folder):
    """The bank is created, then the disk fills up as the lock is taken: the new bank goes again; an empty
    folder the user made for it stays."""
    bank = tmp_path / "new.cnsbank"
    if folder == "empty folder":
        bank.mkdir()
    line = one_line_error(cns("--bank", bank, "learn", "cat", dog_photos, "--base", tiny_base, *LONG_LEARN))
    assert "no space left" in line, line
    assert (sorted(bank.iterdir()) == [] if folder == "empty folder" else not bank.exists())


def test_a_failed_learn_on_an_existing_bank_keeps_it(own_base_bank, dog_photos, tmp_path, disk_full_at_lock):
    """Only a bank the failing command created is removed, never one that was there (even if it holds no concept)."""
    bank = tmp_path / "empty.cnsbank"
    r = cns("--bank", bank, "init", "--base", own_base_bank[1])
    assert r.exit_code == 0, r.stderr
    before = _tree_digest(bank)
    one_line_error(cns("--bank", bank, "learn", "cat", dog_photos, *LONG_LEARN))
    assert _tree_digest(bank) == before


def test_sigterm_during_one_long_torch_call_runs_the_registered_undo(tmp_path):
    """The watcher's hard exit (the main thread stuck in native code): SIGTERM ends with 143 too, after the undo
    the command registered (a first learn's bank removal), and says what the undo left."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "undone"
    script = (
        "import pathlib, torch\n"
        "from cns_cli import interrupt\n"
        "torch.set_num_threads(1)\n"
        "a = torch.rand(3000, 3000) / 3000\n"
        "assert interrupt.install(grace_s=1.0)\n"
        f"def undo():\n    pathlib.Path({str(marker)!r}).write_text('x')\n    return 'the new bank was removed'\n"
        "with interrupt.undo_on_hard_exit(undo):\n"
        "    print('ready', flush=True)\n"
        "    torch.linalg.matrix_power(a, 1024)\n"
        "print('finished', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # inside the long call by now
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "finished" not in out and _errors(err) == ["error: terminated (SIGTERM); the new bank was removed"], err
    assert marker.read_text() == "x"


def test_a_full_disk_under_save_pretrained_is_one_line(own_base_bank, tmp_path, monkeypatch):
    """safetensors (Rust) reports a full disk as its own SafetensorError, not an OSError: the text it gave on a
    full 1 MB tmpfs during `cns export --format pipeline` (was exit 101)."""
    import diffusers
    from safetensors import SafetensorError

    def full_disk(self, *a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "save_pretrained", full_disk)
    bank, _ = own_base_bank
    line = one_line_error(cns("--bank", bank, "export", tmp_path / "exp", "--format", "pipeline"))
    assert "no space left on the disk; free some space" in line, line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cns-export-")]  # its temp folder went again
