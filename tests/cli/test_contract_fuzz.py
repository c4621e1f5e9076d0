"""The CLI's contract, fuzzed (issue 35): whatever a user types or does to the environment, `cns` ends with
0 (done), 1 (a check found problems), 2 (one `error:` line naming the fix), 130 (interrupted) or 141 (stdout
closed) -- never a traceback, never "internal error" (101) -- and the bank still verifies afterwards, its base
model untouched.

Argument vectors are drawn from the real option table (`typer.main.get_command(app)`): for every command,
every option and argument with valid, invalid and extreme values of its type, unicode, control characters,
undecodable bytes (surrogate escapes, as Python hands them over from argv) and paths that are missing, a file,
the bank, inside the bank, the base model, too long, a symlink loop. The environment is drawn too: a write
that fails with one of the errnos a disk or a file system gives (read-only, full, quota, permissions, ...)
after N successful writes, or a Ctrl-C at that moment.

Two tests: one over every command with model loading stopped at the door (a `ModelReached` error, exit 3:
the input was accepted up to the model), one over learn / generate / export with the real tiny pipeline and
cheap values only. Seeded (derandomised) with a small budget in CI; to run it long:

    CNS_FUZZ_EXAMPLES=3000 .venv/bin/python -m pytest tests/cli/test_contract_fuzz.py -p no:warnings

A failure prints the argument vector and the fault; hypothesis shrinks it first.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cns_cli.errors import CnsError
from tests.clitools import cns

BUDGET = int(os.environ.get("CNS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=BUDGET or 150, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
FUZZ_MODEL = settings(FUZZ, max_examples=BUDGET // 4 or 40)

ALLOWED_EXITS = {0, 1, 2, 130, 141}
MODEL_REACHED_EXIT = 3


class ModelReached(CnsError):
    """Raised in place of loading a model: the command accepted its input up to that point."""

    exit_code = MODEL_REACHED_EXIT


# -- the option table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    flag: str | None  # None: a positional argument
    annotation: object
    is_flag: bool
    multiple: bool


def option_table() -> dict[str, list[Param]]:
    """Every command's parameters as the real CLI declares them (typer's type descriptors)."""
    import typer.main

    from cns_cli.cli import app

    group = typer.main.get_command(app)
    table = {}
    for name, command in group.commands.items():
        table[name] = [Param(p.name, p.opts[0] if p.param_type_name == "option" else None,
                             p.type_descriptor.annotation, bool(getattr(p, "is_flag", False)), p.multiple)
                       for p in command.params if p.name != "help"]
    return table


TABLE = option_table()

# Values a real user could type, by what they stand for. Expensive options draw only cheap valid values
# (the extreme ones are all invalid), so every example stays fast.
INTS = ["0", "1", "2", "-1", "1e23", "nan", "", "2147483648", "9223372036854775808", "abc", "\u0663", " 2", "1.5"]
CHEAP_INTS = {"steps": ["1", "2"], "n": ["1", "2"], "batch_size": ["1", "2"], "score_steps": ["1", "2"],
              "width": ["32", "64"], "height": ["32", "64"], "resolution": ["32", "64"], "concepts": ["1", "2"],
              "zero_shot_prompts": ["1", "2"], "vectors": ["1", "2"], "rank": ["1", "2"], "revision": ["0", "1", "2", "3", "99"]}
FLOATS = ["0", "0.5", "1", "7.5", "1e-3", "-1", "nan", "inf", "-inf", "1e22", "1e-320", "", "x", "1,5"]
WORDS = ["dog", "hat", "cat", "<dog>", "<dog:0.7> on a beach", "<Dog:0.7>", "<dog: 0.7>", "<lora:dog:0.7>",
         "<dog> wearing a <hat>", "a\x00b", "a\nb", "tab\there", "\udcff\udcfe", "été", "狗", "x" * 10_000, "",
         " ", "-1", "0", "1", "HEAD", "PNDM", "DDIM", "euler", "auto", "off", "1e-1", "nan", "ti,cns", "--help",
         "<dog>=a <dog:0.5> dog", "left-right", "<dog>=0,0,0.5,1", "%s%n", "../../etc", "a" * 300]
PATHS = [".cnsbank", ".cnsbank/revisions", ".cnsbank/objects", ".cnsbank/HEAD", "base", "base/unet", "missing/deeper", "afile.txt",
         "photos", "empty", "out", "", ".", "a\x00b", "n" * 300, "loop", "link-to-bank", "link-to-base", "\udcff"]


# What a user would type, by parameter name (text parameters; the rest go by type).
VALID_TEXT = {"name": ["dog", "hat", "ball", "my-cat_2"], "class_word": ["dog", "hat", "ball"],
              "prompts": ["<dog> on a beach", "<dog:0.7> on a beach", "<dog> wearing a <hat>", "a photo of a garden",
                          "-"],
              "layout": ["auto"], "region": ["<dog>=0,0,0.5,1", "<hat>=0.5,0,1,1"],
              "region_prompt": ["<dog>=a <dog:0.5> dog", "<hat>=a blue hat"], "scheduler": ["DDIM", "Euler a", "PNDM"],
              "negative": ["blurry", "ugly, <dog>"], "max_drift": ["0.1", "off", "1e-2"], "methods": ["ti,cns", "cns"],
              "concept": ["dog", "hat"], "revision": ["0", "1", "2"], "rev": ["0", "1", "2"]}
VALID_WORDS = sorted({w for words in VALID_TEXT.values() for w in words})
VALID_PATHS = [".cnsbank", "photos", "out", "base", "empty", "new.cnsbank"]
VALID_FLOATS = ["0.5", "1", "7.5", "1e-3", "0.1"]


def _value(param: Param, level: int) -> st.SearchStrategy[str]:
    """A value for `param`: level 0, one a user would type for it; 1, mostly such, sometimes junk; 2, anything."""
    kind = param.annotation
    text = None
    if isinstance(kind, type) and issubclass(kind, Enum):
        valid, junk = [m.value for m in kind], ["", "bogus", "CPU"]
    elif kind is int:
        valid, junk = CHEAP_INTS.get(param.name, ["0", "1", "2"]), INTS[3:]
    elif kind is float:
        valid, junk = VALID_FLOATS, FLOATS
    elif kind is Path or param.name in ("base", "images", "out"):
        valid, junk = (["photos"] * 6 if param.name == "images" else []) + VALID_PATHS, PATHS
    else:
        valid, junk = VALID_TEXT.get(param.name, VALID_WORDS), WORDS + VALID_WORDS + ["\x1b[31mred", "\u2028", "a\rb"]
        text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30)
    if level == 0:
        return st.sampled_from(valid)
    wild = [st.sampled_from(junk)] + ([text] if text is not None else [])
    if level == 1:
        return st.one_of(*[st.sampled_from(valid)] * 12, *wild)
    return st.one_of(st.sampled_from(valid), *wild)


# Command lines that work, one or more per command: a draw starts from one and changes a few options, so that
# deep paths (past the model load, into writes) are reached as often as the refusals at the door.
FAST = ["--steps", "2", "--score-steps", "1"]
GOOD = {"generate": [["generate", "<dog> on a beach", "--steps", "2"],
                     ["generate", "<dog:0.7> wearing a <hat>", "--steps", "2", "-n", "2", "--batch-size", "2", "--grid"],
                     ["generate", "<dog> and a <hat>", "--layout", "auto", "--steps", "2", "--json"],
                     ["generate", "-", "--steps", "2", "--out", "out"]],
        "learn": [["learn", "ball", "photos", "--class", "ball", *FAST],
                  ["learn", "dog", "photos", "--replace", *FAST, "--json"],
                  ["learn", "cat", "photos", "--bank", "new.cnsbank", "--base", "base", *FAST]],
        "export": [["export", "out"], ["export", "out", "--format", "diffusers", "--concept", "dog"],
                   ["export", "out", "--format", "pipeline"], ["export", "out", "--merged", "--revision", "1"]],
        "init": [["init", "--bank", "new.cnsbank", "--base", "base"]], "inspect": [["inspect", "--neurons"]],
        "log": [["log"]], "verify": [["verify"]], "undo": [["undo"]], "forget": [["forget", "hat"]],
        "restore": [["restore", "1"]], "relocate": [["relocate", "base"]], "demo": [["demo", "--steps", "1"]],
        "bench": [["bench", "--quick"]]}


@st.composite
def argv(draw, commands: list[str]) -> list[str]:
    """A command line: a working one with a few options changed, or (one in three) one drawn from scratch."""
    command = draw(st.sampled_from(commands))
    level = draw(st.sampled_from([0, 0, 1, 2]))  # how wild the values are (_value)
    options = [p for p in TABLE[command] if p.flag is not None]
    if command in GOOD and draw(st.integers(0, 2)):
        args = list(draw(st.sampled_from(GOOD[command])))
        for param in draw(st.lists(st.sampled_from(options), max_size=3)) if options else []:
            args += [param.flag] if param.is_flag else [param.flag, draw(_value(param, level))]
        return args
    args = [command] + {"learn": FAST, "generate": FAST[:2]}.get(command, [])  # cheap unless a draw overrides
    for param in TABLE[command]:
        if param.flag is None:
            count = draw(st.integers(1, 2)) if param.multiple or param.annotation == list[str] else 1
            if level and draw(st.integers(0, 9)) == 0:
                continue  # a missing argument
            args += [draw(_value(param, level)) for _ in range(count)]
        elif param.is_flag:
            if draw(st.booleans()):
                args.append(param.flag)
        elif draw(st.integers(0, 5)) == 0:
            args += [param.flag, draw(_value(param, level))]
    if command not in ("demo", "bench") and draw(st.booleans()):
        args += ["--bank", draw(st.sampled_from([".cnsbank"] * 12 + (PATHS if level == 2 else VALID_PATHS)))]
    return args


@st.composite
def faults(draw):
    """None, or what goes wrong at the (after+1)-th write under the sandbox: an OSError errno or a Ctrl-C."""
    if draw(st.integers(0, 2)) != 0:
        return None
    kind = draw(st.sampled_from([errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG,
                                 errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EXDEV, "ctrl-c"]))
    return kind, draw(st.integers(0, 6))


# -- the sandbox ------------------------------------------------------------------------------------------


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_base, dog_photos, hat_photos):
    """A base model of the fuzzer's own (a write into it must be refused, and must not hurt other tests), a bank
    with <dog> and <hat> on it, and photos."""
    from cns_cli.learn import LearnConfig, learn

    root = tmp_path_factory.mktemp("fuzz-world")
    base = root / "base"
    shutil.copytree(tiny_base, base)
    bank = root / "bank"
    for name, photos in (("dog", dog_photos), ("hat", hat_photos)):
        learn(bank, name, photos, class_word=name, base=str(base), config=LearnConfig(steps=2, score_steps=1))
    return {"base": base, "bank": bank, "photos": Path(dog_photos), "base_digest": _tree_digest(base)}


@contextlib.contextmanager
def sandbox(world):
    """A fresh working directory holding a copy of the bank and the path pool; the base is the shared one."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        here = Path(tmp)
        shutil.copytree(world["bank"], here / ".cnsbank", symlinks=True)  # the default --bank
        os.symlink(world["base"], here / "base")
        shutil.copytree(world["photos"], here / "photos")
        (here / "empty").mkdir()
        (here / "afile.txt").write_text("not a folder\n")
        os.symlink("loop", here / "loop")
        os.symlink(here / ".cnsbank", here / "link-to-bank")
        os.symlink(world["base"], here / "link-to-base")
        yield here


