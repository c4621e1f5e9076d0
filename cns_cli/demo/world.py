"""A procedural image world: one coloured object (dog, cat, hat, ...) of some size, at some position, in one of
five scenes, drawn at 64x64 with numpy + PIL, and captioned by a small grammar.

Everything is deterministic given a `numpy.random.Generator` (or a seed): the scene background is numpy
(gradients, noise, stars, shells, snowflakes), the object is drawn with `PIL.ImageDraw` at 2x in its own
frame (`Painter`), outlined 1 px in a darker shade of its colour so that it stays visible on every scene
(white on snow, green on grass), box-downsampled and alpha-blended onto the scene with a soft shadow.

    >>> rng = np.random.default_rng(0)
    >>> spec = sample_specs(1, rng)[0]
    >>> image = render(spec, rng)                 # PIL 64x64 RGB
    >>> caption(spec, rng)                         # e.g. "a small red dog at the left on the beach"
    >>> pixels, specs, captions = render_dataset(1000, seed=0)   # uint8 [1000, 64, 64, 3]

Held-out (scene, class, colour) triples (`HELD_OUT`, about 10 %) never appear in training data
(`sample_specs(..., held_out=False)`), so a model can be tested zero-shot on combinations it never saw.
Personal concepts ("rex", "luna", ...) live in `individuals`; `render` draws one when `Spec.individual` is set.
The factors, `Spec` and the compositing live in `stage`, the drawing code in `painter` (objects) and `scenes`
(backgrounds), the shared colours in `palette`; this module re-exports their names.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .individuals import object_of
from .painter import (  # noqa: F401  (re-exported: the drawing code lived here; tests import it)
    CLASS_DRAWERS,
    DARK,
    GLASS,
    DrawFn,
    Painter,
    _j,
    draw_ball,
    draw_car,
    draw_cat,
    draw_dog,
    draw_flower,
    draw_hat,
    draw_house,
    outline_of,
    shade,
)
from .palette import COLOUR_RGB, IMAGE_SIZE, PLAIN_BACKGROUNDS  # noqa: F401  (re-exported)
from .scenes import (  # noqa: F401  (re-exported)
    _X,
    _Y,
    SCENE_DRAWERS,
    _beach,
    _blob,
    _dots,
    _grass,
    _night,
    _plain,
    _snow,
    _vgrad,
    render_scene,
)
from .stage import (  # noqa: F401  (re-exported: the factors, Spec and the compositing lived here)
    CLASS_ASPECT,
    CLASSES,
    COLOURS,
    GROUND_Y,
    POSITION_X,
    POSITIONS,
    SCENE_PHRASES,
    SCENES,
    SIZE_RANGE,
    SIZES,
    Spec,
    check,
    nearest_colour,
    place,
)

POSITION_PHRASES = {"left": "at the left", "center": "in the middle", "right": "at the right"}
CAPTION_PREFIXES = ("a", "a photo of a")

# Every word any caption can contain (sorted): a tokenizer with this vocabulary covers all captions.
VOCABULARY_WORDS: tuple[str, ...] = tuple(
    sorted(
        {
            w
            for text in (
                *CAPTION_PREFIXES,
                *SIZES,
                *COLOURS,
                *CLASSES,
                *SCENE_PHRASES.values(),
                *POSITION_PHRASES.values(),
            )
            for w in text.split()
        }
    )
)


# --------------------------------------------------------------------------------------------- held out


def _held_out_rule(scene: str, cls: str, colour: str) -> bool:
    """Fixed rule: 21 of the 210 triples (10 %). Every (scene, class), (class, colour) and (scene, colour)
    pair has at most one held-out triple, so every pair (and every single factor) is still seen in
    training with other values of the third factor."""
    return (2 * SCENES.index(scene) + CLASSES.index(cls) + 3 * COLOURS.index(colour)) % 10 == 0


HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    (s, c, k) for s in SCENES for c in CLASSES for k in COLOURS if _held_out_rule(s, c, k)
)
_HELD_OUT_SORTED = sorted(HELD_OUT)


def is_held_out(spec: Spec) -> bool:
    """Whether the spec's (scene, class, colour) is one of the held-out (zero-shot) combinations."""
    return (spec.scene, spec.cls, spec.colour) in HELD_OUT


