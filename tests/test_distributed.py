"""cns_cli/distributed.py without a launcher: the pure sharding, the identities of a world of one (which import
nothing), and how a failure is shared and shown (the environment of a rank faked). The real 2-process runs are in
test_distributed_launch.py."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cns_cli import distributed as dist
from cns_cli import output
from cns_cli.errors import INTERNAL_ERROR_EXIT, UsageError
from cns_cli.generate_units import Unit, run_units, units_of

from tests.clitools import GROUP_STARTED, cns, fresh_python, one_line_error


def as_rank(monkeypatch, rank: int, size: int = 2) -> None:
    """This process's environment as a launcher sets it for `rank` of `size` (no group is joined)."""
    for key, value in (("RANK", rank), ("WORLD_SIZE", size), ("LOCAL_RANK", rank), ("LOCAL_WORLD_SIZE", size)):
        monkeypatch.setenv(key, str(value))


# -- sharding ----------------------------------------------------------------------------------------------------


@given(st.integers(0, 300), st.integers(1, 40))
def test_shard_gives_every_unit_to_exactly_one_rank_round_by_round(n, size):
    owners = [r for unit in range(n) for r in range(size) if unit in dist.shard(n, r, size)]
    assert len(owners) == n  # each unit once
    assert sorted(u for r in range(size) for u in dist.shard(n, r, size)) == list(range(n))
    assert owners == [unit % size for unit in range(n)]  # round r = units r*size .. r*size+size-1, in rank order


@given(st.integers(0, 300), st.integers(1, 40))
def test_split_is_contiguous_balanced_and_in_rank_order(n, size):
    slices = [dist.split(n, r, size) for r in range(size)]
    assert [i for s in slices for i in s] == list(range(n))
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    assert all(s.step == 1 for s in slices)


def test_units_are_the_one_process_calls():
    assert units_of(2, 3, 2, seed=5) == [Unit(0, (5, 6), 0), Unit(0, (7,), 2), Unit(1, (5, 6), 3), Unit(1, (7,), 5)]
    assert units_of(0, 3, 1, 0) == []


# -- a world of one ------------------------------------------------------------------------------------------------


def test_in_one_process_every_collective_is_an_identity_and_imports_nothing():
    code = ("import json, sys\n"
            "from cns_cli import distributed as d\n"
            "out = [d.launched(), d.rank(), d.size(), d.is_main(), d.broadcast({'a': 1}), d.all_gather(3), d.gather(4),\n"
            "       d.together(lambda x: x + 1, 1), d.on_main(lambda: 'main'), d.in_turn(lambda: 'turn'), d.barrier(),\n"
            "       d.device_of('cuda'), d.start().size]\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'accelerate', 'diffusers'))\n"
            "print(json.dumps([out, heavy]))")
    for env in ({}, {"WORLD_SIZE": "1", "RANK": "0"}):
        out, heavy = fresh_python(code, env, timeout=60)
        assert out == [False, 0, 1, True, {"a": 1}, [3], [4], 2, "main", "turn", None, "cuda", 1]
        assert heavy == []


def test_a_one_process_generate_joins_no_process_group(dog_bank_readonly, tmp_path):
    """A single-process run draws exactly as before: no process group, no PartialState (diffusers itself may
    import accelerate, so the test is that neither is started)."""
    code = ("import json, sys\n"
            "from cns_cli.generate import GenerateConfig, generate\n"
            f"recs = generate({str(dog_bank_readonly)!r}, ['<dog>'], {str(tmp_path)!r}, GenerateConfig(steps=1))\n"
            + GROUP_STARTED + "print(json.dumps([len(recs), *started]))")
    assert fresh_python(code) == [1, False, False]


