"""cns under a real launcher: 2 gloo processes on the CPU, started by torchrun and accelerate launch, against one
process. Few runs (each starts 2 interpreters and loads the model twice), all in the slow set."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clitools import cns

pytestmark = pytest.mark.slow  # launches processes end to end (docs/development.md: the quick subset)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARGS = ["-n", "3", "--batch-size", "2", "--steps", "2", "--seed", "4", "--json", "--grid"]  # 2 prompts x 2 calls
STDIN = "a <dog> on the beach\n# a comment line\na <dog> in the snow\n"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "CNS_DIST_TIMEOUT": "120"}


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(*args, cwd: Path, input: str | None = None, timeout_s: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", *map(str, args)],
                          cwd=cwd, env={**_env(), "CNS_DIST_TIMEOUT": str(timeout_s)}, input=input,
                          capture_output=True, text=True, timeout=600)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_layer_on_two_real_ranks(tmp_path):
    r = torchrun("--no-python", sys.executable, ROOT / "tests" / "launched_layer.py", tmp_path, cwd=tmp_path,
                 timeout_s=15)
    assert r.returncode == 0, r.stderr
    seen = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    for i, s in enumerate(seen):
        assert s["world"] == [i, 2, i, 2, "gloo"] and s["torch_world_size"] == 2 and s["env_rank"] == i  # really 2
        assert s["all_gather"] == [{"rank": 0}, {"rank": 1}]
        assert s["broadcast"] == "from rank 0" and s["on_main"] == "read by rank 0"
        assert s["mean"] == [[1.5, 1.5, 1.5], [[1.0]]] and s["sum"] == [[3.0, 3.0, 3.0], [[2.0]]]
        assert s["inputs_untouched"] == [float(i + 1)] * 3
        f = s["failures"]
        assert f["rank1"] == ["[rank 1] bad input on one rank", 2, i != 0]  # raised on both, printed by rank 0
        assert f["all"] == ["bad everywhere", 2, i != 0]
        assert f["internal"][0].startswith("[rank 1] internal error: KeyError") and f["internal"][1] == 101
        assert f["on_main"] == ["stdin is not UTF-8", 2, i != 0]
    assert seen[0]["gather"] == [0, 10] and seen[1]["gather"] is None
    (a0, a1), (b0, b1) = seen[0]["turn"]
    assert a1 <= b0  # rank 1 loads after rank 0 is done (same node, one after another)
    message, waited = seen[0]["timeout"]  # rank 1 stayed silent: rank 0 gave up after the timeout, with one line
    assert message.startswith("lost the other processes of this run") and "CNS_DIST_TIMEOUT=15 s" in message
    assert 14 <= waited <= 40 and "\n" not in message


@pytest.fixture(scope="module")
def one_process(dog_bank_readonly, tmp_path_factory):
    """The reference: the run in one process (in-process CLI), from its own folder, so paths read alike."""
    import torch

    cwd = tmp_path_factory.mktemp("one")
    old, threads = os.getcwd(), torch.get_num_threads()
    os.chdir(cwd)
    # The launched ranks run with OMP_NUM_THREADS=1 (_env, and torchrun's default): on the CPU the thread count
    # changes the kernels' summation order and so a few pixels by 1/255, so the reference draws with one thread too.
    torch.set_num_threads(1)
    try:
        r = cns("--bank", dog_bank_readonly, "generate", "-", "a third <dog>", *ARGS, "--out", "out", input=STDIN)
    finally:
        torch.set_num_threads(threads)
        os.chdir(old)
    assert r.exit_code == 0, r.stderr
    return cwd, r.stdout


def test_two_processes_write_and_print_what_one_does(dog_bank_readonly, one_process, tmp_path):
    """torchrun running the installed `cns` script: prompts from stdin, --json lines in order, the grid last."""
    cwd, stdout = one_process
    cns_script = BIN / "cns"
    if not cns_script.exists():
        pytest.skip("no installed `cns` script next to the interpreter")
    r = torchrun("--no-python", cns_script, "--bank", dog_bank_readonly, "generate", "-", "a third <dog>", *ARGS,
                 "--out", "out", cwd=tmp_path, input=STDIN)
    assert r.returncode == 0, r.stderr
    assert r.stdout == stdout  # same records (paths, seeds, metadata), same order, the grid's path last
    assert len(stdout.splitlines()) == 3 * 3 + 1
    assert files_in(tmp_path / "out") == files_in(cwd / "out")  # same names, byte-identical PNGs and grid
    assert "2 processes share 6 pipeline call(s)" in r.stderr and r.stderr.count("loading the base model") == 1


def test_a_rank_without_a_unit_idles_and_skip_existing_completes_a_set(dog_bank_readonly, one_process, tmp_path):
    """accelerate launch -m cns_cli: the run with one image missing (a lost node), --skip-existing on 2 ranks draws
    only that image (1 call for 2 ranks: one idles), prints the whole set and writes no -2 copy."""
    cwd, stdout = one_process
    shutil.copytree(cwd / "out", tmp_path / "out")
    lost = Path(json.loads(stdout.splitlines()[3])["path"]).name  # the second prompt's first image
    (tmp_path / "out" / lost).unlink()
    for grid in (tmp_path / "out").glob("*grid*"):
        grid.unlink()
    r = subprocess.run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                        "--main_process_port", _free_port(), "-m", "cns_cli", "--bank", str(dog_bank_readonly),
                        "generate", "-", "a third <dog>", *ARGS, "--out", "out", "--skip-existing"],
                       cwd=tmp_path, env=_env(), input=STDIN, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout == stdout
    assert files_in(tmp_path / "out") == files_in(cwd / "out")
    assert "2 processes share 6 pipeline call(s)" in r.stderr


def test_bad_input_under_a_launcher_is_one_line_and_a_failed_launch(dog_bank_readonly, tmp_path):
    r = torchrun("-m", "cns_cli", "--bank", dog_bank_readonly, "generate", "<dog>", "--revision", "7",
                 "--out", "out", cwd=tmp_path)
    assert r.returncode == 1  # torchrun's own status for any failed rank; the ranks' are in its report
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: revision 7 does not exist (revisions on disk: 0-1); `cns log` lists them"]
    assert "exitcode  : 2" in r.stderr and "/cns_cli/" not in r.stderr  # no traceback of cns itself
    assert not (tmp_path / "out").exists()
