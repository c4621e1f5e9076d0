"""The Python API (cns_cli.load_pipeline / apply_bank / remove_bank / expand_prompt): the images are
`cns generate`'s, remove_bank gives the pipeline back bit for bit, scales scale, and bad input is one clear
exception. `import cns_cli` loads no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cns_cli
from cns_cli.errors import ConceptError, ModelMismatchError, UsageError
from cns_cli.model.loading import kv_layers, load_pipeline, resolve_base
from cns_cli.model.tokens import token_embedding

from tests.clitools import cns


def _image(pipe, text: str, seed: int = 7) -> np.ndarray:
    out = pipe(text, num_inference_steps=3, guidance_scale=7.5, generator=torch.Generator().manual_seed(seed))
    return np.asarray(out.images[0])


def _state(pipe) -> dict:
    """Everything a bank changes: the K/V weights, the token table, the tokenizer's size."""
    return {"kv": {n: m.weight.detach().clone() for n, m in kv_layers(pipe.unet).items()},
            "emb": token_embedding(pipe.text_encoder).weight.detach().clone(), "tokens": len(pipe.tokenizer)}


def _same(a: dict, b: dict) -> bool:
    return (a["tokens"] == b["tokens"] and torch.equal(a["emb"], b["emb"])
            and all(torch.equal(a["kv"][n], b["kv"][n]) for n in a["kv"]))