@contextlib.contextmanager
def failing_writes(root: Path, fault):
    """Writes under `root` succeed `after` times, then each raises the fault (an OSError, or Ctrl-C).

    Patched where Python's own writes pass: os.open / io.open with a writing mode, os.mkdir, os.replace,
    os.rename. (Rust writers such as safetensors' save_file go around it; they are simply not faulted.)"""
    if fault is None:
        yield
        return
    kind, after = fault
    count = [0]
    real = {"open": io.open, "os_open": os.open, "mkdir": os.mkdir, "replace": os.replace, "rename": os.rename}

    def hit(path) -> None:
        try:
            inside = Path(os.fsdecode(path)).absolute().is_relative_to(root)
        except (TypeError, ValueError):
            return
        if not inside:
            return
        count[0] += 1
        if count[0] > after:
            if kind == "ctrl-c":
                raise KeyboardInterrupt
            raise OSError(kind, os.strerror(kind), os.fsdecode(path))

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and not isinstance(file, int):
            hit(file)
        return real["open"](file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            hit(path)
        return real["os_open"](path, flags, *a, **k)

    def mkdir(path, *a, **k):
        hit(path)
        return real["mkdir"](path, *a, **k)

    def replace(src, dst, *a, **k):
        hit(dst)
        return real["replace"](src, dst, *a, **k)

    def rename(src, dst, *a, **k):
        hit(dst)
        return real["rename"](src, dst, *a, **k)

    patches = [(io, "open", open_), (builtins, "open", open_), (os, "open", os_open), (os, "mkdir", mkdir),
               (os, "replace", replace), (os, "rename", rename)]
    with contextlib.ExitStack() as stack:
        for owner, attr, fn in patches:
            stack.enter_context(_patched(owner, attr, fn))
        yield


@contextlib.contextmanager
def _patched(owner, attr, fn):
    old = getattr(owner, attr)
    setattr(owner, attr, fn)
    try:
        yield
    finally:
        setattr(owner, attr, old)


@contextlib.contextmanager
def model_stopped_at_the_door():
    from cns_cli.model import loading

    def reached(*a, **k):
        raise ModelReached("model reached: the input was accepted")

    with _patched(loading, "load_pipeline", reached):  # every caller looks it up in `loading` at each call
        yield


# -- the property -----------------------------------------------------------------------------------------


def check_contract(world, args: list[str], fault, stdin: bytes | None, extra_exits: set[int] = frozenset()) -> int:
    """Run one command line in a fresh sandbox, assert the contract, return its exit code."""
    with sandbox(world) as here:
        with failing_writes(here, fault):
            r = cns(*args, input=stdin, env={"HF_HUB_OFFLINE": "1", "CNS_BANK": None, "COLUMNS": "100"})
        report = f"\nargv: {args!r}\nfault: {fault!r}\nexit: {r.exit_code}\nstderr:\n{r.stderr}"
        assert r.exit_code in ALLOWED_EXITS | extra_exits, report
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, report
        if r.exit_code == 2:
            errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, report
            assert len(errors[0]) <= 400, report  # names the problem, does not echo a 10,000-character prompt
        after = cns("verify", "--bank", here / ".cnsbank", env={"HF_HUB_OFFLINE": "1"})
        assert after.exit_code == 0, report + "\nverify afterwards:\n" + after.stdout + after.stderr
    assert _tree_digest(world["base"]) == world["base_digest"], report + "\nthe base model was changed"
    return r.exit_code


STDIN = st.one_of(st.none(), st.sampled_from([b"<dog> on a beach\n", b"\xff\xfe\n", b"a\x00b\n", b"", b"\n\n"]))


@FUZZ
@given(args=argv(sorted(TABLE)), fault=faults(), stdin=STDIN)
def test_every_command_keeps_the_contract_up_to_the_model(world, args, fault, stdin):
    with model_stopped_at_the_door():
        check_contract(world, args, fault, stdin, extra_exits={MODEL_REACHED_EXIT})


@FUZZ_MODEL
@given(args=argv(["generate", "learn", "export"]), fault=faults(), stdin=STDIN)
def test_learn_generate_export_keep_the_contract_with_the_tiny_model(world, args, fault, stdin):
    check_contract(world, args, fault, stdin)
