"""Region control, the part without torch: parsing `cns generate`'s region flags, checking them against each
prompt, and turning a prompt into what the regional sampler reads (`model/regional.py` does the sampling).

A region is a concept's box, `<name>=x0,y0,x1,y1` as fractions of the image's width and height with the origin
at the top left (the GLIGEN / BoxDiff order). `--layout auto` gives one equal column per concept, left to right
in order of first mention. Every prompt of a run gets the same regions; a prompt whose concepts differ from the
regions' is an error that names it.

For one prompt the sampler needs (a `RegionPlan`):
- the context text: the expanded prompt with every `<name>` reference taken out and class words kept
  ("a <milo> and a <cottage> on grass" -> "a cat and a house on grass"); pixels outside every box read it;
- per concept its box and its region text, which the box's pixels read instead: by default the concept and the
  prompt's closing words, "a <milo> cat on grass" (`region_text`; chosen over the bare "a <milo> cat" by
  `benchmarks/region_variants.py`, docs/regions.md), or the user's `--region-prompt`;
- the strength s in [0, 1]: how fully a box's own text replaces the context's output inside the box.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .errors import UsageError
from .prompts import CONCEPT_REF, concepts_in, excerpt, expand_prompt, split_strengths

LAYOUTS = ("auto",)
# How a region's default text is made (see `region_text`). "scene" was chosen by benchmarks/region_variants.py:
# the same identity in the boxes as "short", more boxes with the right class, and the prompt's scene kept
# (with "short" the auto layout's columns cover the whole image and the scene words are read nowhere).
REGION_TEXT_STYLES = ("short", "scene", "prompt")
DEFAULT_REGION_TEXT = "scene"
_NAME = r"<?([a-z0-9][a-z0-9_-]{0,63})>?"
_REGION = re.compile(rf"^\s*{_NAME}\s*=\s*(.*)$")


@dataclass(frozen=True)
class Box:
    """A box in fractions of width and height, origin top left: 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise UsageError(f"box {self.text()} must lie in [0, 1]: fractions of the image's width and height")
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise UsageError(f"box {self.text()} is empty or inverted; write x0,y0,x1,y1 with x0 < x1 and y0 < y1")

    def text(self) -> str:
        return ",".join(f"{v:g}" for v in (self.x0, self.y0, self.x1, self.y1))

    def as_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


def parse_region(text: str) -> tuple[str, Box]:
    """`<name>=x0,y0,x1,y1` (the angle brackets may be left out) -> (name, Box)."""
    name, value = _split(text, "--region", "'<dog>=0,0,0.5,1'")
    parts = value.split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        raise UsageError(f"--region {text!r}: the box must be four numbers x0,y0,x1,y1, e.g. '<{name}>=0,0,0.5,1'")
    try:
        return name, Box(*numbers)
    except UsageError as e:
        raise UsageError(f"--region {text!r}: {e}") from None


def parse_region_prompt(text: str) -> tuple[str, str]:
    """`<name>=TEXT` -> (name, TEXT)."""
    name, value = _split(text, "--region-prompt", "'<dog>=a <dog> dog running'")
    if not value.strip():
        raise UsageError(f"--region-prompt {text!r} has no text after '='; write e.g. '<{name}>=a <{name}> on grass'")
    return name, " ".join(value.split())


def _split(text: str, flag: str, example: str) -> tuple[str, str]:
    m = _REGION.match(text)
    if not m:
        raise UsageError(f"{flag} {excerpt(text)} is not NAME=VALUE with a lower-case concept name; "
                         f"write e.g. {example}")
    return m.group(1), m.group(2)