def test_import_loads_no_torch():
    code = "import sys, cns_cli; cns_cli.__version__; print(any(m.split('.')[0] == 'torch' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_load_pipeline_draws_what_cns_generate_draws(dog_hat_bank_readonly, tmp_path):
    bank = dog_hat_bank_readonly
    r = cns("--bank", bank, "generate", "<dog> wearing a <hat>", "--seed", "7", "--steps", "3", "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    import json

    record = json.loads(r.stdout)
    text = cns_cli.expand_prompt(bank, "<dog> wearing a <hat>")
    assert text == record["text"] == "<dog> dog wearing a <hat> hat"
    pipe = cns_cli.load_pipeline(bank, device="cpu")
    assert np.array_equal(_image(pipe, text), np.asarray(Image.open(record["path"]).convert("RGB")))


def test_apply_then_remove_gives_the_pipeline_back_bit_for_bit(dog_hat_bank_readonly, tiny_base):
    pipe = load_pipeline(resolve_base(tiny_base))
    before = _state(pipe)
    assert cns_cli.apply_bank(pipe, dog_hat_bank_readonly) == ["dog", "hat"]
    applied = _state(pipe)
    assert applied["tokens"] == before["tokens"] + 2 and not _same(applied, before)
    reference = cns_cli.load_pipeline(dog_hat_bank_readonly, device="cpu")  # what generate runs: same weights
    assert _same(_state(reference), applied)
    cns_cli.remove_bank(pipe)
    assert _same(_state(pipe), before)
    with pytest.raises(UsageError, match="no bank applied"):
        cns_cli.remove_bank(pipe)


def test_scales_scale_the_delta_and_zero_leaves_the_unet_alone(dog_bank_readonly, tiny_base):
    pipe = load_pipeline(resolve_base(tiny_base))
    base = _state(pipe)["kv"]
    cns_cli.apply_bank(pipe, dog_bank_readonly, scales={"dog": 0.0})
    assert all(torch.equal(base[n], m.weight) for n, m in kv_layers(pipe.unet).items())
    cns_cli.remove_bank(pipe)
    cns_cli.apply_bank(pipe, dog_bank_readonly)
    full = {n: m.weight.detach() - base[n] for n, m in kv_layers(pipe.unet).items()}
    cns_cli.remove_bank(pipe)
    cns_cli.apply_bank(pipe, dog_bank_readonly, scales={"dog": 0.5})
    half = {n: m.weight.detach() - base[n] for n, m in kv_layers(pipe.unet).items()}
    assert any(full[n].abs().max() > 0 for n in full)
    assert all(torch.allclose(half[n], full[n] / 2, atol=1e-6) for n in full)


def test_an_earlier_revision_and_a_subset(dog_hat_bank_readonly, tiny_base):
    pipe = load_pipeline(resolve_base(tiny_base))
    assert cns_cli.apply_bank(pipe, dog_hat_bank_readonly, revision=1) == ["dog"]  # before <hat> was learned
    cns_cli.remove_bank(pipe)
    assert cns_cli.apply_bank(pipe, dog_hat_bank_readonly, concepts=["hat"]) == ["hat"]
    with pytest.raises(ConceptError):
        cns_cli.expand_prompt(dog_hat_bank_readonly, "<hat> on a beach", revision=1)


@pytest.mark.parametrize("kwargs, words", [
    ({"scales": {"dog": 2.5}}, "in [0, 2]"),
    ({"scales": {"dog": float("nan")}}, "in [0, 2]"),
    ({"scales": {"cat": 1.0}}, "not a concept"),
    ({"concepts": ["cat"]}, "no concept 'cat'"),
    ({"revision": 99}, "does not exist"),
])
def test_bad_input_is_one_clear_exception(dog_bank_readonly, tiny_base, kwargs, words):
    pipe = load_pipeline(resolve_base(tiny_base))
    before = _state(pipe)
    with pytest.raises(cns_cli.errors.CnsError, match=words.replace("[", r"\[").replace("]", r"\]")):
        cns_cli.apply_bank(pipe, dog_bank_readonly, **kwargs)
    assert _same(_state(pipe), before)


def test_another_base_or_another_dtype_is_refused(dog_bank_readonly, tmp_path):
    from cns_cli.model.tiny import save_tiny_pipeline

    other = load_pipeline(resolve_base(str(save_tiny_pipeline(tmp_path / "other", seed=1))))
    with pytest.raises(ModelMismatchError):
        cns_cli.apply_bank(other, dog_bank_readonly)
    other.to(torch.bfloat16)
    with pytest.raises(cns_cli.errors.ModelError, match="float32"):
        cns_cli.apply_bank(other, dog_bank_readonly)


def test_generate_regions_draws_what_cns_generate_region_draws(dog_hat_bank_readonly, tmp_path):
    import json

    bank = dog_hat_bank_readonly
    r = cns("--bank", bank, "generate", "a <dog> and a <hat> on the beach", "--region", "<dog>=0,0,0.5,1",
            "--region", "<hat>=0.5,0,1,1", "--seed", "4", "--steps", "3", "--out", tmp_path, "--json")
    assert r.exit_code == 0, r.stderr
    record = json.loads(r.stdout)
    pipe = cns_cli.load_pipeline(bank, device="cpu")
    out = cns_cli.generate_regions(pipe, bank, "a <dog> and a <hat> on the beach",
                                   {"dog": (0, 0, 0.5, 1), "hat": (0.5, 0, 1, 1)}, num_inference_steps=3,
                                   guidance_scale=7.5, generator=torch.Generator().manual_seed(4))
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(Image.open(record["path"]).convert("RGB")))
    auto = cns_cli.generate_regions(pipe, bank, "a <dog> and a <hat> on the beach", layout="auto",
                                    num_inference_steps=3, generator=torch.Generator().manual_seed(4))
    assert np.array_equal(np.asarray(auto.images[0]), np.asarray(out.images[0]))  # auto = the same two columns


def test_generate_regions_needs_the_bank_applied(dog_hat_bank_readonly, tiny_base):
    pipe = load_pipeline(resolve_base(tiny_base))
    with pytest.raises(UsageError, match="not applied to this pipeline"):
        cns_cli.generate_regions(pipe, dog_hat_bank_readonly, "a <dog> on the beach", {"dog": (0, 0, 1, 1)})
    with pytest.raises(UsageError, match="layout 'grid' is not known"):
        cns_cli.generate_regions(pipe, dog_hat_bank_readonly, "a <dog> on the beach", layout="grid")


