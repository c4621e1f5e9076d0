"""The procedural demo world: determinism, shapes, vocabulary, held-out split, individuals, photo folders, and
rough checks that scenes and individuals are visually separable (nearest-centroid on simple features)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cns_cli.demo import world
from cns_cli.demo.individuals import INDIVIDUALS, Individual, individual_spec, reference_renders, render_photos
from cns_cli.demo.world import (
    CLASSES,
    COLOURS,
    HELD_OUT,
    POSITIONS,
    SCENE_PHRASES,
    SCENES,
    SIZES,
    VOCABULARY_WORDS,
    Spec,
    caption,
    is_held_out,
    render,
    render_array,
    render_dataset,
    sample_specs,
)
from cns_cli.images import load_images

ALL_TRIPLES = list(itertools.product(SCENES, CLASSES, COLOURS))


def _all_factor_specs() -> list[Spec]:
    """Every scene x class once, cycling colours, sizes and positions so each value appears several times."""
    return [
        Spec(s, c, COLOURS[i % 6], SIZES[i % 2], POSITIONS[i % 3])
        for i, (s, c) in enumerate(itertools.product(SCENES, CLASSES))
    ]


def _down(images: np.ndarray) -> np.ndarray:
    """[n, 64, 64, 3] -> [n, 192]: 8x8 block means."""
    return images.astype(np.float32).reshape(len(images), 8, 8, 8, 8, 3).mean(axis=(2, 4)).reshape(len(images), -1)


def _nearest_centroid(train_x, train_y, test_x):
    labels = sorted(set(train_y))
    ty = np.asarray(train_y)
    cents = np.stack([train_x[ty == lab].mean(axis=0) for lab in labels])
    d = ((test_x[:, None, :] - cents[None]) ** 2).sum(-1)
    return np.asarray(labels)[d.argmin(axis=1)]


# --------------------------------------------------------------------------------------------- rendering


def test_same_seed_same_pixels_and_different_seed_differs():
    spec = Spec("beach", "dog", "red", "big", "left")
    a = np.asarray(render(spec, np.random.default_rng(5)))
    b = np.asarray(render(spec, np.random.default_rng(5)))
    c = np.asarray(render(spec, np.random.default_rng(6)))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    x1, s1, c1 = render_dataset(12, seed=3)
    x2, s2, c2 = render_dataset(12, seed=3)
    assert np.array_equal(x1, x2) and s1 == s2 and c1 == c2
    x3, _, _ = render_dataset(12, seed=4)
    assert not np.array_equal(x1, x3)
    # item i depends only on (seed, i): a longer dataset starts with the shorter one
    x4, s4, c4 = render_dataset(20, seed=3)
    assert np.array_equal(x4[:12], x1) and s4[:12] == s1 and c4[:12] == c1


def test_output_types_and_shapes():
    img = render(Spec("grass", "cat", "blue"), np.random.default_rng(0))
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (64, 64)
    x, specs, caps = render_dataset(7, seed=0)
    assert x.shape == (7, 64, 64, 3) and x.dtype == np.uint8
    assert len(specs) == len(caps) == 7 and all(isinstance(s, Spec) for s in specs)
    pixels, cover = render_array(specs[0], np.random.default_rng(0))
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    assert cover.shape == (64, 64) and cover.dtype == np.float32 and 0 <= cover.min() and cover.max() <= 1


def test_every_factor_renders_where_and_as_big_as_asked():
    rng = np.random.default_rng(1)
    widths = {"small": [], "big": []}
    for spec in _all_factor_specs():
        pixels, cover = render_array(spec, rng)
        obj = cover > 0.5
        assert obj.sum() > 40, spec  # a visible object
        cols = np.nonzero(obj.any(axis=0))[0]
        rows = np.nonzero(obj.any(axis=1))[0]
        centre = (cols.min() + cols.max()) / 2 / 64
        lo, hi = {"left": (0.1, 0.42), "center": (0.38, 0.62), "right": (0.58, 0.9)}[spec.position]
        assert lo <= centre <= hi, (spec, centre)
        assert rows.max() >= 52, spec  # resting on the ground line
        widths[spec.size].append((cols.max() - cols.min() + 1) / 64)
        assert pixels[obj].std() > 0 and pixels[~obj].std() > 0
    assert max(widths["small"]) < min(widths["big"])
    assert 0.2 <= min(widths["small"]) and max(widths["big"]) <= 0.62


def test_bad_specs_are_rejected():
    rng = np.random.default_rng(0)
    for bad in (
        Spec("moon", "dog", "red"),
        Spec("beach", "horse", "red"),
        Spec("beach", "dog", "pink"),
        Spec("beach", "dog", "red", size="huge"),
        Spec("beach", "dog", "red", position="top"),
        Spec("beach", "dog", "red", individual="nobody"),
    ):
        with pytest.raises(ValueError):
            render(bad, rng)
    rex = INDIVIDUALS["rex"]
    with pytest.raises(ValueError, match="rex"):
        render(Spec("beach", "cat", rex.colour, individual="rex"), rng)
    wrong = next(c for c in COLOURS if c != rex.colour)
    with pytest.raises(ValueError, match="rex"):
        render(Spec("beach", "dog", wrong, individual="rex"), rng)


# --------------------------------------------------------------------------------------------- captions


def _words(text: str) -> list[str]:
    assert re.fullmatch(r"[a-z]+( [a-z]+)*", text), text
    return text.split()


def test_full_caption_without_rng():
    assert caption(Spec("beach", "dog", "red", "big", "left")) == "a big red dog at the left on the beach"
    assert caption(Spec("plain", "hat", "green", "small", "center")) == (
        "a small green hat in the middle on a plain background"
    )
    assert caption(Spec("night", "cat", "white", "big", "right")) == "a big white cat at the right at night"


def test_captions_use_the_vocabulary_and_name_scene_class_colour():
    assert list(VOCABULARY_WORDS) == sorted(set(VOCABULARY_WORDS))
    rng = np.random.default_rng(0)
    seen = set()
    for spec in _all_factor_specs() * 6:
        text = caption(spec, rng)
        words = _words(text)
        assert set(words) <= set(VOCABULARY_WORDS), text
        assert SCENE_PHRASES[spec.scene] in text and spec.cls in words and spec.colour in words
        seen.add(
            (
                spec.size in words,
                "the left" in text or "middle" in text or "the right" in text,
                text.startswith("a photo of"),
            )
        )
        seen.update(words)
    assert {(True, True, False), (False, False, False), (True, False, True)} <= seen  # optional parts vary
    assert set(VOCABULARY_WORDS) <= seen  # and no word in the vocabulary is dead


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(SCENES),
    st.sampled_from(CLASSES),
    st.sampled_from(COLOURS),
    st.sampled_from(SIZES),
    st.sampled_from(POSITIONS),
    st.integers(0, 2**32 - 1),
)
def test_any_spec_renders_and_captions(scene, cls, colour, size, position, seed):
    spec = Spec(scene, cls, colour, size, position)
    rng = np.random.default_rng(seed)
    assert render(spec, rng).size == (64, 64)
    assert set(_words(caption(spec, rng))) <= set(VOCABULARY_WORDS)


# --------------------------------------------------------------------------------------------- held out


def test_held_out_is_about_ten_percent_and_hides_no_factor_or_pair():
    assert HELD_OUT <= set(ALL_TRIPLES)
    assert 0.08 <= len(HELD_OUT) / len(ALL_TRIPLES) <= 0.12
    train = [t for t in ALL_TRIPLES if t not in HELD_OUT]
    for axis, values in enumerate((SCENES, CLASSES, COLOURS)):
        assert {t[axis] for t in train} == set(values)
        assert {t[axis] for t in HELD_OUT} == set(values)  # every factor takes part in zero-shot tests
    for a, b in itertools.combinations(range(3), 2):  # every pair of values is still seen in training
        assert {(t[a], t[b]) for t in train} == {(t[a], t[b]) for t in ALL_TRIPLES}
    assert all(is_held_out(Spec(*t)) for t in HELD_OUT)
    assert not any(is_held_out(Spec(*t)) for t in train)


def test_sample_specs_respects_held_out():
    rng = np.random.default_rng(0)
    train = sample_specs(3000, rng, held_out=False)
    assert len(train) == 3000 and not any(is_held_out(s) for s in train)
    test = sample_specs(300, rng, held_out=True)
    assert len(test) == 300 and all(is_held_out(s) for s in test)
    assert len({(s.scene, s.cls, s.colour) for s in test}) > 0.8 * len(HELD_OUT)
    anything = sample_specs(3000, rng, held_out=None)
    share = np.mean([is_held_out(s) for s in anything])
    assert 0.05 < share < 0.16
    for attr, values in (
        ("scene", SCENES),
        ("cls", CLASSES),
        ("colour", COLOURS),
        ("size", SIZES),
        ("position", POSITIONS),
    ):
        counts = np.array([sum(getattr(s, attr) == v for s in anything) for v in values])
        assert counts.min() > 0.7 * len(anything) / len(values), (attr, counts)  # roughly uniform
    _, specs, _ = render_dataset(30, seed=2, held_out=True)
    assert all(is_held_out(s) for s in specs)


# --------------------------------------------------------------------------------------------- individuals


def test_individuals_are_valid():
    assert len(INDIVIDUALS) >= 12
    for name, ind in INDIVIDUALS.items():
        assert isinstance(ind, Individual) and ind.name == name and re.fullmatch(r"[a-z]+", name)
        assert ind.cls in CLASSES and ind.colour in COLOURS
        assert ind.colour == world.nearest_colour(ind.rgb)
        assert ind.description
        spec = individual_spec(name, np.random.default_rng(0))
        assert (spec.cls, spec.colour, spec.individual) == (ind.cls, ind.colour, name)
        assert set(_words(caption(spec))) <= set(VOCABULARY_WORDS)
    assert len({ind.cls for ind in INDIVIDUALS.values()}) == len(CLASSES)  # every class has one


def test_reference_renders_are_deterministic_and_varied():
    a = reference_renders("milo", 6, seed=1)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, reference_renders("milo", 6, seed=1))
    assert not np.array_equal(a, reference_renders("milo", 6, seed=2))
    assert len({x.tobytes() for x in a}) == 6
    with pytest.raises(ValueError):
        reference_renders("nobody", 2, seed=0)


def _scene_classifier():
    x, specs, _ = render_dataset(250, seed=11, held_out=None)
    return _down(x), [s.scene for s in specs]


def test_render_photos_writes_a_loadable_varied_folder(tmp_path):
    folder = tmp_path / "photos" / "rex"
    paths = render_photos("rex", folder, n=6, seed=0)
    assert len(paths) == 6 and all(p.suffix == ".png" and p.parent == folder and p.exists() for p in paths)
    pixels = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    assert len({p.tobytes() for p in pixels}) == 6
    assert all(p.shape == (64, 64, 3) for p in pixels)
    loaded = load_images(folder, 64)
    assert len(loaded) == 6 and loaded.pixels.shape == (6, 3, 64, 64) and not loaded.skipped
    cx, cy = _scene_classifier()
    scenes = set(_nearest_centroid(cx, cy, _down(np.stack(pixels))))
    assert len(scenes) >= 3, scenes  # not all the same scene
    again = render_photos("rex", tmp_path / "again", n=6, seed=0)
    assert [Image.open(p).tobytes() for p in again] == [Image.open(p).tobytes() for p in paths]


# --------------------------------------------------------------------------------------------- separability


def test_scenes_are_separable_by_colour():
    x, specs, _ = render_dataset(500, seed=5, held_out=None)
    y = np.array([s.scene for s in specs])
    means = {s: x[y == s].reshape(-1, 3).astype(np.float32).mean(axis=0) for s in SCENES}
    for a, b in itertools.combinations(SCENES, 2):
        assert np.linalg.norm(means[a] - means[b]) > 20, (a, b, means[a], means[b])
    pred = _nearest_centroid(_down(x[:250]), y[:250], _down(x[250:]))
    acc = float(np.mean(pred == y[250:]))
    print(f"scene nearest-centroid accuracy {acc:.2f}")
    assert acc > 0.8


def _object_histogram(pixels: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Normalised 4x4x4 RGB histogram of the object's pixels."""
    px = pixels[cover > 0.9].astype(np.int64) // 64
    h = np.bincount(px[:, 0] * 16 + px[:, 1] * 4 + px[:, 2], minlength=64).astype(np.float32)
    return h / max(h.sum(), 1.0)


