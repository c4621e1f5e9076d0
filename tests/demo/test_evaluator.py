"""The packaged closed-world evaluator (cns_cli/data/evaluator.safetensors): it loads without pickle, reads
scene / class / colour of fresh renders, separates an individual from the other members of its class, and accepts
images of any size. Fresh renders use seeds that neither training nor the packaged validation used. (Its trainer,
tools/train_evaluator.py, and the check that the weights were trained on this world: tests/tools.)"""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import pytest
from PIL import Image

from cns_cli.demo import evaluator as E
from cns_cli.demo import world
from cns_cli.demo.individuals import individuals_of, reference_renders
from cns_cli.demo.stage import WORLD_COLOURS
from cns_cli.demo.world import render_dataset
from cns_cli.errors import ModelError
from cns_cli.model.loading import builtin_path

SEED = 424_242  # fresh: not a training or validation seed
WORLD = world.model_world(builtin_path("demo"))  # the packaged evaluator measures the bundled model's world
INDIVIDUALS = individuals_of(WORLD)


@pytest.fixture(scope="module")
def ev() -> E.Evaluator:
    import torch

    torch.set_num_threads(2)
    return E.Evaluator.load()


@pytest.fixture(scope="module")
def sample():
    images, specs, _ = render_dataset(150, seed=SEED, held_out=None, world=WORLD)
    return images, specs


def test_weights_are_safetensors_and_load_without_pickle(monkeypatch):
    import pickle

    path = files("cns_cli") / "data" / "evaluator.safetensors"
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8: 8 + header_len])  # a safetensors file: u64 header length + JSON header
    assert json.loads(header["__metadata__"][E.META_KEY])["format"] == E.FORMAT
    assert len(raw) <= 2 * 1024 * 1024

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    ev = E.Evaluator.load()
    assert ev.identities[: len(INDIVIDUALS)] == sorted(INDIVIDUALS)


def test_rejects_a_foreign_safetensors_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a"):
        E.Evaluator.load(tmp_path / "other.safetensors")


def test_packaged_report_meets_targets():
    report = json.loads((files("cns_cli") / "data" / "evaluator.json").read_text())
    v = report["validation"]
    assert v["attributes"]["n"] >= 2000
    from tools.train_evaluator import TARGETS

    attr_target, id_target = TARGETS[WORLD]  # what `train` holds the weights to (world 2's: 0.99 / 0.99)
    for k in ("scene", "class", "colour"):
        assert v["attributes"][k] >= attr_target
    assert set(v["identity"]["per_individual"]) == set(INDIVIDUALS)
    assert v["identity"]["min_auc"] >= id_target


def test_attributes_of_fresh_renders(ev, sample):
    images, specs = sample
    res = ev.prompt_alignment(images, specs)
    assert res["n"] == 150
    for k in ("scene", "class", "colour"):
        assert res[k] >= 0.9, (k, res[k])
    p = ev.predict(images[:5])
    assert len(p["class"]) == 5 and p["class_probs"].shape == (5, len(ev.classes))
    np.testing.assert_allclose(p["scene_probs"].sum(1), 1, atol=1e-5)


def test_embeddings_are_unit_vectors(ev, sample):
    e = ev.embed(sample[0][:8])
    assert e.shape == (8, 64) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


def _generic(cls: str, n: int, seed: int) -> np.ndarray:
    """`n` renders of plain members of class `cls` (any scene, colour, size, position)."""
    rng = np.random.default_rng(seed)
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    return np.stack([world.render_array(world.Spec(pick(world.SCENES), cls, pick(WORLD_COLOURS[WORLD]), pick(world.SIZES),
                                                   pick(world.POSITIONS), world=WORLD), rng)[0] for _ in range(n)])


@pytest.mark.parametrize("name,others", [("rex", ["bella"]), ("luna", ["milo"]), ("zoom", ["beetle"])])
def test_identity_separates_an_individual_from_its_class(ev, name, others):
    cls = INDIVIDUALS[name].cls
    pos = ev.identity_similarity(reference_renders(name, 16, seed=SEED, world=WORLD), name)  # not the references' seed
    neg_imgs = [reference_renders(o, 16, seed=SEED, world=WORLD) for o in others]
    neg_imgs.append(_generic(cls, 16, seed=SEED))
    neg = ev.identity_similarity(np.concatenate(neg_imgs), name)
    assert pos.shape == (16,)
    assert np.mean(pos[:, None] > neg[None, :]) >= 0.9  # ROC AUC (no ties among float scores)
    assert pos.mean() > neg.mean() + 0.2
    assert ev.nearest_individual(reference_renders(name, 4, seed=SEED, world=WORLD)).count(name) >= 3


def test_predict_accepts_pil_images_of_any_size(ev, sample):
    images = sample[0]
    small = ev.predict(images[:12])
    pil = [Image.fromarray(a).resize((160, 160), Image.BICUBIC) for a in images[:12]]
    big = ev.predict(pil)
    for k in ("scene", "class", "colour"):
        assert np.mean([a == b for a, b in zip(small[k], big[k])]) >= 0.9
    floats = ev.predict(images[:12].astype(np.float32) / 255.0)  # diffusers' output_type="np"
    assert floats["class"] == small["class"]
    one = ev.predict(Image.fromarray(images[0]).convert("RGBA").resize((48, 48)))
    assert len(one["scene"]) == 1
    assert ev.embed(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 64)


def test_the_packaged_evaluator_measures_the_bundled_model_s_world(ev, tmp_path):
    """They ship together: a world-2 model needs the world-2 evaluator (python tools/train_evaluator.py train
    --world 2), and the demo and the assessment check it (`Evaluator.check_world`)."""
    from cns_cli.model.loading import builtin_path

    assert ev.world == world.model_world(builtin_path("demo")) == world.base_world("demo")
    assert world.model_world(tmp_path) == 1  # no training.json: a model from before world 2
    (tmp_path / "training.json").write_text('{"world": 3}')
    with pytest.raises(ModelError, match="unknown world 3"):
        world.model_world(tmp_path)
