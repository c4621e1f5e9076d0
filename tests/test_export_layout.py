"""`cns export --format pipeline` writes the hub's folder layout (issue 34), so that transformers 4.x, diffusers
with it and ComfyUI's diffusers loader read every weight and the concepts' tokens, not only transformers 5:
the same weight files with the same key names as the base model's own files (every CLIP text encoder under
`text_model.`), one file per component, and the slow tokenizer's files with the added tokens beside the fast
one's. The loaders themselves are run by tools/check_pipeline_export.py and tools/check_comfyui.py (their results:
docs/export.md); CI has neither transformers 4.x nor ComfyUI, so these tests pin the layout those checks passed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from cns_cli.bank import Bank
from cns_cli.export import export
from cns_cli.learn import LearnConfig, learn
from cns_cli.model.saving import hub_key
from tests.clitools import cns

SLOW_FILES = {"vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json"}


def weights(folder: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """relative path of each .safetensors file -> {key: shape}, read from the headers only."""
    out = {}
    for p in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(p), "np") as f:
            out[p.relative_to(folder).as_posix()] = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return out


def tokens_of(bank: Path) -> list[str]:
    """Every token the bank's concepts add to each tokenizer: `<dog>`, or `<dog>`, `<dog>_1`, … for k vectors."""
    b = Bank.open(bank)
    head = b.head()
    out = []
    for name, c in sorted(head.concepts.items(), key=lambda nc: (nc[1].learned_in, nc[0])):
        k = b.read_object(c.embedding)["embedding"].shape[0]
        out += [c.token] + [f"{c.token}_{i}" for i in range(1, k)]
    return out


def assert_hub_layout(exported: Path, base: Path, added: list[str]) -> None:
    """The export's weight files, key names and shapes are the base folder's (token embeddings: + the added rows),
    and each tokenizer folder has the slow files with the added tokens at the fast tokenizer's ids."""
    ours, theirs = weights(exported), weights(base)
    assert set(ours) == set(theirs), "the same weight files, one per component (no shards)"
    for path, keys in theirs.items():
        assert set(ours[path]) == set(keys), f"{path}: key names differ from the base's"
        for key, shape in keys.items():
            grown = (shape[0] + len(added), *shape[1:]) if key.endswith("token_embedding.weight") else shape
            assert ours[path][key] == grown, f"{path}: {key}"
    assert not list(exported.rglob("*.index.json")), "a sharded component: ComfyUI's diffusers loader reads none"
    for folder in sorted(p.parent for p in exported.rglob("tokenizer.json")):
        from tokenizers.models import BPE
        from transformers import CLIPTokenizer

        assert SLOW_FILES <= {p.name for p in folder.iterdir()}, folder.name
        fast = CLIPTokenizer.from_pretrained(folder)
        ids = fast.convert_tokens_to_ids(added)
        assert json.loads((folder / "added_tokens.json").read_text()) == dict(zip(added, ids))
        vocab, _ = BPE.read_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
        assert vocab == fast.backend_tokenizer.get_vocab(with_added_tokens=False)  # the slow BPE is the fast one's
        assert ids == list(range(len(vocab), len(vocab) + len(added)))  # added after the vocabulary, in order


def test_tiny_bases_have_the_hub_layout(tiny_base, tiny_sdxl):
    """The fixtures stand in for hub models, so they have their layout: every CLIP text encoder key under
    `text_model.` (the 2nd SDXL encoder's `text_projection.weight` beside it), slow tokenizer files."""
    for base in (Path(tiny_base), Path(tiny_sdxl)):
        for path, keys in weights(base).items():
            if path.startswith("text_encoder"):
                assert all(hub_key(k) == k for k in keys) and any(k.startswith("text_model.") for k in keys)
        assert SLOW_FILES - {"added_tokens.json"} <= {p.name for p in (base / "tokenizer").iterdir()}


