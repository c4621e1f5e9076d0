"""The demo world's words: captions from a small grammar (`caption`), an object's description (`describe`), the
parser that reads them back (`parse_object`, `parse_caption`) and each world's vocabulary (`vocabulary`).

World 1's captions name size, colour, class, place and scene ("a big red dog at the left on the beach"); world 2's
also name the object's marks ("a brown dog with white spots and a red collar on grass"), with "an" before a
vowel ("an orange cat"). Kept apart from `world` so that `individuals` can define world 2's individuals by their
descriptions without the two importing each other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .marks import MARK_KINDS, Mark, article, phrase
from .stage import CLASSES, SCENE_PHRASES, SIZES, WORLD_COLOURS, WORLD_MARK_COLOURS, Spec

POSITION_PHRASES = {"left": "at the left", "center": "in the middle", "right": "at the right"}
CAPTION_PREFIXES = ("a", "a photo of a")
WITH, AND = "with", "and"  # world 2: "a brown dog with white spots and a red collar"


def vocabulary(world: int = 1) -> tuple[str, ...]:
    """Every word any caption of `world` can contain (sorted): a tokenizer with this vocabulary covers them all
    (pair captions add `pairs.PAIR_WORDS`)."""
    texts = [*CAPTION_PREFIXES, *SIZES, *WORLD_COLOURS[world], *CLASSES, *SCENE_PHRASES.values(),
             *POSITION_PHRASES.values()]
    if WORLD_MARK_COLOURS[world]:  # every object colour is a mark colour too; "an" before "orange"
        texts += [WITH, AND, *WORLD_MARK_COLOURS[world], *MARK_KINDS, *{article(c) for c in WORLD_MARK_COLOURS[world]}]
    return tuple(sorted({w for text in texts for w in text.split()}))


def _object_words(spec: Spec, size: bool, order: list[int] | None = None) -> list[str]:
    """ "big brown dog with white spots and a red collar": the object without its article (marks in `order`)."""
    words = ([spec.size] if size else []) + [spec.colour, spec.cls]
    marks = [spec.marks[i] for i in order] if order is not None else list(spec.marks)
    for k, mark in enumerate(marks):
        words += [WITH if k == 0 else AND, *phrase(mark).split()]
    return words


def describe(spec: Spec) -> str:
    """The object in words, without size, place or scene: "a brown dog with white spots and a red collar" (an
    individual's `description` in world 2)."""
    words = _object_words(spec, size=False)
    return " ".join([article(words[0]), *words])


def caption(spec: Spec, rng: np.random.Generator | None = None) -> str:
    """A caption from a small grammar. With `rng` None the full form
    "a {size} {colour} {cls} [with {marks}] {position phrase} {scene phrase}", e.g. "a big red dog in the middle
    on the beach"; with an rng the size and position words are optional (each kept with p=0.5), the position may
    come after the scene, one in five starts "a photo of a", and two marks come in either order. Lower-case
    ASCII words from `vocabulary(spec.world)` only, no punctuation; "an" before a vowel ("an orange cat"). An
    individual is captioned as its class, colour and marks."""
    if rng is None:
        with_size, with_pos, pos_last, photo, order = True, True, False, False, None
    else:
        u = rng.random(4)  # always four draws, so the rng advances the same way for every spec (of world 1)
        with_size, with_pos, pos_last, photo = bool(u[0] < 0.5), bool(u[1] < 0.5), bool(u[2] < 0.5), bool(u[3] < 0.2)
        order = [int(i) for i in rng.permutation(len(spec.marks))] if len(spec.marks) > 1 else None
    obj = _object_words(spec, with_size, order)
    words = (["a", "photo", "of"] if photo else []) + [article(obj[0]), *obj]
    scene, pos = SCENE_PHRASES[spec.scene], POSITION_PHRASES[spec.position]
    if not with_pos:
        words.append(scene)
    elif pos_last:
        words += [scene, pos]
    else:
        words += [pos, scene]
    return " ".join(words)


class ObjectWords(NamedTuple):
    """One object of a parsed caption; `size` is None where the caption names none."""

    cls: str
    colour: str
    marks: tuple[Mark, ...]
    size: str | None


_MARK_WORDS = {tuple(k.split()): k for k in MARK_KINDS}


def _parse_object(w: list[str], i: int) -> tuple[ObjectWords, int]:
    """The object starting at w[i] (its article) and the index after it; ValueError where the words are not one."""

    def expect(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"expected {what} at word {i + 1} of {' '.join(w)!r}")

    expect(i < len(w) and w[i] in ("a", "an"), "'a' or 'an'")
    i += 1
    size = w[i] if i < len(w) and w[i] in SIZES else None
    i += size is not None
    expect(i + 1 < len(w) and w[i + 1] in CLASSES, "a colour and a class")
    colour, cls = w[i], w[i + 1]
    i += 2
    marks: list[Mark] = []
    while i < len(w) and w[i] == (AND if marks else WITH):
        j = i + 1
        if j < len(w) and w[j] in ("a", "an") and j + 2 < len(w) and w[j + 2] in CLASSES:
            break  # "and a blue hat": the next object of a pair, not a mark
        j += j < len(w) and w[j] in ("a", "an")
        kind = next((k for words, k in _MARK_WORDS.items() if tuple(w[j + 1 : j + 1 + len(words)]) == words), None)
        expect(kind is not None and j < len(w), "a mark (a colour, then one of " + ", ".join(MARK_KINDS) + ")")
        marks.append((kind, w[j]))
        i = j + 1 + len(kind.split())
    return ObjectWords(cls, colour, tuple(sorted(marks, key=lambda m: MARK_KINDS.index(m[0]))), size), i


def parse_object(text: str) -> ObjectWords:
    """The object a description names: "a white cat with a black ear and a black tail tip" -> ObjectWords("cat",
    "white", (("ear", "black"), ("tail tip", "black")), None). Marks come back in `MARK_KINDS` order. The words
    are not checked against a world's colours (`check` does that for the Spec made of them)."""
    w = text.split()
    obj, i = _parse_object(w, 0)
    if i != len(w):
        raise ValueError(f"unexpected words after the object: {' '.join(w[i:])!r} in {text!r}")
    return obj


def parse_caption(text: str) -> tuple[list[ObjectWords], str | None, str | None]:
    """(objects, scene, position) of a caption of the world's grammar (pair captions included); scene and
    position are None where it names none."""
    w = text.split()
    i = 3 if w[:3] == ["a", "photo", "of"] else 0
    obj, i = _parse_object(w, i)
    objects = [obj]
    if i < len(w) and w[i] == AND:
        obj, i = _parse_object(w, i + 1)
        objects.append(obj)
    rest = " " + " ".join(w[i:]) + " "
    scene = next((s for s, ph in SCENE_PHRASES.items() if f" {ph} " in rest), None)
    position = next((p for p, ph in POSITION_PHRASES.items() if f" {ph} " in rest), None)
    left = " ".join(rest.replace(f" {SCENE_PHRASES.get(scene, '#')} ", " ").replace(
        f" {POSITION_PHRASES.get(position, '#')} ", " ").split())
    if left:
        raise ValueError(f"unexpected words {left!r} in {text!r}")
    return objects, scene, position
