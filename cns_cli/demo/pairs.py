"""Two objects in one image: "a red dog and a blue hat on grass".

The demo base model is trained on a share of these, so that a prompt with two concepts
("a <rex> and a <fedora> on grass") has a layout the model knows. Kept apart from `world.py` on purpose:
the evaluator's weights record a fingerprint of world.py and individuals.py, and pairs are composed from
their single-object renders without changing either.

A pair is always "first at the left, second at the right", both small, in one scene; neither object's
(scene, class, colour) triple may be a held-out one when the pair is for training. In world 2 each object of a
training pair has at most one mark ("a brown dog with a red collar and a blue hat with a white star on grass"),
so that every caption fits the demo model's 32 tokens.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .world import (
    IMAGE_SIZE,
    SCENE_PHRASES,
    Spec,
    caption,
    describe,
    is_held_out,
    render_array,
    sample_specs,
)

AND = "and"
PAIR_SHARE = 0.2  # share of two-object images in the demo model's training data
PAIR_WORDS: tuple[str, ...] = (AND,)  # words pair captions add to world.VOCABULARY_WORDS
PAIR_MARKS = 1  # marks per object in a training pair (world 2)


def _check_same_scene(first: Spec, second: Spec) -> None:
    if first.scene != second.scene:
        raise ValueError(f"a pair shares one scene; got {first.scene!r} and {second.scene!r}")


def pair_caption(first: Spec, second: Spec, rng: np.random.Generator | None = None) -> str:
    """ "a red dog and a blue hat on grass" (one in five starts "a photo of a" when `rng` is given); world 2
    names marks too: "a red dog with a white ear and an orange hat on grass". Both specs must share the scene;
    the first is the left object."""
    _check_same_scene(first, second)
    prefix = "a photo of " if rng is not None and rng.random() < 0.2 else ""
    return f"{prefix}{describe(first)} {AND} {describe(second)} {SCENE_PHRASES[first.scene]}"


def render_pair(first: Spec, second: Spec, rng: np.random.Generator) -> np.ndarray:
    """uint8 [64, 64, 3]: `first` small at the left and `second` small at the right of `first`'s scene.

    Each object is rendered on its own by `world.render_array` (individuals included); the second is
    composited over the first render with its coverage mask (its soft outline blends with its own scene's
    pixels, which is invisible at this size)."""
    _check_same_scene(first, second)
    left = replace(first, size="small", position="left")
    right = replace(second, size="small", position="right")
    img, _ = render_array(left, rng)
    top, cover = render_array(right, rng)
    a = cover[..., None]
    out = img.astype(np.float32) * (1 - a) + top.astype(np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def sample_pair(rng: np.random.Generator, world: int = 1) -> tuple[Spec, Spec]:
    """Two training specs of `world` (no held-out triple) in one scene."""
    first = sample_specs(1, rng, held_out=False, world=world, max_marks=PAIR_MARKS)[0]
    while True:
        second = replace(sample_specs(1, rng, held_out=False, world=world, max_marks=PAIR_MARKS)[0], scene=first.scene)
        if not is_held_out(second):
            return first, second


def training_set(n: int, seed: int, pair_share: float = PAIR_SHARE, world: int = 1) -> tuple[np.ndarray, list[str]]:
    """The demo model's training data: `n` images of `world` (uint8 [n, 64, 64, 3]) and captions, a `pair_share`
    of them two-object images, the rest `world` single-object renders of training combinations. Item i depends
    only on (seed, i)."""
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    captions: list[str] = []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        if rng.random() < pair_share:
            first, second = sample_pair(rng, world)
            images[i] = render_pair(first, second, rng)
            captions.append(pair_caption(first, second, rng))
        else:
            spec = sample_specs(1, rng, held_out=False, world=world)[0]
            images[i] = render_array(spec, rng)[0]
            captions.append(caption(spec, rng))
    return images, captions


def columns(image: np.ndarray, n: int) -> list[np.ndarray]:
    """The n equal columns of a 64 px image (the `--layout auto` boxes), each centred on a 64 px canvas padded
    with its own edge pixels: what the single-object evaluator can score (one object per image)."""
    w = image.shape[1]
    edges = [round(w * k / n) for k in range(n + 1)]
    out = []
    for a, b in zip(edges, edges[1:]):
        left = (w - (b - a)) // 2
        out.append(np.pad(image[:, a:b], ((0, 0), (left, w - (b - a) - left), (0, 0)), mode="edge"))
    return out
