"""`cns generate` with and without regions on a real (tiny) bank: without a region flag nothing is installed and
the PNG is byte for byte the plain diffusers call with the bank's weights; with regions the images change, the
pipeline is left as it was, and the PNG chunks and --json records carry every region setting."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from typer.testing import CliRunner

from cns_cli.bank import Bank
from cns_cli.cli import app
from cns_cli.generate import GenerateConfig, build_pipeline, generate
from cns_cli.model import regional
from cns_cli.regions import RegionRequest

runner = CliRunner()
PROMPT = "<dog> wearing a <hat> on the beach"


@pytest.fixture(scope="module")
def bank(dog_hat_bank_readonly) -> Path:
    return dog_hat_bank_readonly


def test_without_regions_the_png_is_the_plain_call_byte_for_byte(bank, tiny_base, tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the regional sampler ran without a region flag")

    monkeypatch.setattr(regional, "regional_generate", refuse)
    rec = generate(bank, [PROMPT], tmp_path / "a", GenerateConfig(seed=3, steps=3))[0]
    assert "regions" not in rec and "-regions" not in rec["path"]
    b = Bank.open(bank)
    pipe = build_pipeline(b, b.head())
    image = pipe(rec["text"], num_inference_steps=3, guidance_scale=7.5, generator=torch.Generator().manual_seed(3)).images[0]
    info = PngInfo()  # the chunks every earlier cns wrote, in the same order; the A1111 text as A1111 writes it
    for key, value in (("prompt", PROMPT), ("text", rec["text"]), ("seed", "3"), ("steps", "3"), ("guidance", "7.5"),
                       ("revision", "2"), ("concepts", "dog,hat")):
        info.add_text(f"cns:{key}", value)
    info.add_text("parameters", f"{rec['text']}\nSteps: 3, Sampler: DDIM, CFG scale: 7.5, Seed: 3, "
                                f"Size: {image.width}x{image.height}, Model: {Path(tiny_base).name}, cns revision: 2")
    buf = io.BytesIO()
    image.save(buf, format="png", pnginfo=info)
    assert Path(rec["path"]).read_bytes() == buf.getvalue()


def test_regions_change_the_image_and_records_carry_them(bank, tmp_path):
    cfg = GenerateConfig(seed=3, steps=3)
    plain = generate(bank, [PROMPT], tmp_path / "p", cfg)[0]
    req = RegionRequest.from_flags(None, "auto", None, 0.9)
    rec = generate(bank, [PROMPT], tmp_path / "r", GenerateConfig(seed=3, steps=3, regions=req))[0]
    a, b = (np.asarray(Image.open(r["path"]), dtype=np.int16) for r in (plain, rec))
    assert np.abs(a - b).max() > 0
    want = {"layout": "auto", "strength": 0.9, "context": "dog wearing a hat on the beach",
            "regions": [{"concept": "dog", "box": [0.0, 0.0, 0.5, 1.0], "text": "a <dog> dog on the beach"},
                        {"concept": "hat", "box": [0.5, 0.0, 1.0, 1.0], "text": "a <hat> hat on the beach"}]}
    assert rec["regions"] == want
    chunks = Image.open(rec["path"]).text
    assert json.loads(chunks["cns:regions"]) == want
    assert 'Regions: dog=0,0,0.5,1 "a <dog> dog on the beach"; hat=0.5,0,1,1 "a <hat> hat on the beach"' \
        in chunks["parameters"]
    assert "Region strength: 0.9" in chunks["parameters"] and "Region layout: auto" in chunks["parameters"]
    assert rec["path"] != plain["path"]  # a regional image never replaces the plain one


def test_cli_regions_json_and_explicit_boxes(bank, tmp_path):
    r = runner.invoke(app, ["--bank", str(bank), "generate", PROMPT, "--steps", "2", "--out", str(tmp_path), "--json",
                            "--region", "<hat>=0.5,0,1,0.5", "--region", "dog=0,0.25,0.6,1",
                            "--region-prompt", "<hat>=a <hat> in the snow"])
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["regions"]["layout"] == "manual" and rec["regions"]["strength"] == 1.0
    assert [(x["concept"], x["box"], x["text"]) for x in rec["regions"]["regions"]] == [
        ("dog", [0.0, 0.25, 0.6, 1.0], "a <dog> dog on the beach"), ("hat", [0.5, 0.0, 1.0, 0.5], "a <hat> hat in the snow")]


def test_a_box_below_one_latent_cell_is_a_warning(bank, tmp_path):
    r = runner.invoke(app, ["--bank", str(bank), "generate", "<dog> on the beach", "--steps", "1", "--out", str(tmp_path),
                            "--region", "dog=0,0,0.02,1"])
    assert r.exit_code == 0, r.stderr
    assert "smaller than one latent cell" in r.stderr and Path(r.stdout.strip()).is_file()
