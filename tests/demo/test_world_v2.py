"""World 2 of the demo world: marks (patterns and parts) that captions name and the renderer draws, so every
individual is the composition its description names; world 1 (the bundled model's) is unchanged by it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cns_cli.demo import pairs, world
from cns_cli.demo.individuals import INDIVIDUALS, individual_spec, individuals_of, reference_renders, render_photos
from cns_cli.demo.marks import CLASS_MARKS, MARK_KINDS, PATTERNS, phrase, sample_marks
from cns_cli.demo.palette import COLOUR_RGB
from cns_cli.demo.stage import WORLD_COLOURS, WORLD_MARK_COLOURS
from cns_cli.demo.world import (
    CLASSES,
    SCENES,
    Spec,
    caption,
    describe,
    held_out_triples,
    is_held_out,
    parse_caption,
    parse_object,
    render_array,
    render_dataset,
    sample_specs,
    vocabulary,
)

V2 = individuals_of(2)


# --------------------------------------------------------------------------------------------- individuals


@pytest.mark.parametrize("name", list(V2))
def test_each_description_parses_to_the_spec_that_renders_the_individual(name):
    ind = V2[name]
    obj = parse_object(ind.description)
    assert (obj.cls, obj.colour, obj.marks, obj.size) == (ind.cls, ind.colour, ind.marks, None)
    assert ind.marks and ind.colour in WORLD_COLOURS[2] and ind.rgb == COLOUR_RGB[ind.colour]
    spec = individual_spec(name, np.random.default_rng(0), world=2)
    assert describe(spec) == ind.description  # the canonical words of that composition
    plain = Spec(spec.scene, obj.cls, obj.colour, spec.size, spec.position, marks=obj.marks, world=2)
    for seed in range(3):  # the individual is exactly its composition: same pixels as the generic spec
        a = render_array(spec, np.random.default_rng(seed))[0]
        b = render_array(plain, np.random.default_rng(seed))[0]
        assert np.array_equal(a, b), (name, seed)
    # the description is a valid caption with a scene, and the world's own caption of the individual names it
    objects, scene, _ = parse_caption(f"{ind.description} {world.SCENE_PHRASES['grass']}")
    assert objects == [obj] and scene == "grass"
    assert ind.description.split(" ", 1)[1] in caption(spec).replace(f" {spec.size} ", " ")
    assert set(caption(spec).split()) <= set(vocabulary(2))


def test_the_twelve_keep_their_names_and_classes_and_differ_in_words():
    assert list(V2) == list(INDIVIDUALS) and len(V2) == 12
    assert all(V2[n].cls == INDIVIDUALS[n].cls for n in V2)
    assert len({ind.description for ind in V2.values()}) == 12
    for a, b in itertools.combinations(V2.values(), 2):
        assert (a.cls, a.colour, a.marks) != (b.cls, b.colour, b.marks)
    assert {V2[n].colour for n in ("rex", "milo", "cottage")} == {"brown", "orange", "pink"}  # colours world 1 lacked


def test_world_2_individual_renders_are_deterministic_and_checked(tmp_path):
    a = reference_renders("luna", 4, seed=1, world=2)
    assert np.array_equal(a, reference_renders("luna", 4, seed=1, world=2))
    assert not np.array_equal(a, reference_renders("luna", 4, seed=1))  # world 1's luna is drawn differently
    paths = render_photos("rex", tmp_path / "rex", n=3, seed=0, captions=True, world=2)
    assert [p.with_suffix(".txt").read_text().split()[:3] for p in paths] == [["a", "<rex>", "dog"]] * 3
    rex = V2["rex"]
    with pytest.raises(ValueError, match="rex"):  # a world-2 individual without its marks
        render_array(Spec("grass", rex.cls, rex.colour, individual="rex", world=2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="world"):
        individuals_of(3)


# --------------------------------------------------------------------------------------------- marks


def test_mark_rules_are_checked():
    rng = np.random.default_rng(0)
    render_array(Spec("plain", "dog", "brown", marks=(("spots", "white"), ("collar", "red")), world=2), rng)
    for bad, match in (
        (Spec("plain", "dog", "red", marks=(("collar", "blue"),)), "world 1 has no marks"),
        (Spec("plain", "dog", "brown"), "colour"),  # brown is world 2's
        (Spec("plain", "ball", "red", marks=(("collar", "blue"),), world=2), "no mark"),
        (Spec("plain", "dog", "red", marks=(("collar", "red"),), world=2), "differs"),
        (Spec("plain", "dog", "red", marks=(("collar", "grey"),), world=2), "mark colour"),
        (Spec("plain", "dog", "red", marks=(("spots", "blue"), ("stripes", "white")), world=2), "one pattern"),
        (Spec("plain", "dog", "red", marks=(("collar", "blue"), ("spots", "white")), world=2), "order"),
        (Spec("plain", "dog", "red", marks=(("ear", "blue"), ("ear", "white")), world=2), "distinct"),
        (Spec("plain", "dog", "black", world=2), "colour"),  # black is for marks only
    ):
        with pytest.raises(ValueError, match=match):
            render_array(bad, rng)


def test_sampled_marks_follow_the_rules_and_cover_every_kind():
    rng = np.random.default_rng(1)
    seen, counts = set(), []
    for _ in range(3000):
        cls, colour = CLASSES[int(rng.integers(7))], WORLD_COLOURS[2][int(rng.integers(9))]
        marks = sample_marks(cls, colour, rng, WORLD_MARK_COLOURS[2])
        world.check(Spec("plain", cls, colour, marks=marks, world=2))
        counts.append(len(marks))
        seen.update((cls, kind, c) for kind, c in marks)
    assert {(cls, kind) for cls, kind, _ in seen} == {(c, k) for c, kinds in CLASS_MARKS.items() for k in kinds}
    assert {c for _, _, c in seen} == set(WORLD_MARK_COLOURS[2])
    shares = np.bincount(counts, minlength=3) / len(counts)  # a ball's marks are all patterns: one at most
    assert 0.2 < shares[0] < 0.3 and 0.4 < shares[1] < 0.5 and 0.25 < shares[2] < 0.35


@pytest.mark.parametrize("cls", CLASSES)
def test_every_mark_is_drawn_in_its_colour_on_the_object(cls):
    """Each kind the class allows puts pixels of its colour on the object (a colour the plain object lacks), on a
    big object several, on a small one (19-23 px wide) at least two."""
    body = {"dog": "white", "cat": "white", "hat": "yellow", "house": "white", "flower": "yellow", "car": "white",
            "ball": "yellow"}[cls]
    for kind in CLASS_MARKS[cls]:
        for size in ("big", "small"):
            counts = []
            for mark_colour, marks in (("blue", ((kind, "blue"),)), ("blue", ())):
                pixels, cover = render_array(Spec("plain", cls, body, size, marks=marks, world=2),
                                             np.random.default_rng(3))
                near = (np.abs(pixels.astype(int) - COLOUR_RGB[mark_colour]) <= 40).all(-1) & (cover > 0.9)
                counts.append(int(near.sum()))
            assert counts[0] >= (5 if size == "big" else 2) and counts[1] == 0, (cls, kind, size, counts)


@pytest.mark.parametrize("cls", [c for c in CLASSES if set(CLASS_MARKS[c]) & set(PATTERNS)])
def test_a_pattern_leaves_the_object_mostly_in_its_own_colour(cls):
    """A caption's colour word is the object's: a pattern's pixels are at most 0.6 of the object colour's (what
    shows at 64 px), so "a red ball with blue checks" is not "a blue ball with red checks" (before this rule, checks
    and stripes covered a ball's face more than its own colour did)."""
    for kind in (k for k in CLASS_MARKS[cls] if k in PATTERNS):
        for seed in range(6):
            pixels, cover = render_array(Spec("plain", cls, "red", "big", marks=((kind, "blue"),), world=2),
                                         np.random.default_rng(seed))
            solid = pixels[cover > 0.99].astype(int)
            n_body, n_mark = ((np.abs(solid - COLOUR_RGB[c]) <= 40).all(-1).sum() for c in ("red", "blue"))
            assert n_mark <= 0.6 * n_body, (cls, kind, seed, n_body, n_mark)

def test_an_unmarked_world_2_spec_renders_as_in_world_1_but_small_is_wider():
    rng = np.random.default_rng(5)
    widths = {1: [], 2: []}
    for spec in sample_specs(60, rng, held_out=None):
        two = Spec(spec.scene, spec.cls, spec.colour, spec.size, spec.position, world=2)
        (p1, c1), (p2, c2) = (render_array(x, np.random.default_rng(9)) for x in (spec, two))
        assert caption(spec) == caption(two)
        if spec.size == "big":
            assert np.array_equal(p1, p2)
        else:
            for world, cover in ((1, c1), (2, c2)):
                cols = np.nonzero((cover > 0.5).any(axis=0))[0]
                widths[world].append((cols.max() - cols.min() + 1) / 64)
    assert len(widths[2]) >= 15
    assert max(widths[1]) <= 0.32 and 0.28 <= min(widths[2]) and max(widths[2]) <= 0.40
    assert np.mean(widths[2]) - np.mean(widths[1]) > 0.05


# --------------------------------------------------------------------------------------------- captions


def test_captions_name_the_marks_and_parse_back():
    rng = np.random.default_rng(2)
    assert caption(Spec("grass", "cat", "orange", "big", "left", marks=(("stripes", "brown"),), world=2)) == (
        "a big orange cat with brown stripes at the left on grass")
    assert phrase(("tail tip", "orange")) == "an orange tail tip" and phrase(("spots", "white")) == "white spots"
    orders = set()
    for spec in sample_specs(400, rng, held_out=None, world=2):
        text = caption(spec, rng)
        objects, scene, position = parse_caption(text)
        (obj,) = objects
        assert (obj.cls, obj.colour, obj.marks, scene) == (spec.cls, spec.colour, spec.marks, spec.scene), text
        assert obj.size in (spec.size, None) and position in (spec.position, None)
        if len(spec.marks) == 2:
            orders.add(text.index(phrase(spec.marks[0])) < text.index(phrase(spec.marks[1])))
    assert orders == {True, False}  # two marks come in either order
    with pytest.raises(ValueError):
        parse_object("a red dog with a blue")
    with pytest.raises(ValueError):
        parse_object("a red dog wearing a hat")


def test_vocabulary_covers_every_caption_word_and_no_word_is_dead():
    words = set(vocabulary(2)) | set(pairs.PAIR_WORDS)
    assert set(vocabulary(1)) < set(vocabulary(2)) and list(vocabulary(2)) == sorted(vocabulary(2))
    assert {"an", "with", "brown", "black", "spots", "star", "collar", "tail", "tip", "roundel"} <= words
    _, captions = pairs.training_set(1500, seed=4, world=2)
    used = {w for c in captions for w in c.split()}
    assert used <= words
    assert used == words  # every word of the vocabulary occurs in training captions
    assert max(len(c.split()) for c in captions) <= 24  # + start and end tokens: within the 32 the model reads


# --------------------------------------------------------------------------------------------- held out


def test_held_out_is_a_tenth_hides_no_pair_and_keeps_world_1_s():
    held, colours = held_out_triples(2), WORLD_COLOURS[2]
    triples = set(itertools.product(SCENES, CLASSES, colours))
    assert world.HELD_OUT < held < triples and 0.08 <= len(held) / len(triples) <= 0.12
    train = triples - held
    for a, b in itertools.combinations(range(3), 2):  # every pair of values is still seen in training
        assert {(t[a], t[b]) for t in train} == {(t[a], t[b]) for t in triples}
    rng = np.random.default_rng(0)
    assert all(is_held_out(s) for s in sample_specs(200, rng, held_out=True, world=2))
    assert not any(is_held_out(s) for s in sample_specs(2000, rng, held_out=False, world=2))


def test_training_data_never_shows_a_held_out_triple():
    held = held_out_triples(2)
    _, captions = pairs.training_set(1500, seed=5, world=2)
    n_pairs = 0
    for text in captions:
        objects, scene, _ = parse_caption(text)
        n_pairs += len(objects) == 2
        assert all(len(o.marks) <= pairs.PAIR_MARKS for o in objects) or len(objects) == 1, text
        assert not any((scene, o.cls, o.colour) in held for o in objects), text
    assert 0.15 < n_pairs / len(captions) < 0.25


def test_world_2_data_is_deterministic():
    x1, s1, c1 = render_dataset(10, seed=3, world=2)
    x2, s2, c2 = render_dataset(16, seed=3, world=2)
    assert np.array_equal(x1, x2[:10]) and s1 == s2[:10] and c1 == c2[:10]  # item i depends only on (seed, i)
    assert all(s.world == 2 for s in s1) and any(s.marks for s in s1)
    i1, t1 = pairs.training_set(12, seed=1, world=2)
    i2, t2 = pairs.training_set(12, seed=1, world=2)
    assert np.array_equal(i1, i2) and t1 == t2
    assert t1 != pairs.training_set(12, seed=1)[1]  # world 1's data is another stream of captions
