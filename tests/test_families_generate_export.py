"""Generate and export on SD 2.x (v-prediction) and SDXL (issue 16): `cns generate` draws what the family's diffusers
pipeline draws with the bank's weights, regions work on every family, and every export reloads in a fresh diffusers
pipeline of that family to within 1/255 of `cns generate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import cns_cli
from cns_cli.bank import Bank
from cns_cli.export import export
from cns_cli.lora_names import kohya_key
from cns_cli.model.loading import load_pipeline, resolve_base
from tests.clitools import cns, one_line_error
from tests.conftest import FAMILY_BASES

PROMPT = "<dog> on the beach"
CALL = dict(num_inference_steps=3, guidance_scale=7.5)


@pytest.fixture(scope="module")
def bank(family, family_dog_banks) -> Path:
    return family_dog_banks[family]


@pytest.fixture(scope="module")
def generated(bank, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("generated")
    r = cns("--bank", bank, "generate", PROMPT, "--seed", "3", "--steps", "3", "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def pixels(image) -> np.ndarray:
    image = Image.open(image) if isinstance(image, (str, Path)) else image
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def draw(pipe, text: str) -> np.ndarray:
    return pixels(pipe(text, generator=torch.Generator().manual_seed(3), **CALL).images[0])


def fresh(family_base: str):
    """The family's own diffusers pipeline, loaded by diffusers (not by cns)."""
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(family_base, torch_dtype=torch.float32)


def load_embedding(pipe, path: Path, token: str) -> None:
    """A textual-inversion file into a diffusers pipeline, as README tells users: SDXL's {clip_l, clip_g} file with
    one call per text encoder, any other with one call."""
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "clip_g" in tensors:
        pipe.load_textual_inversion(tensors["clip_l"], token=token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(tensors["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)
    else:
        pipe.load_textual_inversion(str(path), token=token)


def test_generate_is_the_family_pipeline_with_the_bank(family, bank, generated):
    """The PNG is the family's diffusers pipeline call (StableDiffusionXLPipeline on SDXL) at its native size."""
    pipe = cns_cli.load_pipeline(bank, device="cpu")
    assert type(pipe).__name__ == {"sd2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}[family]
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert (generated["width"], generated["height"]) == (native, native)
    assert np.array_equal(draw(pipe, generated["text"]), pixels(generated["path"]))


def test_regions_work_on_every_family(bank, generated, tmp_path):
    r = cns("--bank", bank, "generate", PROMPT, "--seed", "3", "--steps", "3", "--out", tmp_path, "--json",
            "--region", "<dog>=0,0,0.5,1")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["regions"]["regions"][0]["box"] == [0.0, 0.0, 0.5, 1.0]
    assert not np.array_equal(pixels(rec["path"]), pixels(generated["path"]))  # the box changed the image
    pipe = cns_cli.load_pipeline(bank, device="cpu")
    out = cns_cli.generate_regions(pipe, bank, PROMPT, {"dog": (0, 0, 0.5, 1)}, generator=torch.Generator().manual_seed(3),
                                   **CALL)
    assert np.array_equal(pixels(out.images[0]), pixels(rec["path"]))


def within_1_of_255(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and np.abs(a - b).max() <= 1


def assert_loaded_exactly(pipe, bank: Path, family_base: str) -> None:
    """The images alone could agree with a LoRA dropped on load (a few training steps move pixels little): the
    LoRA, fused by diffusers, gives cns's K/V weights, which differ from the base's; the token rows are the bank's."""
    from cns_cli.model.text import text_pairs
    from cns_cli.model.tokens import token_embedding

    pipe.fuse_lora()
    theirs = {n: getattr(m, "base_layer", m).weight for n, m in pipe.unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))}
    ours = cns_cli.load_pipeline(bank, device="cpu")
    plain = fresh(family_base)
    kv = {n: m.weight for n, m in ours.unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))}
    plain_kv = {n: m.weight for n, m in plain.unet.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))}
    assert set(theirs) == set(kv) and any(not torch.equal(kv[n], plain_kv[n]) for n in kv)
    for n in kv:
        torch.testing.assert_close(theirs[n], kv[n], rtol=0, atol=1e-6)
    for (tok, enc), (our_tok, our_enc) in zip(text_pairs(pipe), text_pairs(ours)):
        mine = token_embedding(our_enc).weight[our_tok.convert_tokens_to_ids("<dog>")]
        assert torch.equal(token_embedding(enc).weight[tok.convert_tokens_to_ids("<dog>")], mine)


