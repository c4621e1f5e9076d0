"""tools/vae_reconstruction.py: the gate on a demo VAE before the UNet phase. It reads the folders the trainer
writes, measures reconstructions against the renders they came from, and its recognition numbers are the
evaluator's on exactly those images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tools import train_demo_model as T
from tools import vae_reconstruction as V


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    import torch

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("run") / "vae"
    T.save_vae(T.build_untrained(0, 2).vae, folder, {"world": 2, "vae_steps": 0, "final_vae_loss": float("nan")})
    return folder


def test_reads_an_out_vae_folder_and_measures_every_individual(vae_folder):
    from cns_cli.demo.individuals import individuals_of, reference_renders

    vae, world = V.load(vae_folder)
    assert world == 2 and vae.config.latent_channels == 8
    report, pairs = V.measure(vae, world, n=2)
    assert set(report["individuals"]) == set(individuals_of(2))
    x, y = pairs["rex"]
    np.testing.assert_array_equal(x, reference_renders("rex", 2, seed=V.FRESH_SEED, world=2))
    assert y.shape == x.shape and y.dtype == np.uint8
    assert report["individuals"]["rex"]["mean_abs_error"] == pytest.approx(np.abs(y.astype(float) - x).mean())
    assert report["individuals"]["rex"]["mean_abs_error"] > 20  # an untrained VAE gives back noise


def test_a_lossless_vae_scores_like_the_renders(vae_folder, monkeypatch, tmp_path):
    """With reconstruction replaced by the identity, the error is 0 and recognition equals the renders' own:
    the numbers compare the two image sets and nothing else."""
    from cns_cli.demo.evaluator import Evaluator

    ev = Evaluator.load()  # the packaged evaluator, of the bundled model's world
    vae, _ = V.load(vae_folder)
    monkeypatch.setattr(V, "reconstruct", lambda vae, images, batch=64: images.copy())
    report, pairs = V.measure(vae, ev.world, n=2, evaluator=ev)
    for r in report["individuals"].values():
        assert r["mean_abs_error"] == 0 and r["recognised"] == r["recognised_renders"]
    assert report["generic"]["reconstructions"] == report["generic"]["renders"]
    V.sheet(pairs, tmp_path / "sheet.png")
    from PIL import Image

    w, h = Image.open(tmp_path / "sheet.png").size
    # 12 individuals in two columns of 6 blocks; a block: 2 renders (n) above their 2 reconstructions; 2x scale
    assert (w, h) == (2 * (2 * 64 + 8 + 2 * 64), 2 * 6 * 2 * 64)


def test_the_command_writes_its_report(vae_folder, tmp_path):
    assert V.main([str(vae_folder), "--n", "1", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["world"] == 2 and len(report["individuals"]) == 12 and "min_recognised" not in report
    with pytest.raises(SystemExit, match="neither an OUT/vae folder"):
        V.main([str(tmp_path)])
