"""`cns generate`'s numeric options and prompt texts (issue 35): a value the model cannot sample with is one line and
exit 2 before the model loads where it can be known then, and NaN that appears anyway during sampling is one line
and exit 2 naming the flag to change, with no (black) image written."""

from __future__ import annotations

import pytest

from tests.clitools import cns, one_line_error


def _files(folder) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("guidance", ["1e22", "101", "inf", "nan", "-1"])
def test_absurd_guidance_is_refused_before_the_model_loads(dog_bank_readonly, tmp_path, no_model_load, guidance):
    out = tmp_path / "out"
    r = cns("--bank", dog_bank_readonly, "generate", "<dog>", "--guidance", guidance, "--steps", "2", "--out", out)
    line = one_line_error(r)
    assert "--guidance" in line and "100" in line, line
    assert _files(out) == []


@pytest.mark.parametrize("where, model, module", [("the latents at step 1", "unet", "conv_out"),
                                                  ("the decoded image", "vae", "decoder")])
def test_nan_during_sampling_is_one_line_and_writes_no_image(dog_bank_readonly, tmp_path, monkeypatch, where, model, module):
    """NaN from an overflow inside the UNet (every later step would stay NaN) or the VAE (fp16's usual failure):
    simulated by a forward hook, since the tiny fp32 model does not overflow at an allowed --guidance."""
    from cns_cli import generate

    real = generate.build_pipeline

    def overflowing(*args, **kwargs):
        pipe = real(*args, **kwargs)
        getattr(pipe, model).get_submodule(module).register_forward_hook(lambda m, inputs, out: out * float("nan"))
        return pipe

    monkeypatch.setattr(generate, "build_pipeline", overflowing)
    out = tmp_path / "out"
    r = cns("--bank", dog_bank_readonly, "generate", "<dog>", "--guidance", "90", "--steps", "2", "--out", out)
    line = one_line_error(r)
    assert where in line and "NaN" in line and "--guidance" in line and "no image was written" in line, line
    assert "RuntimeWarning" not in r.stderr
    assert _files(out) == []