def test_apply_bank_prints_nothing_of_its_own(dog_bank_readonly, tiny_base):
    """transformers logs a notice about mean-initialised rows on every resize_token_embeddings that grows the table;
    cns sets the new rows itself, so a user's apply_bank prints nothing (run in a fresh process with transformers'
    default verbosity: the notice is logged once per process)."""
    import os

    code = ("import sys, cns_cli; from diffusers import StableDiffusionPipeline; "
            "pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1], safety_checker=None); "
            "pipe.set_progress_bar_config(disable=True); cns_cli.apply_bank(pipe, sys.argv[2])")
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    out = subprocess.run([sys.executable, "-c", code, tiny_base, str(dog_bank_readonly)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "resiz" not in out.stderr.lower(), out.stderr


# -- a bank and diffusers' own LoRA and textual-inversion loaders on one pipeline -------------------------------


@pytest.fixture(scope="module")
def hat_lora(dog_hat_bank_readonly, tmp_path_factory):
    """A real diffusers LoRA on the tiny base (<hat>'s delta, exported), for a pipeline that has the dog bank."""
    out = tmp_path_factory.mktemp("hat-lora")
    r = cns("--bank", dog_hat_bank_readonly, "export", out / "x", "--format", "diffusers", "--concept", "hat")
    assert r.exit_code == 0, r.stderr
    return out / "x" / "hat"


def _kv(pipe) -> dict:
    return {n: m.weight.detach().clone() for n, m in kv_layers(pipe.unet).items()}


def _with_lora_fused(tiny_base, lora) -> dict:
    """The K/V weights of the base with `lora` fused in (and unloaded): what a pipeline holds after removing a
    bank from it, if the LoRA was fused while the bank was in."""
    pipe = load_pipeline(resolve_base(tiny_base))
    pipe.load_lora_weights(lora)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return _kv(pipe)


def test_remove_bank_keeps_a_lora_fused_after_the_bank(dog_bank_readonly, tiny_base, hat_lora):
    pipe = load_pipeline(resolve_base(tiny_base))
    before = _state(pipe)
    cns_cli.apply_bank(pipe, dog_bank_readonly)
    pipe.load_lora_weights(hat_lora)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    cns_cli.remove_bank(pipe)
    expected = _with_lora_fused(tiny_base, hat_lora)
    kv = _kv(pipe)
    assert any(not torch.equal(expected[n], before["kv"][n]) for n in kv)  # the LoRA does change these layers
    assert all(torch.allclose(kv[n], expected[n], rtol=0, atol=1e-6) for n in kv)  # the LoRA stays, the bank goes
    assert len(pipe.tokenizer) == before["tokens"] and torch.equal(token_embedding(pipe.text_encoder).weight, before["emb"])


def test_a_lora_loaded_unfused_and_a_bank_come_and_go_in_either_order(dog_bank_readonly, tiny_base, hat_lora):
    pipe = load_pipeline(resolve_base(tiny_base))
    before = _state(pipe)
    cns_cli.apply_bank(pipe, dog_bank_readonly)
    applied = _state(pipe)
    pipe.load_lora_weights(hat_lora)  # PEFT wraps to_k / to_v: the weights sit in to_k.base_layer now
    cns_cli.remove_bank(pipe)
    pipe.unload_lora_weights()
    assert _same(_state(pipe), before)
    pipe.load_lora_weights(hat_lora)  # the other order: the LoRA first, then the bank (the base is still there)
    assert cns_cli.apply_bank(pipe, dog_bank_readonly) == ["dog"]
    assert _same(_state(pipe), applied)  # _state sees the base layers through the LoRA's wrappers
    cns_cli.remove_bank(pipe)
    pipe.unload_lora_weights()
    assert _same(_state(pipe), before)


def test_remove_bank_refuses_tokens_loaded_after_the_bank_and_changes_nothing(dog_bank_readonly, tiny_base):
    from cns_cli.errors import ModelError

    pipe = load_pipeline(resolve_base(tiny_base))
    before = _state(pipe)
    cns_cli.apply_bank(pipe, dog_bank_readonly)
    pipe.load_textual_inversion({"<mine>": torch.ones(token_embedding(pipe.text_encoder).weight.shape[1])})
    loaded = _state(pipe)
    with pytest.raises(ModelError, match=r"tokens after the bank's \(<mine>.*unload_textual_inversion\(\['<mine>'\]\)"):
        cns_cli.remove_bank(pipe)
    assert _same(_state(pipe), loaded) and pipe.tokenizer.convert_tokens_to_ids("<mine>") == before["tokens"] + 1
    pipe.unload_textual_inversion(["<mine>"])
    cns_cli.remove_bank(pipe)
    assert _same(_state(pipe), before)


def test_apply_bank_says_what_is_wrong_with_the_pipeline(dog_bank_readonly, tiny_base, tiny_sdxl, hat_lora, tmp_path):
    from cns_cli.model.tiny import save_tiny_pipeline

    def refusal(pipe) -> str:
        with pytest.raises(ModelMismatchError) as info:
            cns_cli.apply_bank(pipe, dog_bank_readonly)
        return str(info.value)

    pipe = load_pipeline(resolve_base(tiny_base))
    cns_cli.apply_bank(pipe, dog_bank_readonly)
    assert "has a bank applied already (concepts: dog); call cns_cli.remove_bank(pipe)" in refusal(pipe)
    fused = load_pipeline(resolve_base(tiny_base))
    fused.load_lora_weights(hat_lora)
    fused.fuse_lora()
    assert "a LoRA is fused into this pipeline" in refusal(fused)
    assert "an SDXL model and the bank was built on an SD 1.x base" in refusal(load_pipeline(resolve_base(tiny_sdxl)))
    other = load_pipeline(resolve_base(str(save_tiny_pipeline(tmp_path / "other", seed=1))))
    assert "weights are not those of the bank's base" in refusal(other)
    for message in map(refusal, (pipe, fused, other)):
        assert "restore the original base" not in message  # the base on disk is fine: the pipeline in memory is not
    with pytest.raises(UsageError, match="needs a diffusers Stable Diffusion pipeline"):
        cns_cli.remove_bank(object())


def test_expand_prompt_with_a_strength_is_what_generate_sends(dog_hat_bank_readonly, tmp_path):
    import json

    r = cns("--bank", dog_hat_bank_readonly, "generate", "<dog:0.7> wearing a <hat>", "--steps", "1", "--out", tmp_path,
            "--json")
    assert r.exit_code == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["strengths"] == {"dog": 0.7}
    assert cns_cli.expand_prompt(dog_hat_bank_readonly, "<dog:0.7> wearing a <hat>") == record["text"]


def test_generate_regions_refuses_a_strength_it_cannot_apply(dog_hat_bank_readonly):
    pipe = cns_cli.load_pipeline(dog_hat_bank_readonly, device="cpu")
    with pytest.raises(UsageError, match=r"write <dog> and apply the bank with scales=\{'dog': 0.7\}"):
        cns_cli.generate_regions(pipe, dog_hat_bank_readonly, "<dog:0.7> on the beach", {"dog": (0, 0, 1, 1)})
    with pytest.raises(UsageError, match="scales="):
        cns_cli.generate_regions(pipe, dog_hat_bank_readonly, "<dog> on the beach", {"dog": (0, 0, 1, 1)},
                                 region_prompts={"dog": "a <dog:0.5> dog"})


def test_apply_bank_on_a_pipeline_with_the_concepts_token_loaded_says_so(dog_bank_readonly, tiny_base, hat_lora):
    from cns_cli.errors import ModelError

    pipe = load_pipeline(resolve_base(tiny_base))
    pipe.load_textual_inversion({"<dog>": torch.ones(token_embedding(pipe.text_encoder).weight.shape[1])})
    loaded = _state(pipe)
    with pytest.raises(ModelError, match=r"has <dog> in its tokenizer already .*unload_textual_inversion\('<dog>'\)"):
        cns_cli.apply_bank(pipe, dog_bank_readonly)
    assert _same(_state(pipe), loaded)


@pytest.mark.parametrize("call, words", [
    (lambda bank: cns_cli.expand_prompt(bank, None), "prompt must be a str, got NoneType"),
    (lambda bank: cns_cli.expand_prompt(5, "<dog>"), "bank must be a path or a cns_cli.bank.Bank, got int"),
    (lambda bank: cns_cli.apply_bank(object(), bank), "apply_bank needs a diffusers Stable Diffusion pipeline"),
])
def test_arguments_of_the_wrong_type_are_one_usage_error(dog_bank_readonly, call, words):
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
        call(dog_bank_readonly)