@dataclass(frozen=True)
class RegionRequest:
    """What a run's region flags ask for; the same for every prompt of the run."""

    boxes: dict[str, Box] = field(default_factory=dict)  # --region (layout "manual")
    auto: bool = False  # --layout auto
    texts: dict[str, str] = field(default_factory=dict)  # --region-prompt, not yet expanded, `<name:w>` as `<name>`
    strengths: dict[str, float] = field(default_factory=dict)  # the `<name:w>` of the --region-prompt texts
    strength: float = 1.0
    text_style: str = DEFAULT_REGION_TEXT  # the default region text (benchmarks compare the styles)
    uncond: str = "keep"  # "keep": the unconditional half is untouched; "class": it reads the box's plain class

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            raise UsageError(f"--region-strength must be in [0, 1], got {self.strength}")
        if self.auto and self.boxes:
            raise UsageError("--region and --layout auto exclude each other; give boxes or let cns lay them out")
        if not (self.auto or self.boxes):
            raise UsageError("region settings need regions: add --layout auto or a --region per concept")
        if self.text_style not in REGION_TEXT_STYLES:
            raise ValueError(f"unknown region text style {self.text_style!r}")
        if self.uncond not in ("keep", "class"):
            raise ValueError(f"unknown unconditional mode {self.uncond!r}")

    @property
    def layout(self) -> str:
        return "auto" if self.auto else "manual"

    @classmethod
    def from_flags(cls, regions: list[str] | None, layout: str | None, region_prompts: list[str] | None,
                   strength: float | None) -> RegionRequest | None:
        """None when no region flag is given (plain generation); UsageError for any malformed flag."""
        regions, region_prompts = list(regions or []), list(region_prompts or [])
        if not (regions or layout is not None or region_prompts or strength is not None):  # --layout '' is given
            return None
        if layout is not None and layout not in LAYOUTS:
            raise UsageError(f"--layout {layout!r} is not known; layouts: {', '.join(LAYOUTS)} "
                             "(or give --region boxes)")
        boxes = _one_per_concept(map(parse_region, regions), "--region boxes")
        texts, strengths = _split_region_strengths(
            _one_per_concept(map(parse_region_prompt, region_prompts), "--region-prompt texts"))
        return cls(boxes=boxes, auto=layout == "auto", texts=texts, strengths=strengths,
                   strength=1.0 if strength is None else strength)


def _split_region_strengths(texts: dict[str, str]) -> tuple[dict[str, str], dict[str, float]]:
    """`<name:w>` in region texts, read as in a prompt (prompts.split_strengths): the texts with `<name>`, and the
    strengths of every text together (a concept given two different ones is refused)."""
    plain: dict[str, str] = {}
    strengths: dict[str, float] = {}
    for name, text in texts.items():
        plain[name], found = split_strengths(text)
        strengths = merged_strengths(strengths, found, "--region-prompt")
    return plain, strengths


def merged_strengths(first: dict[str, float], second: dict[str, float], where: str) -> dict[str, float]:
    """The strengths of a prompt and of its region texts together. A concept's strength scales its delta in the
    UNet, which every box shares, so it is one number per image: two different ones are refused."""
    for name, w in second.items():
        if first.get(name, w) != w:
            raise UsageError(f"<{name}> has strength {first[name]:g} and {w:g} in {where}; give it one strength "
                             "(it scales the concept in the whole image)")
    return {**first, **second}


def _one_per_concept(pairs, what: str) -> dict:
    """{name: value} from parsed (name, value) flags; a concept named twice is an error."""
    out: dict = {}
    for name, value in pairs:
        if name in out:
            raise UsageError(f"<{name}> has two {what}; give each concept one")
        out[name] = value
    return out


@dataclass(frozen=True)
class Region:
    concept: str
    box: Box
    text: str  # what the box's pixels read (expanded like a prompt)


@dataclass(frozen=True)
class RegionPlan:
    """One prompt's regions: what `model.regional.regional_generate` is given."""

    context: str
    regions: tuple[Region, ...]
    strength: float
    layout: str  # "auto" | "manual"
    uncond_texts: tuple[str, ...] | None = None  # None: the unconditional half is untouched

    @property
    def boxes(self) -> list[Box]:
        return [r.box for r in self.regions]

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.regions]

    def record(self) -> dict:
        """Provenance for PNG chunks and --json records."""
        return {"layout": self.layout, "strength": self.strength, "context": self.context,
                "regions": [{"concept": r.concept, "box": r.box.as_list(), "text": r.text} for r in self.regions]}

    def a1111(self) -> str:
        """The region part of the A1111 `parameters` line."""
        boxes = "; ".join(f"{r.concept}={r.box.text()} \"{r.text}\"" for r in self.regions)
        return f"Regions: {boxes}, Region context: \"{self.context}\", Region strength: {self.strength:g}, " \
               f"Region layout: {self.layout}"