def test_kohya_export_reloads_in_diffusers(family, bank, family_base, generated, tmp_path):
    export(bank, tmp_path, "kohya")
    with safe_open(str(tmp_path / "lora" / "dog.safetensors"), "np") as f:
        keys, meta = list(f.keys()), f.metadata()
    rev = Bank.open(bank).head()
    layers = [layer for layer, n in rev.concepts["dog"].neurons.per_layer.items() if n]
    want = {kohya_key(layer, family, 2) for layer in layers}
    assert {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys} == want
    if family == "sdxl":  # SGM names only, never mixed with diffusers names
        assert all("_input_blocks_" in k or "_middle_block_" in k or "_output_blocks_" in k for k in keys)
        assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    else:
        assert meta["ss_base_model_version"] == "sd_v2_v" and meta["modelspec.prediction_type"] == "v"
    with safe_open(str(tmp_path / "embeddings" / "dog.safetensors"), "np") as f:
        emb = {k: f.get_tensor(k).shape for k in f.keys()}
    assert emb == ({"clip_l": (1, 32), "clip_g": (1, 64)} if family == "sdxl" else {"emb_params": (1, 64)})
    pipe = fresh(family_base)
    pipe.load_lora_weights(str(tmp_path / "lora"), weight_name="dog.safetensors")
    load_embedding(pipe, tmp_path / "embeddings" / "dog.safetensors", "<dog>")
    within_1_of_255(draw(pipe, generated["text"]), pixels(generated["path"]))
    assert_loaded_exactly(pipe, bank, family_base)


def test_diffusers_export_reloads_in_diffusers(bank, family_base, generated, tmp_path):
    export(bank, tmp_path, "diffusers")
    pipe = fresh(family_base)
    pipe.load_lora_weights(str(tmp_path / "dog"))
    load_embedding(pipe, tmp_path / "dog" / "learned_embeds.safetensors", "<dog>")
    within_1_of_255(draw(pipe, generated["text"]), pixels(generated["path"]))
    assert_loaded_exactly(pipe, bank, family_base)