def test_hub_key():
    assert hub_key("embeddings.token_embedding.weight") == "text_model.embeddings.token_embedding.weight"
    assert hub_key("text_model.final_layer_norm.bias") == "text_model.final_layer_norm.bias"
    assert hub_key("text_projection.weight") == "text_projection.weight"


def test_sd1_pipeline_export_has_the_base_layout(vectors_bank_readonly, tiny_base, tmp_path):
    """3-vector <dog> and <hat>: four tokens added."""
    export(vectors_bank_readonly, tmp_path / "pipe", "pipeline")
    added = tokens_of(vectors_bank_readonly)
    assert added == ["<dog>", "<dog>_1", "<dog>_2", "<hat>"]
    assert_hub_layout(tmp_path / "pipe", Path(tiny_base), added)


def test_sd2_and_sdxl_pipeline_exports_have_the_base_layout(family, family_dog_banks, family_base, tmp_path):
    bank = family_dog_banks[family]
    export(bank, tmp_path / "pipe", "pipeline")
    assert_hub_layout(tmp_path / "pipe", Path(family_base), tokens_of(bank))


def test_a_base_saved_without_the_prefix_exports_with_it(tiny_base, dog_photos, tmp_path):
    """A base folder that transformers 5 wrote itself (a CLIPTextModel built in memory and saved: no `text_model.`
    prefix, no slow tokenizer files; the bundled demo model is one) still exports in the hub's layout."""
    from cns_cli.model.loading import load_pipeline, resolve_base
    from cns_cli.model.tiny import build_tiny_pipeline

    plain = tmp_path / "plain"
    build_tiny_pipeline(seed=0).save_pretrained(plain, safe_serialization=True)
    assert not any(k.startswith("text_model.") for k in weights(plain)["text_encoder/model.safetensors"])
    assert load_pipeline(resolve_base(str(plain))) is not None
    bank = tmp_path / "b.cnsbank"
    learn(bank, "dog", dog_photos, class_word="dog", base=str(plain), config=LearnConfig(steps=1, score_steps=1))
    export(bank, tmp_path / "pipe", "pipeline")
    assert_hub_layout(tmp_path / "pipe", Path(tiny_base), ["<dog>"])  # the same model saved in the hub's layout


def test_a_single_file_base_exports_the_hub_layout(tiny_base, dog_photos, tmp_path):
    """The checkpoint A1111 and ComfyUI users have: diffusers builds its text encoder in memory, which transformers 5
    then saved without the prefix."""
    from cns_cli.model.loading import load_pipeline, resolve_base
    from tools.ldm_checkpoint import config_folder, save_single_file

    ckpt = save_single_file(load_pipeline(resolve_base(tiny_base)), tmp_path / "model.safetensors")
    configs = config_folder(tiny_base, tmp_path / "configs")
    r = cns("--bank", tmp_path / "b.cnsbank", "learn", "dog", dog_photos, "--class", "dog", "--base", ckpt,
            "--config", configs, "--steps", "1", "--score-steps", "1")
    assert r.exit_code == 0, r.stderr
    export(tmp_path / "b.cnsbank", tmp_path / "pipe", "pipeline")
    assert_hub_layout(tmp_path / "pipe", Path(tiny_base), ["<dog>"])


def test_a_component_over_the_default_shard_size_stays_one_file(dog_bank_readonly, tiny_base, tmp_path, monkeypatch):
    """SDXL's float32 UNet (10.3 GB) is over diffusers' default shard size (10 GB); shards would leave ComfyUI's
    diffusers loader without `diffusion_pytorch_model.safetensors`. Here the default is made 20 KB."""
    from diffusers import ModelMixin

    real = ModelMixin.save_pretrained

    def small_default(self, save_directory, *args, max_shard_size="20KB", **kwargs):
        return real(self, save_directory, *args, max_shard_size=max_shard_size, **kwargs)

    monkeypatch.setattr(ModelMixin, "save_pretrained", small_default)
    export(dog_bank_readonly, tmp_path / "pipe", "pipeline")
    assert_hub_layout(tmp_path / "pipe", Path(tiny_base), ["<dog>"])
