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
The drawing code lives in `painter` (objects) and `scenes` (backgrounds), the shared colours in `palette`; this
module re-exports their names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .painter import (  # noqa: F401  (re-exported: the drawing code lived here; individuals and tests import it)
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

SCENES = ("beach", "grass", "snow", "night", "plain")
CLASSES = ("dog", "cat", "hat", "house", "flower", "car", "ball")
COLOURS = ("red", "blue", "green", "yellow", "white", "purple")
SIZES = ("small", "big")
POSITIONS = ("left", "center", "right")

SCENE_PHRASES = {
    "beach": "on the beach",
    "grass": "on grass",
    "snow": "in the snow",
    "night": "at night",
    "plain": "on a plain background",
}
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

# Object height / width, in the object's own frame (see Painter).
CLASS_ASPECT = {"dog": 0.8, "cat": 0.86, "hat": 0.62, "house": 1.0, "flower": 1.35, "car": 0.56, "ball": 1.0}
SIZE_RANGE = {"big": (0.40, 0.55), "small": (0.22, 0.30)}  # object width as a fraction of the image width
POSITION_X = {"left": 0.25, "center": 0.5, "right": 0.75}  # horizontal centre as a fraction of the width
GROUND_Y = 0.89  # where objects rest (their base), as a fraction of the height; below every scene's horizon


@dataclass(frozen=True)
class Spec:
    """What one image shows. `individual` names a personal concept from `individuals.INDIVIDUALS`; its
    `cls` and `colour` must then be that individual's."""

    scene: str
    cls: str
    colour: str
    size: str = "big"
    position: str = "center"
    individual: str | None = None


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


# --------------------------------------------------------------------------------------------- colours


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    """The COLOURS word whose RGB is nearest (Euclidean) to `rgb`."""
    v = np.asarray(rgb, dtype=np.float64)
    return min(COLOURS, key=lambda k: float(np.sum((np.asarray(COLOUR_RGB[k], dtype=np.float64) - v) ** 2)))


# --------------------------------------------------------------------------------------------- render


def _check(spec: Spec) -> None:
    for value, allowed, what in (
        (spec.scene, SCENES, "scene"),
        (spec.cls, CLASSES, "class"),
        (spec.colour, COLOURS, "colour"),
        (spec.size, SIZES, "size"),
        (spec.position, POSITIONS, "position"),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def _object(spec: Spec) -> tuple[DrawFn, float]:
    """The draw function and aspect for the spec's object (generic or individual)."""
    if spec.individual is None:
        drawer, rgb = CLASS_DRAWERS[spec.cls], COLOUR_RGB[spec.colour]
        return (lambda p, rng: drawer(p, rng, rgb)), CLASS_ASPECT[spec.cls]
    from .individuals import INDIVIDUALS  # individuals import this module

    ind = INDIVIDUALS.get(spec.individual)
    if ind is None:
        raise ValueError(f"unknown individual {spec.individual!r}; expected one of {', '.join(INDIVIDUALS)}")
    if (spec.cls, spec.colour) != (ind.cls, ind.colour):
        raise ValueError(
            f"individual {ind.name!r} is a {ind.colour} {ind.cls}, but the spec says {spec.colour} {spec.cls}"
        )
    return ind.draw, ind.aspect


def render_array(spec: Spec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [64, 64, 3], object coverage float32 [64, 64] in 0..1, outline included)."""
    _check(spec)
    draw, aspect = _object(spec)
    img = render_scene(spec.scene, rng)
    lo, hi = SIZE_RANGE[spec.size]
    w = float(rng.uniform(lo, hi)) * IMAGE_SIZE
    h = w * aspect
    cx = POSITION_X[spec.position] * IMAGE_SIZE + _j(rng, 3.0)
    cx = min(max(cx, w / 2 + 1), IMAGE_SIZE - 1 - w / 2)
    base = GROUND_Y * IMAGE_SIZE + _j(rng, 1.5)
    mirror = bool(rng.random() < 0.5)
    painter = Painter(w, aspect, mirror)
    draw(painter, rng)
    rgb, alpha = painter.finish(outline_of(_main_rgb(spec)))
    # soft contact shadow on the ground
    shadow = _blob(cx, base + 0.5, w * 0.46, max(1.3, w * 0.06))
    img[shadow] *= 0.72
    ox = round(cx - w / 2) - painter.pad
    oy = round(base - h) - painter.pad
    cover = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    ah, aw = alpha.shape
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + aw, IMAGE_SIZE), min(oy + ah, IMAGE_SIZE)
    a = alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    sub = img[y0:y1, x0:x1]
    sub *= 1 - a[..., None]
    sub += rgb[y0 - oy : y1 - oy, x0 - ox : x1 - ox] * a[..., None]
    cover[y0:y1, x0:x1] = a
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), cover


def _main_rgb(spec: Spec):
    if spec.individual is None:
        return COLOUR_RGB[spec.colour]
    from .individuals import INDIVIDUALS

    return INDIVIDUALS[spec.individual].rgb


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
