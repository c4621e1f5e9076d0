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
The factors, `Spec` and the compositing live in `stage`, the drawing code in `painter` (objects), `marks`
(world 2's patterns and parts) and `scenes` (backgrounds), the shared colours in `palette`; this module
re-exports their names.

Two world versions (`stage.WORLDS`) share every function here; the samplers take `world=` (default 1, the bundled
demo model's) and a Spec carries its world. World 2 adds colours and marks, and its captions name them:

    >>> spec = sample_specs(1, rng, world=2)[0]
    >>> caption(spec)           # e.g. "a big brown dog with white spots and a red collar at the left on grass"
    >>> parse_object("a white cat with a black ear and a black tail tip")
    ObjectWords(cls='cat', colour='white', marks=(('ear', 'black'), ('tail tip', 'black')), size=None)

A demo model records the world it was trained on in its folder's training.json "world" (absent: 1), which
`model_world` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .individuals import object_of
from .marks import CLASS_MARKS, MARK_KINDS, MAX_MARKS, PARTS, PATTERNS, marked_drawer, sample_marks  # noqa: F401
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
    WORLD_COLOURS,
    WORLD_MARK_COLOURS,
    WORLDS,
    Spec,
    check,
    nearest_colour,
    place,
)
from .words import (  # noqa: F401  (re-exported: the captions lived here)
    AND,
    CAPTION_PREFIXES,
    POSITION_PHRASES,
    WITH,
    ObjectWords,
    caption,
    describe,
    parse_caption,
    parse_object,
    vocabulary,
)

VOCABULARY_WORDS: tuple[str, ...] = vocabulary(1)


def model_world(folder: str | Path) -> int:
    """The world a demo model folder was trained on: its training.json "world" (1 when absent: the models made
    before world 2 existed)."""
    record = Path(folder) / "training.json"
    world = json.loads(record.read_text()).get("world", 1) if record.is_file() else 1
    if world not in WORLDS:
        from ..errors import ModelError  # a --base folder the user gave: one line, not a traceback

        raise ModelError(f"{record}: unknown world {world!r}; this version of cns knows worlds {WORLDS}")
    return int(world)


def base_world(base: str) -> int:
    """The world of the demo model a `--base` names: the bundled one ("demo") or a local folder, by its record
    (`model_world`); 1 for any other base (they were not trained on a demo world)."""
    from ..model.loading import builtin_path, resolve_base

    spec = resolve_base(base)
    if spec.kind == "builtin":
        return model_world(builtin_path(spec.location))
    return model_world(spec.location) if spec.kind == "local-dir" else 1


# --------------------------------------------------------------------------------------------- held out


def _held_out_rule(scene: str, cls: str, colour: str, world: int = 1) -> bool:
    """Fixed rule: 10 % of the triples (21 of 210 in world 1, 32 of 315 in world 2, world 1's among them). Every
    (scene, class), (class, colour) and (scene, colour) pair has at most one held-out triple, so every pair (and
    every single factor) is still seen in training with other values of the third factor."""
    return (2 * SCENES.index(scene) + CLASSES.index(cls) + 3 * WORLD_COLOURS[world].index(colour)) % 10 == 0


def held_out_triples(world: int = 1) -> frozenset[tuple[str, str, str]]:
    """The (scene, class, colour) triples of `world` that training data never shows."""
    return frozenset((s, c, k) for s in SCENES for c in CLASSES for k in WORLD_COLOURS[world]
                     if _held_out_rule(s, c, k, world))


HELD_OUT: frozenset[tuple[str, str, str]] = held_out_triples(1)
_HELD_OUT_SETS = {w: held_out_triples(w) for w in WORLDS}
_HELD_OUT_SORTED = {w: sorted(v) for w, v in _HELD_OUT_SETS.items()}


def is_held_out(spec: Spec) -> bool:
    """Whether the spec's (scene, class, colour) is one of its world's held-out (zero-shot) combinations."""
    return (spec.scene, spec.cls, spec.colour) in _HELD_OUT_SETS[spec.world]


def sample_specs(n: int, rng: np.random.Generator, held_out: bool | None = False, world: int = 1,
                 max_marks: int = MAX_MARKS) -> list[Spec]:
    """`n` specs of `world`, uniform over the factors. held_out=False: only training combinations; True: only
    held-out ones; None: any combination. World 2 specs get random marks (`marks.sample_marks`, at most
    `max_marks`), drawn after the factors, so world 1 draws exactly what it always drew."""
    colours, specs = WORLD_COLOURS[world], []
    while len(specs) < n:
        if held_out is True:
            held = _HELD_OUT_SORTED[world]
            scene, cls, colour = held[int(rng.integers(len(held)))]
        else:
            scene = SCENES[int(rng.integers(len(SCENES)))]
            cls = CLASSES[int(rng.integers(len(CLASSES)))]
            colour = colours[int(rng.integers(len(colours)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        position = POSITIONS[int(rng.integers(len(POSITIONS)))]
        spec = Spec(scene, cls, colour, size, position, world=world)
        if held_out is False and is_held_out(spec):
            continue
        if WORLD_MARK_COLOURS[world]:
            spec = Spec(scene, cls, colour, size, position, marks=sample_marks(cls, colour, rng,
                                                                              WORLD_MARK_COLOURS[world], max_marks),
                        world=world)
        specs.append(spec)
    return specs


# --------------------------------------------------------------------------------------------- render


def _object(spec: Spec) -> tuple[DrawFn, float, tuple[int, int, int]]:
    """The draw function, aspect and main colour of the spec's object (generic or individual)."""
    if spec.individual is None:
        rgb = COLOUR_RGB[spec.colour]
        return marked_drawer(spec.cls, rgb, spec.marks), CLASS_ASPECT[spec.cls], rgb
    return object_of(spec)


def render_array(spec: Spec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [64, 64, 3], object coverage float32 [64, 64] in 0..1, outline included)."""
    check(spec)
    return place(spec, *_object(spec), rng)


def render(spec: Spec, rng: np.random.Generator) -> Image.Image:
    """The spec as a 64x64 RGB image; pose, size and position jitter and the scene come from `rng`.
    Raises ValueError for an unknown factor or an individual whose class/colour the spec contradicts."""
    return Image.fromarray(render_array(spec, rng)[0], "RGB")


def render_dataset(n: int, seed: int, held_out: bool | None = False,
                   world: int = 1) -> tuple[np.ndarray, list[Spec], list[str]]:
    """`n` random generic images of `world` (uint8 [n, 64, 64, 3]), their specs and captions (see `sample_specs`
    for `held_out`). Item i depends only on (seed, i), so a longer dataset starts with the shorter one."""
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    specs: list[Spec] = []
    captions: list[str] = []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        spec = sample_specs(1, rng, held_out, world)[0]
        images[i] = render_array(spec, rng)[0]
        specs.append(spec)
        captions.append(caption(spec, rng))
    return images, specs, captions
