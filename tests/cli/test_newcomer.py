"""What a new user broke (issue 18), command by command: pipes, Ctrl-C, exit codes before any model load,
results on stdout, progress without a terminal, and the CLI's rough edges. Each test reproduces a report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cns_cli.output import BROKEN_PIPE_EXIT
from cns_cli.reporting import PlainReporter

from tests.bank import bankfactory as bf
from tests.clitools import cns, one_line_error

FAST = ["--steps", "3", "--score-steps", "1"]
CLI = [sys.executable, "-m", "cns_cli.cli"]  # what the installed `cns` script runs: cli.run()


@pytest.fixture(scope="module")
def dog_bank(dog_bank_readonly) -> Path:
    return dog_bank_readonly


# -- 4. pipes --------------------------------------------------------------------------------------------


def _closed_stdout_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the real CLI with a stdout whose reader is already gone (what `| head -0` would leave)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([*CLI, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=cwd,
                              timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.close(write_end)
    return proc


def test_inspect_into_a_closed_pipe_ends_quietly(tmp_path):
    bank = bf.bank_with(tmp_path / "b.cnsbank", ["dog", "hat"])
    proc = _closed_stdout_run(["--bank", str(bank), "inspect"], tmp_path)
    assert proc.returncode == BROKEN_PIPE_EXIT, proc.stderr
    assert proc.stderr == ""


def test_generate_into_a_closed_pipe_ends_quietly_after_a_whole_image(dog_bank, tmp_path):
    out = tmp_path / "out"
    proc = _closed_stdout_run(["--bank", str(dog_bank), "generate", "<dog> on a beach", "-n", "3", "--steps", "2",
                               "--out", str(out)], tmp_path)
    assert proc.returncode == BROKEN_PIPE_EXIT, proc.stderr
    assert "error" not in proc.stderr and "Traceback" not in proc.stderr
    from PIL import Image

    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 1  # the first path could not be printed: the command stopped there
    Image.open(pngs[0]).load()  # whole, not half-written
    assert [p.name for p in out.iterdir()] == [pngs[0].name]  # no temp file left either


# -- 6. Ctrl-C during one long native operation ------------------------------------------------------


def test_ctrl_c_ends_the_process_during_one_long_torch_call(tmp_path):
    """Python defers SIGINT until a native call returns; the watcher must end the process anyway. The call
    here (one matrix_power of 10 squarings of 3000x3000 on one thread) takes far longer than the wait."""
    script = (
        "import sys, torch\n"
        "from cns_cli import interrupt\n"
        "torch.set_num_threads(1)\n"
        "a = torch.rand(3000, 3000) / 3000\n"
        "assert interrupt.install(grace_s=1.0)\n"
        "print('ready', flush=True)\n"
        "torch.linalg.matrix_power(a, 1024)\n"
        "print('finished', flush=True)\n"
    )
    # As from a terminal: a suite started in the background (`pytest &`, nohup) ignores SIGINT, and children inherit it
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # inside the long call by now
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=8)
    finally:
        proc.kill()
    assert time.monotonic() - t0 < 6
    assert proc.returncode == 130
    assert "finished" not in out and "interrupted" in err


# -- 5. bad input is refused before any model load ---------------------------------------------------


def test_learn_into_a_bank_path_that_is_a_file(dog_photos, tmp_path, no_model_load):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = one_line_error(cns("--bank", target, "learn", "dog", dog_photos, "--class", "dog"))
    assert "is a file" in line
    assert target.read_text() == "mine"


def test_learn_into_a_folder_of_other_things(dog_photos, tmp_path, no_model_load):
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    line = one_line_error(cns("--bank", folder, "learn", "dog", dog_photos, "--class", "dog"))
    assert "not a cns bank" in line
    assert [p.name for p in folder.iterdir()] == ["a.jpg"]


@pytest.mark.parametrize("flags, words", [
    (["--seed", str(2**64)], "--seed"),
    (["--resolution", "33"], "multiple of 8"),
])
def test_learn_numbers_a_model_cannot_use(dog_bank, dog_photos, no_model_load, flags, words):
    assert words in one_line_error(cns("--bank", dog_bank, "learn", "cat", dog_photos, "--class", "cat", *flags))


def test_a_base_other_than_the_banks_is_an_error(dog_bank, dog_photos, no_model_load):
    line = one_line_error(cns("--bank", dog_bank, "learn", "cat", dog_photos, "--class", "cat", "--base", "demo"))
    assert "this bank is built on" in line and "--bank NEW_PATH" in line


def test_the_banks_own_base_may_be_repeated(dog_bank, dog_photos, tiny_base):
    r = cns("--bank", dog_bank, "learn", "cat", dog_photos, "--class", "cat", "--base", tiny_base, "--dry-run")
    assert r.exit_code == 0, r.stderr


# -- 9. results on stdout, progress without a terminal -------------------------------------------------


def test_forget_and_undo_print_their_result_on_stdout(tmp_path):
    bank = bf.bank_with(tmp_path / "b.cnsbank", ["dog", "hat"])
    r = cns("--bank", bank, "forget", "hat")
    assert r.exit_code == 0 and r.stdout.startswith("forgot hat; now at revision 3")
    r = cns("--bank", bank, "undo")
    assert r.exit_code == 0 and r.stdout.startswith("undid revision 3; now at revision 4")


def test_learn_with_json_reports_progress_on_stderr(tiny_base, dog_photos, tmp_path):
    r = cns("--bank", tmp_path / "b.cnsbank", "learn", "dog", dog_photos, "--class", "dog", "--base", tiny_base,
            "--steps", "20", "--score-steps", "1", "--json")
    assert r.exit_code == 0, r.stderr
    json.loads(r.stdout)  # stdout is still exactly one document
    progress = [line for line in r.stderr.splitlines() if line.startswith("training ")]
    assert progress[0].startswith("training 2/20 loss") and progress[-1].startswith("training 20/20 loss")
    assert len(progress) == 10


def test_plain_progress_is_one_line_per_tenth_or_per_minute():
    clock = iter([0.0] + [float(t) for t in range(1, 1000)])
    lines: list[str] = []
    rep = PlainReporter(every_s=60, clock=lambda: next(clock))
    import cns_cli.output as output

    original, output.info = output.info, lines.append
    try:
        rep.start(1000)
        for done in range(1, 301):  # one second per step: the tenths come every 100 s, the minute first
            rep.step(done, 0.5)
    finally:
        output.info = original
    assert [line.split()[1] for line in lines] == ["60/1000", "100/1000", "160/1000", "200/1000", "260/1000", "300/1000"]


# -- 11. rough edges -----------------------------------------------------------------------------------


def test_bank_may_come_after_the_command(tmp_path):
    bank = bf.bank_with(tmp_path / "b.cnsbank", ["dog"])
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    r = cns("inspect", "--json", "--bank", bank)
    assert r.exit_code == 0, r.stderr
    assert [c["name"] for c in json.loads(r.stdout)["concepts"]] == ["dog"]
    r = cns("--bank", elsewhere / "none", "forget", "dog", "--bank", bank)  # the one after the command wins
    assert r.exit_code == 0, r.stderr


def test_learn_without_class_warns_and_says_why(dog_bank, dog_photos):
    r = cns("--bank", dog_bank, "learn", "zoom", dog_photos, "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "no --class given, so the class word is 'zoom'" in r.stderr and "pass --class WORD" in r.stderr
    assert "no --class" not in cns("--bank", dog_bank, "learn", "zoom", dog_photos, "--class", "car", "--dry-run").stderr


def test_trained_parameters_are_counted_one_way(dog_bank):
    r = cns("--bank", dog_bank, "inspect", "--json")
    (concept,) = json.loads(r.stdout)["concepts"]
    params = concept["parameters"]
    assert params["coefficients"] == concept["neurons"] * 4 and params["token"] == 32
    assert params["total"] == params["coefficients"] + params["token"]
    table = cns("--bank", dog_bank, "inspect").stdout
    assert f" {params['total']:,} " in table.splitlines()[-2]  # the dog row


def test_learn_reports_the_same_count_and_compares_like_with_like(tiny_base, dog_photos, tmp_path):
    bank = tmp_path / "b.cnsbank"
    r = cns("--bank", bank, "learn", "dog", dog_photos, "--class", "dog", "--base", tiny_base,
            "--steps", "20", "--score-steps", "1")
    assert r.exit_code == 0, r.stderr
    concept = json.loads(cns("--bank", bank, "inspect", "--json").stdout)["concepts"][0]
    p = concept["parameters"]
    assert f"trained      {p['total']:,} parameters ({p['coefficients']:,} neuron coefficients + {p['token']} token)" in r.stdout
    stats = concept["stats"]
    assert f"loss         {stats['first_tenth_loss']:.4f} -> {stats['final_loss']:.4f} (means of the first and last tenth" in r.stdout


def test_a_huge_photo_is_too_large_not_corrupt(tmp_path, monkeypatch):
    from PIL import Image

    from cns_cli.images import load_images

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (200, 200), (9, 9, 9)).save(folder / "huge.png")
    Image.new("RGB", (96, 96), (200, 9, 9)).save(folder / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200 x 200 is then a "decompression bomb"
    images = load_images(folder, 64, warn=False)
    (why,) = [reason for path, reason in images.skipped if path.name == "huge.png"]
    assert why.startswith("too large") and "corrupt" not in why


def test_a_300_character_name_is_not_repeated_in_full(dog_bank, dog_photos, no_model_load):
    line = one_line_error(cns("--bank", dog_bank, "learn", "a" * 300, dog_photos, "--class", "x"))
    assert "a" * 100 not in line and "300 characters" in line


def test_help_shows_no_bool_metavar():
    for command in ("learn", "generate", "export", "inspect"):
        r = cns(command, "--help")
        assert r.exit_code == 0 and "<bool>" not in r.stdout and "--json" in r.stdout


def test_an_unclosed_reference_is_warned_about(dog_bank, tmp_path):
    r = cns("--bank", dog_bank, "generate", "<dog on a beach", "--steps", "1", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    assert "<dog in '<dog on a beach' has no closing '>'" in r.stderr
    assert "no closing" not in cns("--bank", dog_bank, "generate", "<dog> on a beach", "--steps", "1",
                                   "--out", tmp_path).stderr
