"""Personal concepts for the demo world: distinctive individuals ("rex", "luna", ...) that a user would teach
with `cns learn rex ./photos`. Each differs from the generic members of its class, and from the other
individuals, in ways a small CNN can see at 64 px (colours, patches, stripes, shape).

    >>> render_photos("rex", Path("photos/rex"), n=6, seed=0)   # a user's photo folder, PNGs
    >>> reference_renders("rex", 32, seed=1)                     # uint8 [32, 64, 64, 3] for identity scores
    >>> render(Spec("snow", "dog", "red", "small", "left", individual="rex"), rng)

`Individual.colour` is the COLOURS word nearest (in RGB) to the individual's main colour `rgb`: the word its
captions use and the colour label an evaluator should expect.

World 2 (`individuals_of(2)`) has the same twelve names, each defined by its description in the world's words
("a white cat with a black ear and a black tail tip") and drawn as exactly that composition of class, colour and
marks, so a base model trained on world 2 can draw every individual from words. The functions here take
`world=` (default 1: the bundled demo model's world, whose individuals have drawings of their own).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .marks import Mark, article, marked_drawer
from .painter import GLASS, DrawFn, Painter, _j, draw_cat, draw_dog, draw_flower, draw_house, shade
from .palette import COLOUR_RGB
from .stage import CLASS_ASPECT, POSITIONS, SCENE_PHRASES, SCENES, SIZES, WORLDS, Spec, check, nearest_colour, place
from .words import parse_object

BLACK = (22, 22, 26)
WHITE = (246, 246, 246)
RED = (225, 25, 30)
YELLOW = (250, 212, 20)
TYRE = (30, 30, 32)
HUB = (165, 165, 170)


@dataclass(frozen=True)
class Individual:
    """One personal concept: its name, class, colour word (nearest COLOURS word to `rgb`), and the function
    that draws it in a `Painter` frame (pose jitter from the rng; size, position and scene come from
    `world.render`). In world 2 also its marks, and `description` is a caption of them."""

    name: str
    cls: str
    colour: str
    draw: DrawFn = field(repr=False)
    rgb: tuple[int, int, int] = (0, 0, 0)
    description: str = ""
    marks: tuple[Mark, ...] = ()
    world: int = 1

    @property
    def aspect(self) -> float:
        return CLASS_ASPECT[self.cls]

    @property
    def plain(self) -> str:
        """Its colour and class only, as a caption says them ("an orange cat"): what the base draws without the
        concept, the floor a learned concept is compared with."""
        return f"{article(self.colour)} {self.colour} {self.cls}"


# --------------------------------------------------------------------------------------------- drawings


def _rex(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["rex"].rgb
    g = draw_dog(p, rng, rgb, ear=(78, 44, 20))
    bx0, by0, bx1, _by1 = g["body"]
    spots = [(0.25, 0.38), (0.42, 0.46), (0.55, 0.36), (0.33, 0.52)]
    for sx, sy in spots[: int(rng.integers(3, 5))]:
        r = 0.055 + _j(rng, 0.01)
        x, y = bx0 + (bx1 - bx0) * (sx + _j(rng, 0.04)) / 0.76, sy + (by0 - 0.30)
        p.ellipse(x - r * 1.2, y - r, x + r * 1.2, y + r, WHITE, part=False)
    hx, hy, _ = g["head"]
    p.line([(hx - 0.15, hy + 0.05), (hx - 0.03, hy + 0.17)], 0.075, RED, part=False)  # collar
    p.circle(hx - 0.05, hy + 0.14, 0.03, YELLOW, part=False)  # tag


def _bella(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["bella"].rgb
    g = draw_dog(p, rng, rgb, ear=(14, 16, 40), eye=(225, 225, 225), nose=(120, 120, 130))
    _bx0, by0, bx1, _by1 = g["body"]
    hx, hy, _ = g["head"]
    p.ellipse(bx1 - 0.17, by0 + 0.02, bx1 + 0.03, by0 + 0.27, WHITE, part=False)  # chest patch
    p.polygon([(hx - 0.16, hy + 0.04), (hx + 0.04, hy + 0.13), (hx - 0.13, hy + 0.30)], YELLOW)  # bandana


def _milo(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["milo"].rgb
    dark = (130, 58, 16)
    g = draw_cat(p, rng, rgb, eye=(90, 190, 60))
    bx0, by0, bx1, _by1 = g["body"]
    for i in range(5):
        x = bx0 + 0.08 + i * (bx1 - bx0 - 0.12) / 4
        p.line([(x - 0.02, by0 - 0.01), (x + 0.02, by0 + 0.13)], 0.045, dark, part=False)
    for t in (0.35, 0.6, 0.85):  # tail rings
        (x0, y0), (x1, y1) = g["tail"][1], g["tail"][3]
        x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
        p.line([(x - 0.05, y), (x + 0.05, y - 0.01)], 0.035, dark, part=False)
    hx, hy, hr = g["head"]
    for dx in (-0.04, 0.0, 0.04):
        p.line([(hx + dx, hy - hr), (hx + dx, hy - hr + 0.07)], 0.025, dark, part=False)


def _luna(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["luna"].rgb
    g = draw_cat(p, rng, rgb, ears=(rgb, BLACK), tail_tip=BLACK)
    hx, hy, _ = g["head"]
    for dx in (-0.06, 0.06):
        p.circle(hx + dx, hy - 0.01, 0.048, (30, 110, 250), part=False)
        p.circle(hx + dx, hy - 0.01, 0.018, BLACK, part=False)


def _fedora(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["fedora"].rgb
    a = p.aspect
    p.ellipse(0.0, a - 0.17, 1.0, a, shade(rgb, 0.82))
    dent = 0.10 + _j(rng, 0.03)
    p.polygon(
        [(0.22, a - 0.08), (0.25, 0.12), (0.35, 0.03), (0.5, dent), (0.65, 0.03), (0.75, 0.12), (0.78, a - 0.08)],
        rgb,
    )
    y0, y1 = a - 0.26, a - 0.12
    cell = 0.07
    for i in range(9):
        x = 0.2 + i * cell
        p.rect(x, y0, x + cell, y1, RED if i % 2 == 0 else WHITE, part=False)


def _cap(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["cap"].rgb
    a = p.aspect
    cy = a - 0.06
    ry = cy - 0.06 + _j(rng, 0.02)
    p.ellipse(0.52, a - 0.13, 1.0, a, shade(rgb, 0.7))  # visor
    p.top_half_ellipse(0.06, cy - ry, 0.78, cy + ry, rgb)
    p.rect(0.06, cy - 0.02, 0.78, a, rgb)
    p.circle(0.42, cy - ry + 0.01, 0.04, shade(rgb, 0.7))  # button
    p.star(0.42, cy - ry * 0.5, 0.15, WHITE)


def _cottage(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["cottage"].rgb
    green = (30, 150, 60)
    g = draw_house(p, rng, rgb, roof=(120, 52, 48), door=None, chimney=True)
    dx0, _, dx1, _ = g["door"]
    dx0, dx1 = dx0 - 0.01, dx1 + 0.02
    p.rect(dx0, 0.78, dx1, 1.0, green, part=False)
    p.ellipse(dx0, 0.66, dx1, 0.90, green, part=False)
    p.circle(dx1 - 0.04, 0.86, 0.02, YELLOW, part=False)


def _bloom(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["bloom"].rgb
    k = int(rng.integers(3, 5))
    draw_flower(p, rng, rgb, petals=[rgb, (250, 140, 20)] * k, centre=(105, 55, 20))


def _car_base(p: Painter, wheel_y: float, wr: float = 0.12) -> None:
    for wx in (0.22, 0.78):
        p.circle(wx, wheel_y, wr, TYRE)
        p.circle(wx, wheel_y, 0.05, HUB, part=False)


def _beetle(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["beetle"].rgb
    a = p.aspect
    wy = a - 0.12
    top = 0.0 + _j(rng, 0.02)
    p.rect(0.0, wy - 0.09, 1.0, wy + 0.03, rgb, radius=0.05)
    p.top_half_ellipse(0.03, top, 0.97, 2 * wy - top, rgb)
    for wx in (0.22, 0.78):
        p.circle(wx, wy - 0.02, 0.16, shade(rgb, 0.9))  # fenders
    p.top_half_ellipse(0.25, top + 0.07, 0.75, 2 * (top + 0.27) - (top + 0.07), GLASS, part=False)
    p.rect(0.49, top + 0.05, 0.53, top + 0.28, rgb, part=False)
    p.rect(0.0, top + 0.30, 1.0, top + 0.37, WHITE, part=False)  # racing stripe
    p.rect(0.93, wy - 0.12, 1.0, wy - 0.07, (250, 240, 170), part=False)
    _car_base(p, wy)


def _zoom(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["zoom"].rgb
    a = p.aspect
    wy = a - 0.12
    roof = 0.0 + _j(rng, 0.015)
    p.polygon([(0.26, 0.22), (0.36, roof), (0.64, roof), (0.76, 0.22)], rgb)
    p.polygon([(0.0, 0.18), (0.3, 0.17), (0.7, 0.18), (1.0, 0.28), (1.0, wy + 0.02), (0.0, wy + 0.02)], rgb)
    p.rect(0.0, 0.08, 0.12, 0.13, shade(rgb, 0.6))  # spoiler
    p.rect(0.05, 0.10, 0.08, 0.2, shade(rgb, 0.6))
    cell = 0.068
    for r in range(3):  # the whole cabin is checkered
        for c in range(8):
            x, y = 0.24 + c * cell, roof + r * cell
            p.rect(x, y, x + cell, y + cell, BLACK if (r + c) % 2 == 0 else WHITE, part=False)
    p.circle(0.5, 0.33, 0.07, WHITE, part=False)  # racing roundel on the door
    p.circle(0.5, 0.33, 0.035, BLACK, part=False)
    p.rect(0.93, 0.27, 1.0, 0.31, (250, 240, 170), part=False)
    _car_base(p, wy)


def _ball_highlight(p: Painter, rng, rgb) -> None:
    hx, hy = 0.32 + _j(rng, 0.04), 0.3 + _j(rng, 0.04)
    p.ellipse(hx - 0.07, hy - 0.05, hx + 0.08, hy + 0.06, shade(rgb, 1.6), part=False)


def _globe(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["globe"].rgb
    land = (50, 170, 60)
    p.circle(0.5, 0.5, 0.5, shade(rgb, 0.75))
    p.circle(0.47, 0.47, 0.45, rgb, part=False)
    turn = rng.uniform(0, 2 * math.pi)
    for i in range(3):
        ang = turn + i * 2.1
        cx, cy = 0.5 + 0.25 * math.cos(ang), 0.5 + 0.25 * math.sin(ang)
        for _ in range(3):
            r = rng.uniform(0.08, 0.15)
            x, y = cx + _j(rng, 0.1), cy + _j(rng, 0.1)
            p.circle(x, y, r, land, part=False)
    _ball_highlight(p, rng, rgb)


def _stripy(p: Painter, rng) -> None:
    rgb = INDIVIDUALS["stripy"].rgb
    p.circle(0.5, 0.5, 0.5, shade(rgb, 0.75))
    p.circle(0.47, 0.47, 0.45, rgb, part=False)
    tilt = 0.2 + _j(rng, 0.1)
    for off in (-0.32, 0.0, 0.32):
        c = 0.5 + off
        p.polygon(
            [(c - 0.075 - tilt, 0.0), (c + 0.075 - tilt, 0.0), (c + 0.075 + tilt, 1.0), (c - 0.075 + tilt, 1.0)],
            BLACK,
            part=False,
        )
    _ball_highlight(p, rng, rgb)


# --------------------------------------------------------------------------------------------- registry


def _make(name: str, cls: str, rgb: tuple[int, int, int], draw: DrawFn, description: str) -> Individual:
    return Individual(name, cls, nearest_colour(rgb), draw, rgb, description)


INDIVIDUALS: dict[str, Individual] = {
    ind.name: ind
    for ind in (
        _make("rex", "dog", (128, 72, 36), _rex, "brown dog with white spots and a red collar"),
        _make("bella", "dog", (30, 36, 105), _bella, "blue-black dog with a white chest patch and a yellow bandana"),
        _make("milo", "cat", (236, 136, 44), _milo, "ginger cat with dark stripes"),
        _make("luna", "cat", (246, 246, 246), _luna, "white cat with one black ear, a black tail tip, blue eyes"),
        _make("fedora", "hat", (118, 92, 150), _fedora, "greyish-purple fedora with a striped red/white band"),
        _make("cap", "hat", (30, 72, 205), _cap, "blue baseball cap with a white star"),
        _make("cottage", "house", (226, 104, 126), _cottage, "pink house with a round green door and a chimney"),
        _make("bloom", "flower", (150, 50, 200), _bloom, "flower with alternating purple and orange petals"),
        _make("beetle", "car", (30, 172, 152), _beetle, "turquoise beetle-shaped car with a white racing stripe"),
        _make("zoom", "car", (215, 30, 30), _zoom, "red sports car with a checkered cabin and a racing roundel"),
        _make("globe", "ball", (40, 95, 215), _globe, "blue ball with green continent blobs"),
        _make("stripy", "ball", (245, 210, 30), _stripy, "yellow ball with black stripes"),
    )
}


# World 2: the same names, each exactly the composition its description names (the order of world 1's).
DESCRIPTIONS_V2: dict[str, str] = {
    "rex": "a brown dog with white spots and a red collar",
    "bella": "a blue dog with a yellow collar and a black ear",
    "milo": "an orange cat with brown stripes",
    "luna": "a white cat with a black ear and a black tail tip",
    "fedora": "a purple hat with a red band",
    "cap": "a blue hat with a white star",
    "cottage": "a pink house with a green door",
    "bloom": "a purple flower with orange stripes",
    "beetle": "a green car with white stripes",
    "zoom": "a red car with a black cabin and a white roundel",
    "globe": "a blue ball with green spots",
    "stripy": "a yellow ball with black stripes",
}


def _composed(name: str, description: str) -> Individual:
    cls, colour, marks, _ = parse_object(description)
    rgb = COLOUR_RGB[colour]
    return Individual(name, cls, colour, marked_drawer(cls, rgb, marks), rgb, description, marks, world=2)


INDIVIDUALS_V2: dict[str, Individual] = {name: _composed(name, text) for name, text in DESCRIPTIONS_V2.items()}
_BY_WORLD = {1: INDIVIDUALS, 2: INDIVIDUALS_V2}


def individuals_of(world: int = 1) -> dict[str, Individual]:
    """The individuals of `world` (the same names in every world)."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; expected one of {', '.join(map(str, WORLDS))}")
    return _BY_WORLD[world]