def auto_boxes(names: list[str]) -> list[Box]:
    """One equal full-height column per concept, left to right."""
    n = len(names)
    return [Box(i / n, 0.0, (i + 1) / n, 1.0) for i in range(n)]


def context_text(prompt: str, classes: dict[str, str]) -> str:
    """The prompt with its concept references taken out and class words kept: "a <milo> and a <cottage> on grass"
    -> "a cat and a house on grass" (always expanded, so `--no-expand` prompts keep their nouns too)."""
    text = CONCEPT_REF.sub("", expand_prompt(prompt, classes, expand=True))
    return " ".join(text.split())


def region_text(name: str, prompt: str, classes: dict[str, str], style: str = DEFAULT_REGION_TEXT,
                expand: bool = True) -> str:
    """A concept's default region text. "short": "a <milo> cat". "scene": the same followed by the prompt's words
    after its last concept ("a <milo> and a <cottage> on grass" -> "a <milo> cat on grass"), which in the usual
    "X and Y SETTING" prompt is the setting."""
    own = expand_prompt(f"a <{name}>", classes, expand)
    if style == "short":
        return own
    if style == "prompt":  # the whole prompt, only this concept personalised (the others by class word)
        text = CONCEPT_REF.sub(lambda m: m.group(0) if m.group(1) == name else "",
                               expand_prompt(prompt, classes, expand=True))
        return " ".join(text.split())
    expanded = expand_prompt(prompt, classes, expand=True)
    last = list(CONCEPT_REF.finditer(expanded))[-1]
    tail = expanded[last.end():]
    word = " " + " ".join(classes[last.group(1)].split())
    tail = tail[len(word):] if tail.lower().startswith(word.lower()) else tail
    return " ".join(f"{own} {tail}".split())


def plan_regions(prompt: str, request: RegionRequest, classes: dict[str, str], expand: bool = True) -> RegionPlan:
    """Check one prompt against the run's regions and build its plan. `classes` maps every concept of the bank to
    its class word. UsageError names the prompt when its concepts and the regions disagree."""
    expand_prompt(prompt, classes, expand)  # unknown concepts in the prompt fail first, with the usual message
    mentioned = concepts_in(prompt)
    for name in [*request.boxes, *request.texts]:
        if name not in classes:
            known = ", ".join(f"<{n}>" for n in sorted(classes)) or "none yet"
            raise UsageError(f"a region names <{name}>, which the bank does not have (concepts: {known})")
    if request.auto:
        if not mentioned:
            raise UsageError(f"--layout auto needs concepts in the prompt; {excerpt(prompt)} mentions none")
        names, boxes = mentioned, auto_boxes(mentioned)
    else:
        extra = [n for n in request.boxes if n not in mentioned]
        if extra:
            raise UsageError(f"--region <{extra[0]}> but prompt {excerpt(prompt)} does not mention <{extra[0]}>; "
                             "every prompt of a run gets the same regions")
        missing = [n for n in mentioned if n not in request.boxes]
        if missing:
            shown = excerpt(prompt, prompt.find(f"<{missing[0]}>"))
            raise UsageError(f"prompt {shown} mentions <{missing[0]}> but no --region gives it a box; "
                             "add one per concept, or use --layout auto")
        names, boxes = mentioned, [request.boxes[n] for n in mentioned]
    stray = [n for n in request.texts if n not in names]
    if stray:
        raise UsageError(f"--region-prompt <{stray[0]}> but prompt {excerpt(prompt)} does not mention <{stray[0]}>")
    regions = tuple(
        Region(n, b, expand_prompt(request.texts[n], classes, expand) if n in request.texts
               else region_text(n, prompt, classes, request.text_style, expand))
        for n, b in zip(names, boxes))
    uncond = tuple(f"a {' '.join(classes[n].split())}" for n in names) if request.uncond == "class" else None
    return RegionPlan(context_text(prompt, classes), regions, request.strength, request.layout, uncond)


def boxes_below_one_cell(boxes: list[Box], latent_h: int, latent_w: int) -> list[Box]:
    """Boxes narrower or lower than one latent cell: the sampler can barely place anything there."""
    return [b for b in boxes if (b.x1 - b.x0) * latent_w < 1 or (b.y1 - b.y0) * latent_h < 1]
