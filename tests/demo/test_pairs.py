"""Two-object images for the demo model's training data: the first object at the left, the second at the right,
one scene, captions in the world's words plus "and", and no held-out triple in training data."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cns_cli.demo import pairs, world
from cns_cli.demo.world import COLOUR_RGB, Spec


def _share_near(img: np.ndarray, rgb, tol: int = 40) -> tuple[float, float]:
    """Share of pixels within `tol` of `rgb` (per channel) in the left and in the right half."""
    near = (np.abs(img.astype(int) - np.asarray(rgb)) <= tol).all(-1)
    return float(near[:, :32].mean()), float(near[:, 32:].mean())


def test_first_object_is_left_and_second_right():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        img = pairs.render_pair(Spec("plain", "ball", "red"), Spec("plain", "car", "blue"), rng)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        red_l, red_r = _share_near(img, COLOUR_RGB["red"])
        blue_l, blue_r = _share_near(img, COLOUR_RGB["blue"])
        assert red_l > 0.03 and red_r < 0.002, (seed, red_l, red_r)
        assert blue_r > 0.008 and blue_l < 0.002, (seed, blue_l, blue_r)


def test_individuals_render_in_pairs_and_scenes_must_match():
    from cns_cli.demo.individuals import INDIVIDUALS

    rex, fedora = INDIVIDUALS["rex"], INDIVIDUALS["fedora"]
    img = pairs.render_pair(Spec("grass", rex.cls, rex.colour, individual="rex"),
                            Spec("grass", fedora.cls, fedora.colour, individual="fedora"), np.random.default_rng(0))
    assert img.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="one scene"):
        pairs.render_pair(Spec("grass", "dog", "red"), Spec("snow", "hat", "blue"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="one scene"):
        pairs.pair_caption(Spec("grass", "dog", "red"), Spec("snow", "hat", "blue"))


def test_pair_caption_reads_like_the_world():
    cap = pairs.pair_caption(Spec("beach", "dog", "red"), Spec("beach", "hat", "blue"))
    assert cap == "a red dog and a blue hat on the beach"
    words = set(world.VOCABULARY_WORDS) | set(pairs.PAIR_WORDS)
    rng = np.random.default_rng(0)
    for _ in range(50):
        first, second = pairs.sample_pair(rng)
        assert set(pairs.pair_caption(first, second, rng).split()) <= words


_TRIPLE = re.compile(r"(\w+) (" + "|".join(world.CLASSES) + r")\b")


def _triples(caption: str) -> list[tuple[str, str, str]]:
    scene = next(s for s, phrase in world.SCENE_PHRASES.items() if phrase in caption)
    return [(scene, cls, colour) for colour, cls in _TRIPLE.findall(caption) if colour in world.COLOURS]


def test_training_set_mixes_pairs_in_and_never_shows_a_held_out_triple():
    images, captions = pairs.training_set(400, seed=3)
    assert images.shape == (400, 64, 64, 3)
    n_pairs = sum(" and " in c for c in captions)
    assert 0.13 < n_pairs / 400 < 0.27  # PAIR_SHARE = 0.2
    for c in captions:
        t = _triples(c)
        assert len(t) == (2 if " and " in c else 1), c
        assert not any(x in world.HELD_OUT for x in t), c
    again_images, again = pairs.training_set(50, seed=3)  # item i depends only on (seed, i)
    assert again == captions[:50] and np.array_equal(again_images, images[:50])