def test_the_timeout_comes_from_the_flag_then_the_environment(monkeypatch):
    monkeypatch.delenv(dist.TIMEOUT_ENV, raising=False)
    assert dist.timeout_s() == dist.DEFAULT_TIMEOUT_S == 1800
    monkeypatch.setenv(dist.TIMEOUT_ENV, "90")
    assert dist.timeout_s() == 90 and dist.timeout_s(12) == 12
    for bad in ("soon", "0", "-5", "nan"):
        monkeypatch.setenv(dist.TIMEOUT_ENV, bad)
        with pytest.raises(dist.DistributedError, match="CNS_DIST_TIMEOUT=.* is not a positive number of seconds"):
            dist.timeout_s()


# -- failures: shared, shown once ------------------------------------------------------------------------------------


def test_a_failure_carries_the_message_and_exit_code_cns_would_give_it(monkeypatch):
    as_rank(monkeypatch, 1)
    assert dist.attempt(lambda: 7) == (7, None)
    _, f = dist.attempt(lambda: (_ for _ in ()).throw(UsageError("--steps must be at least 1")))
    assert f == dist.Failure(1, "--steps must be at least 1", 2)
    _, f = dist.attempt(lambda: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only", "/out/x.png")))
    assert f.exit_code == 2 and f.message.startswith("cannot use /out/x.png: the file system is read-only")
    _, f = dist.attempt(lambda: {}["key"])
    assert f.exit_code == INTERNAL_ERROR_EXIT and f.message.startswith("internal error: KeyError")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C and SIGTERM unwind as always
        dist.attempt(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))


@pytest.mark.parametrize("me", [0, 1])
def test_every_rank_raises_the_first_failure_and_only_the_main_process_prints_it(monkeypatch, me):
    as_rank(monkeypatch, me, size=3)
    dist.raise_failures([None, None, None])  # nobody failed
    one = dist.Failure(1, "no bank at x.cnsbank", 2)
    with pytest.raises(dist.DistributedError) as e:
        dist.raise_failures([None, one, dist.Failure(2, "disk full", 2)])
    assert str(e.value) == "[rank 1] no bank at x.cnsbank" and e.value.exit_code == 2 and e.value.quiet == (me != 0)
    alike = [dist.Failure(r, "--steps must be at least 1", 2) for r in range(3)]
    with pytest.raises(dist.DistributedError, match=r"^--steps must be at least 1$"):
        dist.raise_failures(alike)  # the same mistake on every rank: said once, without a rank
    with pytest.raises(dist.DistributedError, match=r"^stdin is not UTF-8$") as e:
        dist.raise_failures([dist.Failure(0, "stdin is not UTF-8", 2)], name_rank=False)  # on_main's
    internal = dist.Failure(2, "internal error: KeyError: 'x'", INTERNAL_ERROR_EXIT)
    with pytest.raises(dist.DistributedError) as e:
        dist.raise_failures([None, None, internal])
    assert e.value.exit_code == INTERNAL_ERROR_EXIT


def test_under_a_launcher_only_the_main_process_reports(monkeypatch, capsys):
    for me in (1, 0):
        as_rank(monkeypatch, me)
        output.info(f"phase of rank {me}")
        output.warn(f"warning of rank {me}")
    err = capsys.readouterr().err
    assert "rank 1" not in err and "phase of rank 0" in err and "warning of rank 0" in err


@pytest.mark.parametrize("me", [0, 1])
def test_a_command_not_built_for_processes_refuses_a_launcher_once(tmp_path, me):
    env = {"RANK": str(me), "WORLD_SIZE": "2", "LOCAL_RANK": str(me), "LOCAL_WORLD_SIZE": "2"}
    r = cns("--bank", tmp_path / "b.cnsbank", "log", env=env)
    if me == 0:
        assert "`cns log` runs in one process only" in one_line_error(r)
    else:
        assert r.exit_code == 2 and r.stderr == ""  # the main process says it


def test_usage_errors_are_said_once_under_a_launcher():
    r = cns("generate", "x", "--steps", "many", env={"RANK": "1", "WORLD_SIZE": "2"})
    assert r.exit_code == 2 and r.stderr == ""
    r = cns("generate", "x", "--steps", "many", env={"RANK": "0", "WORLD_SIZE": "2"})
    assert "--steps expects a whole number" in one_line_error(r)


