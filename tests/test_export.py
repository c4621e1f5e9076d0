"""Every export reloads in a fresh diffusers pipeline built from the same base and gives the images that
`cns generate` gives (max pixel difference ≤ 1/255), for one concept and for two in one prompt."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from cns_cli.bank import Bank
from cns_cli.bank.history import forget
from cns_cli.cli import app
from cns_cli.export import export
from cns_cli.lora_names import kohya_key
from cns_cli.generate import GenerateConfig, generate
from cns_cli.learn import LearnConfig, learn
from cns_cli.model.loading import load_pipeline, resolve_base

runner = CliRunner()
SEED, STEPS, GUIDANCE = 4, 4, 6.5
ONE, TWO = "<dog> on a beach", "<dog> wearing a <hat>"


@pytest.fixture(scope="module")
def bank(tiny_base, dog_photos, hat_photos, tmp_path_factory) -> Path:
    """<dog> on a slice of the shared basis, <hat> on its own basis (format 1.3): every export covers both."""
    path = tmp_path_factory.mktemp("export") / "b.cnsbank"
    for name, photos, kind in (("dog", dog_photos, "shared"), ("hat", hat_photos, "concept")):
        learn(path, name, photos, base=tiny_base, config=LearnConfig(steps=10, score_steps=2, lr=5e-3, slice=kind))
    head = Bank.open(path).head()
    assert not head.concepts["dog"].slice.own and head.concepts["hat"].slice.own
    return path


@pytest.fixture(scope="module")
def reference(bank, tmp_path_factory) -> dict[str, dict]:
    """What `cns generate` makes for both prompts."""
    out = tmp_path_factory.mktemp("ref")
    recs = generate(bank, [ONE, TWO], out, GenerateConfig(seed=SEED, steps=STEPS, guidance=GUIDANCE))
    return {r["prompt"]: r for r in recs}


def fresh(tiny_base):
    return load_pipeline(resolve_base(tiny_base))


def pixels(img) -> np.ndarray:
    from PIL import Image

    img = Image.open(img) if isinstance(img, (str, Path)) else img
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def assert_same_images(pipe, reference: dict, prompts=(ONE, TWO)):
    for prompt in prompts:
        rec = reference[prompt]
        img = pipe(rec["text"], num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                   generator=torch.Generator().manual_seed(SEED)).images[0]
        diff = np.abs(pixels(img) - pixels(rec["path"])).max()
        assert diff <= 1, f"{prompt!r}: max pixel difference {diff}/255"


def test_reference_is_personalised(bank, reference, tiny_base):
    """Guard: if the concepts changed nothing, every equality below would be vacuous."""
    base = fresh(tiny_base)
    img = base(reference[ONE]["text"], num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               generator=torch.Generator().manual_seed(SEED)).images[0]
    assert np.abs(pixels(img) - pixels(reference[ONE]["path"])).max() > 1


def test_kohya_per_concept_loras_and_a1111_embeddings(bank, reference, tiny_base, tmp_path):
    doc = export(bank, tmp_path, "kohya")
    assert {Path(f["path"]).relative_to(tmp_path).as_posix() for f in doc["files"]} == {
        "lora/dog.safetensors", "lora/hat.safetensors", "embeddings/dog.safetensors", "embeddings/hat.safetensors"}
    pipe = fresh(tiny_base)
    for n in ("dog", "hat"):
        pipe.load_lora_weights(tmp_path / "lora", weight_name=f"{n}.safetensors", adapter_name=n)
        pipe.load_textual_inversion(tmp_path / "embeddings" / f"{n}.safetensors", token=f"<{n}>")
    pipe.set_adapters(["dog", "hat"], [1.0, 1.0])
    assert_same_images(pipe, reference)


def test_kohya_merged_lora(bank, reference, tiny_base, tmp_path):
    export(bank, tmp_path, "kohya", merged=True)
    pipe = fresh(tiny_base)
    pipe.load_lora_weights(tmp_path / "lora", weight_name="cns-merged.safetensors")
    for n in ("dog", "hat"):
        pipe.load_textual_inversion(tmp_path / "embeddings" / f"{n}.safetensors", token=f"<{n}>")
    assert_same_images(pipe, reference)


def test_diffusers_format(bank, reference, tiny_base, tmp_path):
    export(bank, tmp_path, "diffusers")
    pipe = fresh(tiny_base)
    for n in ("dog", "hat"):
        pipe.load_lora_weights(tmp_path / n, adapter_name=n)  # finds pytorch_lora_weights.safetensors
        pipe.load_textual_inversion(tmp_path / n)  # learned_embeds.safetensors names its token
    pipe.set_adapters(["dog", "hat"], [1.0, 1.0])
    assert_same_images(pipe, reference)


def test_diffusers_merged_format_fused(bank, reference, tiny_base, tmp_path):
    export(bank, tmp_path, "diffusers", merged=True)
    pipe = fresh(tiny_base)
    pipe.load_lora_weights(tmp_path)
    pipe.fuse_lora()
    for n in ("dog", "hat"):
        pipe.load_textual_inversion(tmp_path / n)
    assert_same_images(pipe, reference)


def test_embedding_format_has_both_conventions(bank, tmp_path):
    export(bank, tmp_path, "embedding")
    b = Bank.open(bank)
    for n in ("dog", "hat"):
        want = b.read_object(b.head().concepts[n].embedding)["embedding"]
        with safe_open(tmp_path / "embeddings" / f"{n}.safetensors", "np") as f:
            assert list(f.keys()) == ["emb_params"] and np.array_equal(f.get_tensor("emb_params"), want)
        with safe_open(tmp_path / n / "learned_embeds.safetensors", "np") as f:
            assert list(f.keys()) == [f"<{n}>"] and np.array_equal(f.get_tensor(f"<{n}>"), want)


def test_pipeline_needs_no_cns(bank, reference, tmp_path):
    from diffusers import StableDiffusionPipeline

    export(bank, tmp_path / "pipe", "pipeline")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "pipe", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert "<dog>" in pipe.tokenizer.get_vocab() and "<hat>" in pipe.tokenizer.get_vocab()
    assert_same_images(pipe, reference)


def test_one_concept_only(bank, tiny_base, tmp_path):
    doc = export(bank, tmp_path, "kohya", concepts=["dog"])
    assert doc["concepts"] == ["dog"] and len(doc["files"]) == 2
    pipe = fresh(tiny_base)
    pipe.load_lora_weights(tmp_path / "lora", weight_name="dog.safetensors")
    pipe.load_textual_inversion(tmp_path / "embeddings" / "dog.safetensors", token="<dog>")
    # What cns generates from a bank holding <dog> alone (a copy of the bank with <hat> forgotten).
    only_dog = tmp_path / "only-dog.cnsbank"
    shutil.copytree(bank, only_dog)
    forget(Bank.open(only_dog), "hat")
    ref = generate(only_dog, [ONE], tmp_path / "ref", GenerateConfig(seed=SEED, steps=STEPS, guidance=GUIDANCE))[0]
    assert_same_images(pipe, {ONE: ref}, prompts=(ONE,))


def test_kohya_keys_and_metadata_follow_the_convention(bank, tmp_path):
    export(bank, tmp_path, "kohya")
    b = Bank.open(bank)
    rev = b.head()
    dog = rev.concepts["dog"]
    with safe_open(tmp_path / "lora" / "dog.safetensors", "np") as f:
        keys, meta = set(f.keys()), f.metadata()
        layers = [layer for layer, n in dog.neurons.per_layer.items() if n]
        assert keys == {f"{kohya_key(l)}.{p}" for l in layers for p in ("lora_down.weight", "lora_up.weight", "alpha")}
        for layer in layers:
            k = kohya_key(layer)
            assert k.startswith("lora_unet_") and "." not in k
            down, up = f.get_tensor(f"{k}.lora_down.weight"), f.get_tensor(f"{k}.lora_up.weight")
            assert down.shape == (dog.slice.rank, rev.base.text_dim) and up.shape == (rev.base.kv_layers[layer], dog.slice.rank)
            assert f.get_tensor(f"{k}.alpha") == dog.slice.rank  # alpha / rank = 1: applied at full strength
            assert np.count_nonzero(np.abs(up).sum(axis=1)) == dog.neurons.per_layer[layer]  # only owned rows
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == str(dog.slice.rank)
    assert float(meta["ss_network_alpha"]) == dog.slice.rank and meta["ss_base_model_version"] == "sd_v1"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["modelspec.sai_model_spec"]
    assert meta["cns.bank_revision"] == str(rev.number) and meta["cns.base"] == rev.base.location
    assert meta["cns.base_fingerprint"].endswith(rev.base.fingerprint.digest)


def test_diffusers_own_kohya_converter_accepts_the_file(bank, tmp_path):
    from diffusers import StableDiffusionPipeline

    export(bank, tmp_path, "kohya")
    state, alphas = StableDiffusionPipeline.lora_state_dict(tmp_path / "lora", weight_name="dog.safetensors")
    rev = Bank.open(bank).head()
    layers = {l for l, n in rev.concepts["dog"].neurons.per_layer.items() if n}
    # diffusers maps kohya names to its attention-processor names (…attn2.processor.to_k_lora.down.weight)
    converted = {re.sub(r"\.processor\.(to_[kv])_lora\.(up|down)\.weight$", r".\1", k.removeprefix("unet.")) for k in state}
    assert converted == layers, "every kohya key must map back onto its diffusers module"
    assert all(k.startswith("unet.") for k in state)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--concept", "cat"], "no concept 'cat'"),
        (["--format", "pipeline", "--merged"], "--merged applies to LoRA formats"),
    ],
)
def test_bad_export_requests(bank, tmp_path, args, words):
    r = runner.invoke(app, ["--bank", str(bank), "export", str(tmp_path / "out"), *args])
    assert r.exit_code == 2 and words in r.stderr
    assert not (tmp_path / "out").exists()


def test_existing_non_empty_out_needs_force(bank, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    r = runner.invoke(app, ["--bank", str(bank), "export", str(tmp_path)])
    assert r.exit_code == 2 and "--force" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    r = runner.invoke(app, ["--bank", str(bank), "export", str(tmp_path), "--force", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["format"] == "kohya"
    assert (tmp_path / "keep.txt").read_text() == "mine"


# -- export --revision, and damaged objects ----------------------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple[dict, dict]]:
    """Each exported file's metadata and tensors (safetensors writes metadata in a random order, so not bytes)."""
    out = {}
    for p in sorted(root.rglob("*.safetensors")):
        with safe_open(p, "np") as f:
            out[p.relative_to(root).as_posix()] = (f.metadata(), {k: f.get_tensor(k).tobytes() for k in f.keys()})
    return out


