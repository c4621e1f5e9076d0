"""The demo-model training script runs every phase end to end (a few steps) and its output is a diffusers
pipeline that cns can load and personalise, within the size budget for committed weights."""

from __future__ import annotations

import json
import subprocess
import sys

from cns_cli.model.loading import describe_base, load_pipeline, resolve_base


def test_quick_training_run_gives_a_loadable_pipeline(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "cns_cli.demo.training", str(out), "--quick"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads((out / "pipeline" / "training.json").read_text())
    assert info["bytes"] <= 25_000_000  # committed as package data: ≤ 25 MB
    assert info["latent_scale"] > 0
    from cns_cli.prompts import calibration_id, calibration_prompts

    own = calibration_prompts(out / "pipeline")  # the model's own calibration set, in its vocabulary
    assert len(own) == 280 and len(set(own)) == 280 and calibration_id(out / "pipeline").startswith("model-v1:")
    assert sum(" and " in p for p in own) > 20  # two-object captions too
    pipe = load_pipeline(resolve_base(str(out / "pipeline")))
    pointer = describe_base(resolve_base(str(out / "pipeline")), pipe)
    assert pointer.text_dim == 128 and len(pointer.kv_layers) == 20
    # every caption word is a single known token sequence, and the tokenizer is the real one (not the 2-token fallback)
    assert len(pipe.tokenizer) > 500
    image = pipe("a red dog on the beach", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)

    # --resume after the VAE phase reuses the encoded latents instead of encoding the pool again
    cache = out / "checkpoints" / "latents.safetensors"
    stamp = cache.stat().st_mtime_ns
    r = subprocess.run([sys.executable, "-m", "cns_cli.demo.training", str(out), "--quick", "--resume"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert cache.stat().st_mtime_ns == stamp
    assert json.loads((out / "pipeline" / "training.json").read_text())["latent_scale"] == info["latent_scale"]
