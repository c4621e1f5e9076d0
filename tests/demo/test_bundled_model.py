"""The bundled demo model (cns_cli/data/demo-model): what `--base demo` resolves to. It must be a real
diffusers StableDiffusionPipeline loaded by the same code as any user's model, small enough to ship, with its
own vocabulary and calibration prompts, and it must draw the world it was trained on (a small sample here;
`python -m cns_cli.demo.assess` measures it in full)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cns_cli.demo.world import model_world
from cns_cli.model.loading import builtin_path, describe_base, load_pipeline, resolve_base

MODEL = builtin_path("demo")
WORLD = model_world(MODEL)  # the demo world it was trained on (training.json): its vocabulary and captions
# A checkout without the weights (a packaging experiment, a partial clone) skips these; CI has them.
pytestmark = pytest.mark.skipif(not (MODEL / "model_index.json").is_file(),
                                reason="the demo model is not bundled yet (python tools/train_demo_model.py)")


@pytest.fixture(scope="module")
def pipe():
    import torch

    torch.set_num_threads(2)
    p = load_pipeline(resolve_base("demo"))
    p.set_progress_bar_config(disable=True)
    return p


def test_demo_alias_resolves_to_the_bundled_folder_within_the_size_budget():
    spec = resolve_base("demo")
    assert spec.kind == "builtin" and spec.location == "demo"
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 25_000_000, size
    assert not list(MODEL.rglob("*.bin")) and not list(MODEL.rglob("*.pt")) and not list(MODEL.rglob("*.ckpt"))
    info = json.loads((MODEL / "training.json").read_text())  # the record of how the shipped weights were made
    vae = json.loads((MODEL / "vae" / "config.json").read_text())
    assert info["latent_scale"] == vae["scaling_factor"]  # the record describes the shipped VAE


def test_it_is_a_real_stable_diffusion_pipeline_with_its_own_vocabulary(pipe):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from cns_cli.demo.pairs import PAIR_WORDS
    from cns_cli.demo.world import vocabulary
    from cns_cli.prompts import calibration_id, calibration_prompts

    assert isinstance(pipe, StableDiffusionPipeline) and isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.text_encoder, CLIPTextModel)
    assert 500 < len(pipe.tokenizer) < 1000  # its own BPE vocabulary, not the 2-token fallback
    for word in (*vocabulary(WORLD), *PAIR_WORDS):  # every caption word is exactly one token
        ids = pipe.tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1 and pipe.tokenizer.decode(ids).strip() == word, (word, ids)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 64
    pointer = describe_base(resolve_base("demo"), pipe)
    assert pointer.kind == "builtin" and len(pointer.kv_layers) == 20
    assert calibration_id(MODEL).startswith("model-v1:") and len(calibration_prompts(MODEL)) == 280


def test_it_draws_what_the_prompt_says(pipe):
    """16 seen and 8 held-out captions: the evaluator must read back most of scene, class and colour (the full
    assessment is in the model folder's assessment.json; here a regression check)."""
    from cns_cli.demo import assess
    from cns_cli.demo.evaluator import Evaluator

    ev = Evaluator.load()
    for held, n, floor in ((False, 16, 0.6), (True, 8, 0.5)):
        specs, captions = assess.alignment_specs(n, held_out=held, world=WORLD)
        images = assess.generate(pipe, captions, seed=1, steps=15)
        score = ev.prompt_alignment(images, specs)
        assert score["scene"] >= 0.8 and score["class"] >= floor and score["colour"] >= floor, (held, score)
    report = json.loads((MODEL / "assessment.json").read_text())
    assert report["seen"]["n"] >= 100 and report["held_out"]["n"] >= 100


def test_pairs_put_two_objects_in_one_image(pipe):
    from cns_cli.demo.evaluator import Evaluator
    from cns_cli.demo.pairs import columns

    from cns_cli.demo import assess

    images = assess.generate(pipe, ["a red ball and a blue car on a plain background"] * 4, seed=3, steps=15)
    ev = Evaluator.load()
    left = ev.predict([columns(i, 2)[0] for i in images])
    right = ev.predict([columns(i, 2)[1] for i in images])
    # Both named objects are drawn, but which goes left is weakly bound (measured over 4 pair captions × 8
    # seeds at 25 steps: 36 % of halves show the class named for that side, chance 14 %; docs/demo-world.md). So the test
    # asks for the named pair in the halves, in either order.
    named = sum(a in ("ball", "car") for a in left["class"]) + sum(b in ("ball", "car") for b in right["class"])
    assert named >= 4, (left["class"], right["class"])