def sample_specs(n: int, rng: np.random.Generator, held_out: bool | None = False) -> list[Spec]:
    """`n` specs, uniform over the factors. held_out=False: only training combinations; True: only
    held-out ones; None: any combination."""
    specs: list[Spec] = []
    while len(specs) < n:
        if held_out is True:
            scene, cls, colour = _HELD_OUT_SORTED[int(rng.integers(len(_HELD_OUT_SORTED)))]
        else:
            scene = SCENES[int(rng.integers(len(SCENES)))]
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            colour = COLOURS[int(rng.integers(len(COLOURS)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        position = POSITIONS[int(rng.integers(len(POSITIONS)))]
        spec = Spec(scene, cls, colour, size, position)
        if held_out is False and is_held_out(spec):
            continue
        specs.append(spec)
    return specs


# --------------------------------------------------------------------------------------------- captions


def caption(spec: Spec, rng: np.random.Generator | None = None) -> str:
    """A caption from a small grammar. With `rng` None the full form
    "a {size} {colour} {cls} {position phrase} {scene phrase}", e.g. "a big red dog in the middle on the
    beach"; with an rng the size and position words are optional (each kept with p=0.5), the position may
    come after the scene, and one in five starts "a photo of a". Lower-case ASCII words from
    VOCABULARY_WORDS only, no punctuation. An individual is captioned as its class and colour word."""
    if rng is None:
        with_size, with_pos, pos_last, prefix = True, True, False, CAPTION_PREFIXES[0]
    else:
        u = rng.random(4)  # always four draws, so the rng advances the same way for every spec
        with_size, with_pos, pos_last = bool(u[0] < 0.5), bool(u[1] < 0.5), bool(u[2] < 0.5)
        prefix = CAPTION_PREFIXES[1] if u[3] < 0.2 else CAPTION_PREFIXES[0]
    words = [prefix] + ([spec.size] if with_size else []) + [spec.colour, spec.cls]
    scene, pos = SCENE_PHRASES[spec.scene], POSITION_PHRASES[spec.position]
    if not with_pos:
        words.append(scene)
    elif pos_last:
        words += [scene, pos]
    else:
        words += [pos, scene]
    return " ".join(words)


# --------------------------------------------------------------------------------------------- render


def _object(spec: Spec) -> tuple[DrawFn, float, tuple[int, int, int]]:
    """The draw function, aspect and main colour of the spec's object (generic or individual)."""
    if spec.individual is None:
        drawer, rgb = CLASS_DRAWERS[spec.cls], COLOUR_RGB[spec.colour]
        return (lambda p, rng: drawer(p, rng, rgb)), CLASS_ASPECT[spec.cls], rgb
    return object_of(spec)


def render_array(spec: Spec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [64, 64, 3], object coverage float32 [64, 64] in 0..1, outline included)."""
    check(spec)
    return place(spec, *_object(spec), rng)


def render(spec: Spec, rng: np.random.Generator) -> Image.Image:
    """The spec as a 64x64 RGB image; pose, size and position jitter and the scene come from `rng`.
    Raises ValueError for an unknown factor or an individual whose class/colour the spec contradicts."""
    return Image.fromarray(render_array(spec, rng)[0], "RGB")


def render_dataset(n: int, seed: int, held_out: bool | None = False) -> tuple[np.ndarray, list[Spec], list[str]]:
    """`n` random generic images (uint8 [n, 64, 64, 3]), their specs and captions (see `sample_specs` for
    `held_out`). Item i depends only on (seed, i), so a longer dataset starts with the shorter one."""
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    specs: list[Spec] = []
    captions: list[str] = []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        spec = sample_specs(1, rng, held_out)[0]
        images[i] = render_array(spec, rng)[0]
        specs.append(spec)
        captions.append(caption(spec, rng))
    return images, specs, captions