def test_export_revision_gives_the_files_of_that_revision(bank, tmp_path):
    head = export(bank, tmp_path / "head", "kohya")  # the fixture bank: HEAD 2 holds dog and hat
    assert head["revision"] == 2
    copy = tmp_path / "copy.cnsbank"
    shutil.copytree(bank, copy)
    forget(Bank.open(copy), "dog")  # revision 3: hat only
    r = runner.invoke(app, ["--bank", str(copy), "export", str(tmp_path / "rev2"), "--revision", "2", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["revision"] == 2 and doc["concepts"] == ["dog", "hat"]
    exported = _tree(tmp_path / "rev2")
    assert len(exported) == 4 and exported == _tree(tmp_path / "head")  # exactly what HEAD 2 exported
    now = export(copy, tmp_path / "now", "kohya")
    assert now["revision"] == 3 and now["concepts"] == ["hat"]
    with safe_open(tmp_path / "rev2" / "lora" / "dog.safetensors", "np") as f:
        assert f.metadata()["cns.bank_revision"] == "2"


def _small_bank(path: Path) -> Path:
    from tests.bank import bankfactory as bf

    b = bf.build_bank(path, 0)
    bf.learn(b, "dog", seed=1)
    bf.learn(b, "hat", seed=2)
    return path


@pytest.mark.parametrize(
    "args, words",
    [
        (["--revision", "99"], "revision 99 does not exist (revisions on disk: 0-2); `cns log` lists them"),
        (["--revision", "two"], "--revision must be a revision number (0, 1, 2, …), not 'two'"),
        (["--revision", "0"], "revision 0 has no concepts to export"),
        (["--revision", "1", "--concept", "hat"], "no concept 'hat' in revision 1; known: dog"),
    ],
)
def test_bad_export_revision(tmp_path, args, words):
    path = _small_bank(tmp_path / "b.cnsbank")
    r = runner.invoke(app, ["--bank", str(path), "export", str(tmp_path / "out"), "--format", "embedding", *args])
    assert r.exit_code == 2 and words in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_export_of_a_revision_whose_head_is_garbage(tmp_path):
    path = _small_bank(tmp_path / "b.cnsbank")
    (path / "HEAD").write_bytes(b"garbage\n")
    r = runner.invoke(app, ["--bank", str(path), "export", str(tmp_path / "out"), "--format", "embedding",
                            "--revision", "1", "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["concepts"] == ["dog"]


def test_damaged_object_names_the_concept_and_the_command(tmp_path):
    path = _small_bank(tmp_path / "b.cnsbank")
    b = Bank.open(path)
    ref = b.head().concepts["hat"].embedding
    b.object_path(ref).unlink()
    out = tmp_path / "out"
    r = runner.invoke(app, ["--bank", str(path), "export", str(out), "--format", "embedding"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert (f"the files of concept hat are damaged (objects/{ref.sha256[:12]}….safetensors: missing); "
            "`cns forget hat` removes it (or restore the file from a backup); `cns verify` lists every problem") in r.stderr
    assert "cns undo" not in r.stderr and not out.exists()
    r = runner.invoke(app, ["--bank", str(path), "export", str(out), "--format", "embedding", "--concept", "dog"])
    assert r.exit_code == 0, r.stderr
    # a revision asked for by number may not be HEAD, where `cns forget` acts: it says what does help
    r = runner.invoke(app, ["--bank", str(path), "export", str(tmp_path / "o2"), "--format", "kohya", "--revision", "2"])
    assert r.exit_code == 2
    assert "the files of concept hat are damaged" in r.stderr and "leave the concept out (--concept NAME" in r.stderr
    assert "cns forget" not in r.stderr


# -- a multi-vector concept (cns learn --vectors 3): diffusers' own textual-inversion loader reads it -------------


@pytest.fixture(scope="module")
def vectors_reference(vectors_bank_readonly, tmp_path_factory) -> dict[str, dict]:
    """What `cns generate` makes for both prompts from the bank of a 3-vector <dog> and a 1-vector <hat>."""
    recs = generate(vectors_bank_readonly, [ONE, TWO], tmp_path_factory.mktemp("vref"),
                    GenerateConfig(seed=SEED, steps=STEPS, guidance=GUIDANCE))
    return {r["prompt"]: r for r in recs}


DOG3 = ["<dog>", "<dog>_1", "<dog>_2"]


def test_a_3_vector_concept_loads_in_diffusers_from_both_embedding_conventions(vectors_bank_readonly, vectors_reference,
                                                                               tiny_base, tmp_path):
    """The [3, d] embedding in both conventions: diffusers' load_textual_inversion adds <dog>, <dog>_1, <dog>_2 with
    the bank's rows, and the pipeline then draws `cns generate`'s images (one and two concepts)."""
    base = fresh(tiny_base)  # guard, as test_reference_is_personalised: the concepts change the images
    img = base(vectors_reference[ONE]["text"], num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               generator=torch.Generator().manual_seed(SEED)).images[0]
    assert np.abs(pixels(img) - pixels(vectors_reference[ONE]["path"])).max() > 1
    export(vectors_bank_readonly, tmp_path / "d", "diffusers")
    export(vectors_bank_readonly, tmp_path / "k", "kohya")
    stored = Bank.open(vectors_bank_readonly).read_object(Bank.open(vectors_bank_readonly).head().concepts["dog"].embedding)
    with safe_open(tmp_path / "d" / "dog" / "learned_embeds.safetensors", "np") as f:
        assert list(f.keys()) == ["<dog>"] and np.array_equal(f.get_tensor("<dog>"), stored["embedding"])
    with safe_open(tmp_path / "k" / "embeddings" / "dog.safetensors", "np") as f:
        assert f.get_tensor("emb_params").shape == (3, 32)
    for folder, load in (("d", lambda p, n: p.load_textual_inversion(tmp_path / "d" / n / "learned_embeds.safetensors",
                                                                      token=f"<{n}>")),
                         ("k", lambda p, n: p.load_textual_inversion(tmp_path / "k" / "embeddings" / f"{n}.safetensors",
                                                                      token=f"<{n}>"))):
        pipe = fresh(tiny_base)
        for n in ("dog", "hat"):
            pipe.load_lora_weights(tmp_path / "d" / n, adapter_name=n)  # the LoRAs as in test_diffusers_format
            load(pipe, n)
        pipe.set_adapters(["dog", "hat"], [1.0, 1.0])
        ids = pipe.tokenizer.convert_tokens_to_ids(DOG3)
        rows = pipe.text_encoder.get_input_embeddings().weight[ids]
        assert torch.equal(rows, torch.from_numpy(stored["embedding"])), folder
        assert "<hat>_1" not in pipe.tokenizer.get_vocab()
        assert_same_images(pipe, vectors_reference)


def test_generate_expands_a_multi_vector_token_exactly_once(vectors_bank_readonly, vectors_reference, tiny_base,
                                                            tmp_path, monkeypatch):
    """The text states `cns generate` conditions on are those of diffusers' own load_textual_inversion + the
    pipeline's encode_prompt for the same prompt: cns hands the pipeline "<dog> dog …", which encode_prompt
    expands to "<dog> <dog>_1 <dog>_2 dog …"; expanding it before (twice in all) would read other text."""
    from diffusers import StableDiffusionPipeline

    from cns_cli.model.tokens import expand_vectors

    seen = []
    real = StableDiffusionPipeline.encode_prompt

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        seen.append(out[0])  # the prompt's states (the negative prompt's are out[1])
        return out

    monkeypatch.setattr(StableDiffusionPipeline, "encode_prompt", spy)
    rec = generate(vectors_bank_readonly, [TWO], tmp_path / "img", GenerateConfig(seed=SEED, steps=STEPS, guidance=GUIDANCE))[0]
    assert Path(rec["path"]).read_bytes() == Path(vectors_reference[TWO]["path"]).read_bytes()
    monkeypatch.undo()
    export(vectors_bank_readonly, tmp_path / "e", "embedding")
    pipe = fresh(tiny_base)
    for n in ("dog", "hat"):
        pipe.load_textual_inversion(tmp_path / "e" / n)
    encode = lambda text: pipe.encode_prompt(text, "cpu", 1, False)[0]  # noqa: E731
    with torch.no_grad():
        assert len(seen) == 1 and torch.equal(seen[0], encode(rec["text"]))
        assert not torch.equal(seen[0], encode(expand_vectors(rec["text"], pipe.tokenizer)))
    ids = pipe.tokenizer(pipe.maybe_convert_prompt(rec["text"], pipe.tokenizer)).input_ids
    dog = pipe.tokenizer.convert_tokens_to_ids(DOG3)
    assert [i for i in ids if i in dog] == dog


def test_a_3_vector_concept_goes_into_the_pipeline_export(vectors_bank_readonly, vectors_reference, tmp_path):
    from diffusers import StableDiffusionPipeline

    export(vectors_bank_readonly, tmp_path / "pipe", "pipeline")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "pipe", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert {*DOG3, "<hat>"} <= set(pipe.tokenizer.get_vocab())
    stored = Bank.open(vectors_bank_readonly).read_object(Bank.open(vectors_bank_readonly).head().concepts["dog"].embedding)
    rows = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids(DOG3)]
    assert torch.equal(rows, torch.from_numpy(stored["embedding"]))
    assert_same_images(pipe, vectors_reference)