def test_pipeline_export_reloads_in_diffusers(family, bank, generated, tmp_path):
    from diffusers import DiffusionPipeline

    export(bank, tmp_path / "pipe", "pipeline")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipe", torch_dtype=torch.float32)
    assert type(pipe).__name__ == {"sd2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}[family]
    within_1_of_255(draw(pipe, generated["text"]), pixels(generated["path"]))


def test_apply_and_remove_bank_on_the_family(bank, family_base, generated):
    from cns_cli.model.loading import kv_layers

    pipe = load_pipeline(resolve_base(family_base))
    before = {n: m.weight.detach().clone() for n, m in kv_layers(pipe.unet).items()}
    sizes = [len(pipe.tokenizer)] + ([len(pipe.tokenizer_2)] if hasattr(pipe, "tokenizer_2") else [])
    cns_cli.apply_bank(pipe, bank)
    assert np.array_equal(draw(pipe, generated["text"]), pixels(generated["path"]))
    cns_cli.remove_bank(pipe)
    assert all(torch.equal(before[n], m.weight) for n, m in kv_layers(pipe.unet).items())
    assert sizes == [len(pipe.tokenizer)] + ([len(pipe.tokenizer_2)] if hasattr(pipe, "tokenizer_2") else [])


def test_size_not_a_multiple_of_8_is_refused(bank, tmp_path, no_model_load):
    r = cns("--bank", bank, "generate", PROMPT, "--width", "100", "--out", tmp_path)
    assert r.exit_code == 2 and "multiple of 8" in one_line_error(r) and not any(tmp_path.iterdir())


# -- a multi-vector concept on SDXL: both text encoders get the k vectors ---------------------------------------


@pytest.fixture(scope="module")
def sdxl_vectors_bank(tiny_sdxl, dog_photos, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sdxl-vectors") / "b.cnsbank"
    r = cns("--bank", path, "learn", "dog", dog_photos, "--class", "dog", "--base", tiny_sdxl, "--steps", "3",
            "--score-steps", "1", "--vectors", "3", "--lr", "5e-3", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["plan"]["parameters_trained"]["token"] == 3 * (32 + 64)
    return path


def test_a_3_vector_sdxl_concept_is_3_tokens_in_both_encoders_and_exports_to_diffusers(sdxl_vectors_bank, tiny_sdxl, tmp_path):
    r = cns("--bank", sdxl_vectors_bank, "generate", PROMPT, "--seed", "3", "--steps", "3", "--out", tmp_path / "img", "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    bank = Bank.open(sdxl_vectors_bank)
    stored = bank.read_object(bank.head().concepts["dog"].embedding)
    assert {k: v.shape for k, v in stored.items()} == {"embedding": (3, 32), "embedding_2": (3, 64)}
    export(sdxl_vectors_bank, tmp_path / "out", "kohya")
    pipe = fresh(tiny_sdxl)
    assert not np.array_equal(draw(pipe, rec["text"]), pixels(rec["path"]))  # the concept changes the image
    pipe.load_lora_weights(str(tmp_path / "out" / "lora"), weight_name="dog.safetensors")
    load_embedding(pipe, tmp_path / "out" / "embeddings" / "dog.safetensors", "<dog>")
    tokens = ["<dog>", "<dog>_1", "<dog>_2"]
    for (tok, enc), name in zip(((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)),
                                ("embedding", "embedding_2")):
        rows = enc.get_input_embeddings().weight[tok.convert_tokens_to_ids(tokens)]
        assert torch.equal(rows, torch.from_numpy(stored[name]))
    within_1_of_255(draw(pipe, rec["text"]), pixels(rec["path"]))
    ours = cns_cli.load_pipeline(sdxl_vectors_bank, device="cpu")  # and cns's pipeline reads the prompt as diffusers does
    with torch.no_grad():
        a = ours.encode_prompt(prompt=rec["text"], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
        b = pipe.encode_prompt(prompt=rec["text"], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])


def test_a_3_vector_sdxl_concept_draws_regions_and_comes_out_exactly(sdxl_vectors_bank, tiny_sdxl, tmp_path):
    from cns_cli.model.loading import kv_layers

    r = cns("--bank", sdxl_vectors_bank, "generate", PROMPT, "--seed", "3", "--steps", "3", "--out", tmp_path, "--json",
            "--layout", "auto")
    assert r.exit_code == 0, r.stderr
    pipe = load_pipeline(resolve_base(tiny_sdxl))
    before = {n: m.weight.detach().clone() for n, m in kv_layers(pipe.unet).items()}
    emb = [enc.get_input_embeddings().weight.detach().clone() for enc in (pipe.text_encoder, pipe.text_encoder_2)]
    sizes = [len(pipe.tokenizer), len(pipe.tokenizer_2)]
    cns_cli.apply_bank(pipe, sdxl_vectors_bank)
    assert [len(pipe.tokenizer), len(pipe.tokenizer_2)] == [s + 3 for s in sizes]
    out = cns_cli.generate_regions(pipe, sdxl_vectors_bank, PROMPT, layout="auto", generator=torch.Generator().manual_seed(3),
                                   **CALL)
    assert np.array_equal(pixels(out.images[0]), pixels(json.loads(r.stdout)["path"]))
    cns_cli.remove_bank(pipe)
    assert all(torch.equal(before[n], m.weight) for n, m in kv_layers(pipe.unet).items())
    assert [len(pipe.tokenizer), len(pipe.tokenizer_2)] == sizes
    assert all(torch.equal(e, enc.get_input_embeddings().weight) for e, enc in zip(emb, (pipe.text_encoder, pipe.text_encoder_2)))
