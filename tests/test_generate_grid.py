"""`cns generate --grid` writes a contact sheet of exactly the files on disk, and the per-image progress hears
every call and step without changing a pixel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cns_cli.generate import GenerateConfig, generate
from cns_cli.grid import GRID_TILE, LABEL_W
from cns_cli.reporting import PlainSamplingProgress, RichSamplingProgress, SamplingProgress
from cns_cli.sheet import CAPTION_H, TITLE_H

from tests.clitools import cns

PROMPTS = ["<dog> on the beach", "a <dog> in the snow"]


def _run(bank, out, *extra):
    r = cns("--bank", bank, "generate", *PROMPTS, "-n", "2", "--seed", "5", "--steps", "2", "--out", out, *extra)
    assert r.exit_code == 0, r.stderr
    return r.stdout.splitlines()


def test_grid_is_a_sheet_of_the_run_s_files(dog_bank_readonly, tmp_path):
    lines = _run(dog_bank_readonly, tmp_path, "--grid")
    images, grid = lines[:-1], Path(lines[-1])
    assert len(images) == 4 and grid.name.startswith("r1-grid-dog-on-the-beach-s5-") and grid.parent == tmp_path
    sheet = Image.open(grid)
    assert json.loads(sheet.text["cns:grid"]) == [[Path(p).name for p in images[:2]], [Path(p).name for p in images[2:]]]
    assert sheet.size == (LABEL_W + 2 * GRID_TILE, TITLE_H + 2 * (GRID_TILE + CAPTION_H))
    pixels = np.asarray(sheet.convert("RGB"))
    for i, path in enumerate(images):  # row = prompt, column = seed: each tile is its PNG, enlarged
        row, col = divmod(i, 2)
        y, x = TITLE_H + row * (GRID_TILE + CAPTION_H), LABEL_W + col * GRID_TILE
        want = np.asarray(Image.open(path).convert("RGB").resize((GRID_TILE, GRID_TILE), Image.Resampling.NEAREST))
        assert np.array_equal(pixels[y : y + GRID_TILE, x : x + GRID_TILE], want)
    label = pixels[TITLE_H : TITLE_H + GRID_TILE, :LABEL_W]
    assert (label < 128).any()  # the prompt is written in the label column


def test_grid_never_replaces_a_file_and_json_ends_with_its_path(dog_bank_readonly, tmp_path):
    first = Path(_run(dog_bank_readonly, tmp_path, "--grid")[-1])
    before = first.read_bytes()
    lines = _run(dog_bank_readonly, tmp_path, "--grid", "--json")
    records = [json.loads(line) for line in lines]
    assert all("path" in r for r in records[:-1]) and set(records[-1]) == {"grid"}
    second = Path(records[-1]["grid"])
    # the same run again: new image names (-2), so a different sheet under a different name; the first is intact
    assert second != first and first.read_bytes() == before


def test_without_grid_no_sheet_is_written(dog_bank_readonly, tmp_path):
    _run(dog_bank_readonly, tmp_path)
    assert not list(tmp_path.glob("*grid*"))


class Recorder(SamplingProgress):
    def __init__(self):
        self.events = []

    def start(self, images, steps):
        self.events.append(("start", images, steps))

    def call(self, first, count):
        self.events.append(("call", first, count))

    def step(self, done, total):
        self.events.append(("step", done, total))

    def stop(self):
        self.events.append(("stop",))


def test_progress_hears_every_call_and_step_and_changes_no_pixel(dog_bank_readonly, tmp_path):
    config = GenerateConfig(n=3, seed=2, steps=3, batch_size=2)
    quiet = generate(dog_bank_readonly, PROMPTS[:1], tmp_path / "a", config)
    rec = Recorder()
    heard = generate(dog_bank_readonly, PROMPTS[:1], tmp_path / "b", config, progress=rec)
    steps = [("step", i, 3) for i in (1, 2, 3)]
    assert rec.events == [("start", 3, 3), ("call", 0, 2), *steps, ("call", 2, 1), *steps, ("stop",)]
    for a, b in zip(quiet, heard):
        assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()


def test_plain_progress_speaks_only_in_long_runs(capsys):
    now = [0.0]
    p = PlainSamplingProgress(every_s=30, clock=lambda: now[0])
    p.start(4, 20)
    p.call(0, 1)
    for i in range(1, 21):
        now[0] += 1
        p.step(i, 20)
    assert capsys.readouterr().err == ""  # 20 s: nothing
    p.call(2, 2)
    for i in range(1, 21):
        now[0] += 1
        p.step(i, 20)
    assert capsys.readouterr().err.splitlines() == ["generating images 3-4/4, step 10/20"]  # at 30 s


def test_rich_progress_leaves_stdout_alone():
    """Paths go to stdout (maybe a pipe) while the bar runs on a terminal's stderr: rich must not take stdout over."""
    stdout = sys.stdout
    p = RichSamplingProgress()
    p.start(2, 5)
    try:
        assert sys.stdout is stdout
        p.call(1, 1)
        p.step(5, 5)
    finally:
        p.stop()
