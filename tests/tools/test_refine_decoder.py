"""tools/refine_decoder.py: further decoder training on a finished OUT/vae moves the decoder only (the latents a UNet
learned stay exactly as they were), resumes bit for bit, and `--apply` puts the result into a pipeline trained on
that VAE — keeping its latent scale — and refuses a VAE with another encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tools.test_train_demo_model import _weights, run_stopping

pytestmark = pytest.mark.slow  # runs the trainer end to end (docs/development.md: the quick subset)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    """A --quick world-2 training run (OUT/vae and OUT/pipeline), seconds."""
    import tools.train_demo_model as T

    out = tmp_path_factory.mktemp("run")
    T.main([str(out), "--quick", "--world", "2"])
    return out


def _refine(src: Path, out: Path, *extra: str, stop_after: str | None = None, monkeypatch=None) -> None:
    """The tool in-process with tiny settings, stopped like Ctrl-C after the log line starting with `stop_after`."""
    import tools.refine_decoder as R

    argv = [str(src), str(out), "--steps", "2", "--pool", "16", "--checkpoint-every", "1", *extra]
    run_stopping(R.main, argv, stop_after, monkeypatch)


def _vae_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_refining_moves_only_the_decoder_and_records_it(quick_run, tmp_path, monkeypatch):
    import torch

    import tools.train_demo_model as T

    _refine(quick_run / "vae", tmp_path / "r", monkeypatch=monkeypatch)
    before, after = _vae_weights(quick_run / "vae"), _vae_weights(tmp_path / "r" / "vae")
    decoder = {k for k in before if k.startswith(("decoder.", "post_quant_conv."))}
    assert before.keys() == after.keys() and len(decoder) > 50
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and moved <= decoder  # the encoder and quant conv, hence every latent, bit for bit as they were
    record = json.loads((tmp_path / "r" / "vae" / "vae.json").read_text())
    (step,) = record["refinements"]
    assert step["steps"] == 2 and step["from"] == str(quick_run / "vae") and record["final_decoder_loss"] > 0
    pipe = T.build_untrained(0, 2)
    T.load_vae(pipe, tmp_path / "r" / "vae", 2)  # a valid OUT/vae again: its weights are the recorded ones
    _refine(tmp_path / "r" / "vae", tmp_path / "r2", monkeypatch=monkeypatch)  # refinements chain
    assert len(json.loads((tmp_path / "r2" / "vae" / "vae.json").read_text())["refinements"]) == 2


def test_an_interrupted_refinement_resumes_exactly(quick_run, tmp_path, monkeypatch):
    import torch

    _refine(quick_run / "vae", tmp_path / "whole", monkeypatch=monkeypatch)
    _refine(quick_run / "vae", tmp_path / "parts", stop_after="decoder step 1/2", monkeypatch=monkeypatch)
    assert not (tmp_path / "parts" / "vae").exists()
    _refine(quick_run / "vae", tmp_path / "parts", "--resume", monkeypatch=monkeypatch)
    log = (tmp_path / "parts" / "training.log").read_text()
    assert log.count("decoder step 1/2") == 1 and log.count("decoder step 2/2") == 1  # continued, not started again
    a, b = (_vae_weights(tmp_path / k / "vae") for k in ("whole", "parts"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = (_weights(tmp_path / k / "checkpoints" / "decoder-000002") for k in ("whole", "parts"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # Adam moments and RNG states too
    with pytest.raises(SystemExit, match="other settings"):
        _refine(quick_run / "vae", tmp_path / "parts", "--resume", "--lr", "1e-3", monkeypatch=monkeypatch)


def test_apply_puts_the_refined_decoder_into_the_pipeline_and_refuses_another_encoder(quick_run, tmp_path, monkeypatch):
    import shutil

    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    import tools.refine_decoder as R

    pipeline = tmp_path / "pipeline"
    shutil.copytree(quick_run / "pipeline", pipeline)
    scale = json.loads((pipeline / "vae" / "config.json").read_text())["scaling_factor"]
    _refine(quick_run / "vae", tmp_path / "r", monkeypatch=monkeypatch)
    original = {f.name: f.read_bytes() for f in (pipeline / "vae").iterdir()}

    def half_written(self, folder, **kw):
        (Path(folder) / "diffusion_pytorch_model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(AutoencoderKL, "save_pretrained", half_written)
        with pytest.raises(OSError):
            R.main([str(tmp_path / "r" / "vae"), str(pipeline), "--apply"])
    assert {f.name: f.read_bytes() for f in (pipeline / "vae").iterdir()} == original  # untouched, nothing left over
    assert sorted(p.name for p in pipeline.iterdir()) == sorted(p.name for p in (quick_run / "pipeline").iterdir())
    assert R.main([str(tmp_path / "r" / "vae"), str(pipeline), "--apply"]) == 0
    shipped, refined = _vae_weights(pipeline / "vae"), _vae_weights(tmp_path / "r" / "vae")
    assert all(torch.equal(shipped[k], refined[k]) for k in refined)
    assert json.loads((pipeline / "vae" / "config.json").read_text())["scaling_factor"] == scale != 1.0
    info = json.loads((pipeline / "training.json").read_text())
    assert info["decoder_refinements"][0]["steps"] == 2 and info["world"] == 2
    # a VAE with another encoder (another run's) would decode latents the UNet never drew
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "r" / "vae", other)
    weights = _vae_weights(other)
    weights["encoder.conv_in.bias"] += 0.01
    save_file(weights, str(other / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(SystemExit, match="encoder"):
        R.main([str(other), str(pipeline), "--apply"])
    assert all(torch.equal(_vae_weights(pipeline / "vae")[k], refined[k]) for k in refined)  # left as it was
