"""Colours and image size shared by the demo world's modules: `world` (specs, captions, rendering), `painter`
(objects) and `scenes` (backgrounds). Kept in its own module so that neither drawing module imports `world`."""

from __future__ import annotations

IMAGE_SIZE = 64

# Object colours: saturated and far apart; every object also gets a dark outline (see `outline_of`). World 1
# uses the first six; world 2 adds brown, orange and pink (objects and marks) and black (marks only: a black
# object's dark outline would vanish at night). Each new colour is ≥ 75 RGB units from every other.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "blue": (35, 85, 225),
    "green": (40, 185, 70),
    "yellow": (245, 215, 30),
    "white": (246, 246, 246),
    "purple": (145, 55, 195),
    "brown": (128, 72, 36),
    "orange": (240, 135, 30),
    "pink": (235, 115, 150),
    "black": (22, 22, 26),
}
# Pastel/grey backgrounds for the "plain" scene: none is close to an object colour.
PLAIN_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (200, 200, 200),
    (150, 150, 155),
    (230, 218, 195),
    (232, 196, 205),
    (200, 192, 228),
    (192, 226, 208),
    (242, 208, 172),
)
