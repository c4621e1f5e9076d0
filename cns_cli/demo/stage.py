"""What every image of the demo world shares: its factors (scenes, classes, colours, sizes, positions) and their
phrases, the `Spec` of one image, and `place`, which composites one drawn object onto its scene.

`world` (generic objects, captions, datasets) and `individuals` (personal concepts) both build on this module,
so `world` can draw an individual without the two importing each other.

Two versions of the world share this code (`WORLDS`). World 1 (the bundled demo model's) has six colours and no
marks. World 2 adds three colours and `marks` ("white spots", "a red collar": `marks.py`), so that every
individual is a composition its words describe. A Spec names its world; a world-1 Spec has no marks and renders
exactly as it always has, and a world-2 Spec without marks renders as the world-1 Spec of the same factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .marks import Mark, problem
from .painter import DrawFn, Painter, _j, outline_of
from .palette import COLOUR_RGB, IMAGE_SIZE
from .scenes import _blob, render_scene

SCENES = ("beach", "grass", "snow", "night", "plain")
CLASSES = ("dog", "cat", "hat", "house", "flower", "car", "ball")
COLOURS = ("red", "blue", "green", "yellow", "white", "purple")  # world 1's
SIZES = ("small", "big")
POSITIONS = ("left", "center", "right")

WORLDS = (1, 2)
# Object colours per world; world 1's come first in world 2, in the same order (the held-out rule indexes them).
WORLD_COLOURS: dict[int, tuple[str, ...]] = {1: COLOURS, 2: COLOURS + ("brown", "orange", "pink")}
# Mark colours per world: world 1 has no marks.
WORLD_MARK_COLOURS: dict[int, tuple[str, ...]] = {1: (), 2: WORLD_COLOURS[2] + ("black",)}

SCENE_PHRASES = {
    "beach": "on the beach",
    "grass": "on grass",
    "snow": "in the snow",
    "night": "at night",
    "plain": "on a plain background",
}

# Object height / width, in the object's own frame (see Painter).
CLASS_ASPECT = {"dog": 0.8, "cat": 0.86, "hat": 0.62, "house": 1.0, "flower": 1.35, "car": 0.56, "ball": 1.0}
SIZE_RANGE = {"big": (0.40, 0.55), "small": (0.22, 0.30)}  # object width as a fraction of the image width
# World 2's small objects are wider: its marks (stripes, spots) are 1-2 px on a 14-19 px object, finer than the
# VAE's 4x4-pixel latent cell can carry, and came back as blobs (docs/demo-world.md, World 2).
WORLD_SIZE_RANGE: dict[int, dict[str, tuple[float, float]]] = {1: SIZE_RANGE, 2: {**SIZE_RANGE, "small": (0.30, 0.36)}}
POSITION_X = {"left": 0.25, "center": 0.5, "right": 0.75}  # horizontal centre as a fraction of the width
GROUND_Y = 0.89  # where objects rest (their base), as a fraction of the height; below every scene's horizon


@dataclass(frozen=True)
class Spec:
    """What one image shows. `individual` names a personal concept of the spec's world
    (`individuals.individuals_of(world)`); its `cls`, `colour` and `marks` must then be that individual's.
    `marks`: (kind, colour) pairs in `marks.MARK_KINDS` order (world 2 only)."""

    scene: str
    cls: str
    colour: str
    size: str = "big"
    position: str = "center"
    individual: str | None = None
    marks: tuple[Mark, ...] = ()
    world: int = 1


def nearest_colour(rgb: tuple[int, int, int]) -> str:
    """The COLOURS word whose RGB is nearest (Euclidean) to `rgb`."""
    v = np.asarray(rgb, dtype=np.float64)
    return min(COLOURS, key=lambda k: float(np.sum((np.asarray(COLOUR_RGB[k], dtype=np.float64) - v) ** 2)))


def check(spec: Spec) -> None:
    """ValueError naming the first factor of `spec` that is not one of its world's, or marks it cannot have."""
    if spec.world not in WORLDS:
        raise ValueError(f"unknown world {spec.world!r}; expected one of {', '.join(map(str, WORLDS))}")
    for value, allowed, what in (
        (spec.scene, SCENES, "scene"),
        (spec.cls, CLASSES, "class"),
        (spec.colour, WORLD_COLOURS[spec.world], "colour"),
        (spec.size, SIZES, "size"),
        (spec.position, POSITIONS, "position"),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    if spec.marks:
        if spec.world == 1:
            raise ValueError("world 1 has no marks (spots, collars, ...); use world=2")
        if why := problem(spec.cls, spec.colour, spec.marks, WORLD_MARK_COLOURS[spec.world]):
            raise ValueError(why)


def place(spec: Spec, draw: DrawFn, aspect: float, main_rgb, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [64, 64, 3], object coverage float32 [64, 64] in 0..1, outline included): the spec's scene,
    then the object `draw` paints (height/width `aspect`, outlined in a darker shade of `main_rgb`) at the
    spec's size and position with a soft contact shadow. Every random draw (scene, size, position, mirroring,
    pose) comes from `rng`, in that order."""
    check(spec)
    img = render_scene(spec.scene, rng)
    lo, hi = WORLD_SIZE_RANGE[spec.world][spec.size]
    w = float(rng.uniform(lo, hi)) * IMAGE_SIZE
    h = w * aspect
    cx = POSITION_X[spec.position] * IMAGE_SIZE + _j(rng, 3.0)
    cx = min(max(cx, w / 2 + 1), IMAGE_SIZE - 1 - w / 2)
    base = GROUND_Y * IMAGE_SIZE + _j(rng, 1.5)
    mirror = bool(rng.random() < 0.5)
    painter = Painter(w, aspect, mirror)
    draw(painter, rng)
    rgb, alpha = painter.finish(outline_of(main_rgb))
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