# --------------------------------------------------------------------------------------------- rendering


def _get(name: str, world: int = 1) -> Individual:
    known = individuals_of(world)
    try:
        return known[name]
    except KeyError:
        raise ValueError(f"unknown individual {name!r}; expected one of {', '.join(known)}") from None


def object_of(spec: Spec) -> tuple[DrawFn, float, tuple[int, int, int]]:
    """The draw function, aspect and main colour of the individual `spec` shows (in the spec's world). ValueError
    for an unknown individual, or a spec whose class, colour or marks are not the individual's."""
    ind = _get(spec.individual, spec.world)
    if (spec.cls, spec.colour, spec.marks) != (ind.cls, ind.colour, ind.marks):
        what = ind.description if ind.marks else f"a {ind.colour} {ind.cls}"  # world 2's words, or world 1's
        said = f"{spec.colour} {spec.cls}" + (f" with marks {spec.marks}" if spec.marks else "")
        raise ValueError(f"individual {ind.name!r} of world {ind.world} is {what}, but the spec says {said}")
    return ind.draw, ind.aspect, ind.rgb


def _render_array(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """An individual's spec drawn as `world.render_array` draws it: uint8 [64, 64, 3]."""
    check(spec)
    return place(spec, *object_of(spec), rng)[0]


def individual_spec(
    name: str,
    rng: np.random.Generator,
    scene: str | None = None,
    size: str | None = None,
    position: str | None = None,
    world: int = 1,
) -> Spec:
    """A Spec showing the individual of `world`; scene, size and position are random where not given."""
    ind = _get(name, world)
    scene = scene if scene is not None else SCENES[int(rng.integers(len(SCENES)))]
    size = size if size is not None else SIZES[int(rng.integers(len(SIZES)))]
    position = position if position is not None else POSITIONS[int(rng.integers(len(POSITIONS)))]
    return Spec(scene, ind.cls, ind.colour, size, position, individual=name, marks=ind.marks, world=world)


def _stream(name: str, seed: int, purpose: int) -> tuple[int, int, int]:
    return (seed, purpose, zlib.crc32(name.encode()))


def render_photos(name: str, folder: Path, n: int = 6, seed: int = 0, captions: bool = False,
                  world: int = 1) -> list[Path]:
    """Write `n` PNG "photos" of the individual into `folder` (created if needed), like a user's photo
    folder: varied scenes (the first min(n, 5) all differ), positions, sizes (two in three big) and poses.
    Returns the paths, named `{name}-{i:02d}.png`. With `captions`, each photo gets a kohya-style caption
    file `{name}-{i:02d}.txt` naming the concept and the scene ("a <rex> dog on the beach"), so that
    training attributes the scene to its words and the rest to `<name>`. `world`: whose individual."""
    _get(name, world)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(_stream(name, seed, 1))
    order = [SCENES[int(i)] for i in rng.permutation(len(SCENES))]
    paths = []
    for i in range(n):
        size = "small" if rng.random() < 1 / 3 else "big"
        spec = individual_spec(name, rng, scene=order[i % len(order)], size=size, world=world)
        path = folder / f"{name}-{i:02d}.png"
        Image.fromarray(_render_array(spec, rng), "RGB").save(path)
        if captions:
            path.with_suffix(".txt").write_text(f"a <{name}> {spec.cls} {SCENE_PHRASES[spec.scene]}\n")
        paths.append(path)
    return paths


def reference_renders(name: str, n: int, seed: int, world: int = 1) -> np.ndarray:
    """`n` renders of the individual of `world` (uint8 [n, 64, 64, 3]) at random scenes, sizes, positions and
    poses, from a different random stream than `render_photos` with the same seed: references for identity
    scoring of generated images."""
    _get(name, world)
    out = np.empty((n, 64, 64, 3), np.uint8)
    for i in range(n):
        rng = np.random.default_rng(_stream(name, seed, 2) + (i,))
        out[i] = _render_array(individual_spec(name, rng, world=world), rng)
    return out
