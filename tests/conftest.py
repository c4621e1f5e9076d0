"""Shared fixtures. Nothing here touches the network: HF_HUB_OFFLINE is forced before any HF import."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.pop("CNS_BANK", None)
os.environ.pop("CNS_DEBUG", None)

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    """A random tiny SD pipeline saved with save_pretrained; loaded by tests through the real loading code."""
    from cns_cli.model.tiny import save_tiny_pipeline

    return str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe", seed=0))


@pytest.fixture(scope="session")
def tiny_demo_base(tiny_base, tmp_path_factory) -> str:
    """tiny_base recorded as a model of the bundled demo world (training.json "world", as the trainer writes it), so
    that the demo, the assessment and the bench read it with the bundled evaluator; still random weights."""
    import json
    import shutil

    from cns_cli.demo.world import base_world

    out = tmp_path_factory.mktemp("tiny-demo") / "pipe"
    shutil.copytree(tiny_base, out)
    (out / "training.json").write_text(json.dumps({"world": base_world("demo")}) + "\n")
    return str(out)


@pytest.fixture(scope="session")
def tiny_sd2v(tmp_path_factory) -> str:
    """A random tiny SD 2.x pipeline (OpenCLIP-style text encoder, v-prediction), saved with save_pretrained."""
    from cns_cli.model.tiny import save_tiny_pipeline

    return str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd2v") / "pipe", seed=0, family="sd2"))


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> str:
    """A random tiny SDXL pipeline (two text encoders, 32 and 64 wide; added conditioning), saved with save_pretrained."""
    from cns_cli.model.tiny import save_tiny_pipeline

    return str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sdxl") / "pipe", seed=0, family="sdxl"))


FAMILY_BASES = {"sd2": "tiny_sd2v", "sdxl": "tiny_sdxl"}  # the families besides SD 1.x (tiny_base)


class _FamilyBanks:
    """family -> a bank on that family's tiny base with <dog> learned through the CLI (3 steps), built on first use
    and shared by every test module that only reads it (learning on SDXL is the slow part)."""

    def __init__(self, request, root, photos):
        self.request, self.root, self.photos, self.banks = request, root, photos, {}

    def __getitem__(self, family: str):
        if family not in self.banks:
            from tests.clitools import cns

            base = self.request.getfixturevalue(FAMILY_BASES[family])
            path = self.root / f"{family}-dog.cnsbank"
            r = cns("--bank", path, "learn", "dog", self.photos, "--class", "dog", "--base", base, "--steps", "3",
                    "--score-steps", "1")
            assert r.exit_code == 0, r.stderr
            self.banks[family] = path
        return self.banks[family]


@pytest.fixture(scope="module", params=list(FAMILY_BASES))
def family(request) -> str:
    """Each family besides SD 1.x in turn (a module's tests run once per family)."""
    return request.param


@pytest.fixture(scope="module")
def family_base(family, request) -> str:
    """The family's tiny pipeline folder."""
    return request.getfixturevalue(FAMILY_BASES[family])


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """cache(folder, "org/name") puts a pipeline folder into a fresh local Hugging Face cache as that hub id's
    "main" snapshot (what a download leaves), so hub ids resolve offline."""
    import shutil

    import huggingface_hub

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    def put(folder, repo_id: str, commit: str = "0123abcd"):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        shutil.copytree(folder, repo / "snapshots" / commit)
        return repo

    return put


@pytest.fixture(scope="session")
def family_dog_banks(request, dog_photos, tmp_path_factory) -> _FamilyBanks:
    return _FamilyBanks(request, tmp_path_factory.mktemp("family-banks"), dog_photos)


def _photos(folder, colour, shape: str, n: int = 4, seed: int = 0):
    """A few 96 px 'photos' of one made-up object at varied positions (PNG), like a user's folder."""
    import random

    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        im = Image.new("RGB", (96, 96), tuple(rng.randrange(60, 200) for _ in range(3)))
        d = ImageDraw.Draw(im)
        x, y = rng.randrange(8, 40), rng.randrange(8, 40)
        (d.ellipse if shape == "round" else d.rectangle)([x, y, x + 44, y + 44], fill=colour)
        d.rectangle([x + 6, y + 30, x + 38, y + 36], fill=(250, 250, 250))
        im.save(folder / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="session")
def dog_photos(tmp_path_factory):
    return _photos(tmp_path_factory.mktemp("photos") / "dog", (140, 80, 20), "round", seed=1)


@pytest.fixture(scope="session")
def hat_photos(tmp_path_factory):
    return _photos(tmp_path_factory.mktemp("photos") / "hat", (20, 40, 160), "square", seed=2)


@pytest.fixture(scope="session")
def dog_bank_readonly(tiny_base, dog_photos, tmp_path_factory):
    """A bank on the tiny base holding <dog> (class dog, 8 steps), learned once for every test that only reads
    it: generate, inspect, dry runs, refused inputs. A test that writes to a bank makes its own."""
    from cns_cli.learn import LearnConfig, learn

    path = tmp_path_factory.mktemp("shared") / "dog.cnsbank"
    learn(path, "dog", dog_photos, class_word="dog", base=tiny_base, config=LearnConfig(steps=8, score_steps=2))
    return path


@pytest.fixture(scope="session")
def dog_hat_bank_readonly(dog_bank_readonly, hat_photos, tmp_path_factory):
    """The shared dog bank plus <hat> (class hat, 8 steps), for tests that only read it."""
    import shutil

    from cns_cli.learn import LearnConfig, learn

    path = tmp_path_factory.mktemp("shared") / "dog-hat.cnsbank"
    shutil.copytree(dog_bank_readonly, path)
    learn(path, "hat", hat_photos, class_word="hat", config=LearnConfig(steps=8, score_steps=2))
    return path


@pytest.fixture(scope="session")
def vectors_bank_readonly(tiny_base, dog_photos, hat_photos, tmp_path_factory):
    """A bank on the tiny base holding <dog> with a 3-vector token (`--vectors 3`) and then <hat> with one vector,
    10 steps each at lr 5e-3 (so that the images move), for every test that only reads it."""
    from cns_cli.learn import LearnConfig, learn

    path = tmp_path_factory.mktemp("shared") / "vectors.cnsbank"
    for name, photos, k in (("dog", dog_photos, 3), ("hat", hat_photos, 1)):
        learn(path, name, photos, class_word=name, base=tiny_base,
              config=LearnConfig(steps=10, score_steps=2, lr=5e-3, vectors=k))
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails loudly (exit 101 through the CLI), so an input error reported with exit 2 came
    before loading."""
    from cns_cli.model import loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(loading, "load_pipeline", refuse)