def test_individuals_differ_from_generic_members_and_each_other():
    feats, labels = [], []
    for name in INDIVIDUALS:
        for generic in (False, True):
            for i in range(16):
                rng = np.random.default_rng((7, i, generic, len(name), ord(name[0])))
                spec = individual_spec(name, rng)
                if generic:
                    spec = Spec(spec.scene, spec.cls, spec.colour, spec.size, spec.position)
                feats.append(_object_histogram(*render_array(spec, rng)))
                labels.append(("generic " if generic else "") + name)
    feats, labels = np.stack(feats), np.asarray(labels)
    train = np.arange(len(labels)) % 16 < 8
    pred = _nearest_centroid(feats[train], labels[train], feats[~train])
    acc = float(np.mean(pred == labels[~train]))
    print(f"individual-vs-generic nearest-centroid accuracy {acc:.2f} over {len(set(labels))} labels")
    assert acc > 0.8
    # class-averaged images differ as well
    for name in INDIVIDUALS:
        own = feats[labels == name].mean(axis=0)
        gen = feats[labels == "generic " + name].mean(axis=0)
        assert np.abs(own - gen).sum() > 0.2, name


def test_world_imports_no_torch():
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from cns_cli.demo import world, individuals\n"
        "world.render_dataset(2, 0); individuals.reference_renders('rex', 1, 0)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'diffusers', 'transformers'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_photo_captions_name_the_concept_and_the_scene_each_photo_shows(tmp_path):
    from cns_cli.demo.evaluator import Evaluator
    from cns_cli.prompts import training_prompt

    folder = tmp_path / "rex"
    paths = render_photos("rex", folder, n=6, seed=0, captions=True)
    plain = render_photos("rex", tmp_path / "plain", n=6, seed=0)
    # the captions do not change the photos
    assert [Image.open(p).tobytes() for p in paths] == [Image.open(p).tobytes() for p in plain]
    loaded = load_images(folder, 64)
    assert len(loaded) == 6 and all(c is not None for c in loaded.captions)
    scenes = Evaluator.load().predict([np.asarray(Image.open(p).convert("RGB")) for p in paths])["scene"]
    for caption, scene in zip(loaded.captions, scenes):
        assert caption == f"a <rex> dog {world.SCENE_PHRASES[scene]}"
        assert training_prompt("rex", "dog", caption) == caption  # used as written: it names <rex>