@pytest.mark.parametrize("me", [0, 1])
def test_an_error_of_one_rank_alone_names_it(monkeypatch, me):
    """An error raised outside a shared step (so possibly on one rank only) is printed by its rank, named."""
    import typer

    from cns_cli import cli

    as_rank(monkeypatch, me)
    said = []
    monkeypatch.setattr(output, "error", said.append)

    @cli._handled
    def fails():
        raise UsageError("cannot read the prompts file")

    with pytest.raises(typer.Exit) as e:
        fails()
    assert e.value.exit_code == 2
    assert said == ["cannot read the prompts file" if me == 0 else "[rank 1] cannot read the prompts file"]


# -- run_units in one process -------------------------------------------------------------------------------------


class _Progress:
    def __init__(self):
        self.calls = []

    def call(self, first, count):
        self.calls.append((first, count))


def test_run_units_in_one_process_is_the_old_loop():
    units = units_of(2, 3, 2, 0)
    heard, drawn = [], []

    def draw(unit, emit):
        drawn.append(unit)
        for s in unit.seeds:
            emit({"prompt": unit.prompt, "seed": s})

    progress = _Progress()
    records = run_units(units, draw, None, heard.append, progress)
    assert records == heard == [{"prompt": k, "seed": s} for k in (0, 1) for s in (0, 1, 2)]
    assert drawn == units and progress.calls == [(0, 2), (2, 1), (3, 2), (5, 1)]
    # --skip-existing: a unit found on disk is not drawn, its records come in their place
    drawn.clear()
    on_disk = {units[1]: [{"prompt": 0, "seed": 2, "path": "old"}]}
    records = run_units(units, draw, on_disk.get, None, _Progress())
    assert drawn == [units[0], units[2], units[3]] and records[2] == {"prompt": 0, "seed": 2, "path": "old"}


def test_alone_makes_a_launched_rank_a_world_of_one_for_a_while(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert (dist.launched(), dist.rank(), dist.size(), dist.is_main()) == (True, 1, 2, False)
    with dist.alone():
        assert (dist.launched(), dist.rank(), dist.size(), dist.is_main()) == (False, 0, 1, True)
        assert dist.broadcast("mine") == "mine" and dist.all_gather(3) == [3]  # identities, no group needed
        with dist.alone():
            assert not dist.launched()
        assert not dist.launched()
    assert (dist.launched(), dist.rank(), dist.size()) == (True, 1, 2)


@pytest.mark.parametrize("flag, env, default, said, waited", [
    (60.0, "90", 86400.0, "--dist-timeout 60 s", 60.0),
    (None, "90", 86400.0, "CNS_DIST_TIMEOUT=90 s", 90.0),
    (None, "", 86400.0, "the default 86400 s", 86400.0),  # bench's day, not named as a flag nobody gave
    (None, "", None, "CNS_DIST_TIMEOUT=1800 s", 1800.0),
])
def test_the_group_waits_as_told_and_a_lost_rank_names_who_said_so(monkeypatch, flag, env, default, said, waited):
    joined = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv(dist.TIMEOUT_ENV, env)
    monkeypatch.setattr(dist, "_join", lambda device, seconds: joined.append(seconds) or dist.World(0, 2, 0, 2, "cpu", "gloo"))
    monkeypatch.setattr(dist, "_world", None)
    dist.start("cpu", flag, default)

    def lost():
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:1234. Check the logs")

    with pytest.raises(dist.DistributedError) as e:
        dist._collective(lost)
    assert joined == [waited]
    assert str(e.value).startswith(f"lost the other processes of this run (one ended, or one stopped answering for "
                                   f"{said}): Connection closed by peer [10.0.0.2]:1234; see the launcher's report")
    monkeypatch.setattr(dist, "_world", None)
