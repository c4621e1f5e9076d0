"""`python -m cns_cli.demo.assess`: the base model's prompt alignment on seen and held-out captions. On the tests'
tiny random pipeline the numbers mean nothing; what is checked is which captions are scored and the report."""

from __future__ import annotations

import json

from cns_cli.demo import assess, world


def test_alignment_specs_split_seen_from_held_out():
    seen, seen_caps = assess.alignment_specs(40, held_out=False)
    held, held_caps = assess.alignment_specs(40, held_out=True)
    assert not any(world.is_held_out(s) for s in seen)
    assert all(world.is_held_out(s) for s in held)
    for spec, cap in zip(held, held_caps):
        assert f"{spec.colour} {spec.cls}" in cap and world.SCENE_PHRASES[spec.scene] in cap
    assert assess.alignment_specs(40, held_out=True)[1] == held_caps  # seeded


def test_assess_writes_a_report_and_a_sample_sheet(tiny_base, tmp_path):
    from PIL import Image

    assert assess.main([tiny_base, "--n", "3", "--steps", "2", "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "assessment.json").read_text())
    for key in ("seen", "held_out"):
        assert rep[key]["n"] == 3 and len(rep[key]["captions"]) == 3
        assert all(0 <= rep[key][k] <= 1 for k in ("scene", "class", "colour", "all"))
    assert rep["held_out"]["captions"] == assess.alignment_specs(3, held_out=True)[1]
    width, height = Image.open(tmp_path / "samples.png").size
    assert width == 8 * height  # 3 seen + 3 held-out images: one row of 8 square tiles
