"""The regional sampler (model/regional.py) against its formula, on a real attn2 layer of the tiny UNet, and as a
whole on the tiny pipeline: masks never empty, the unconditional half and the pixels outside every box exactly
diffusers', the pipeline restored after every call (also a failing one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cns_cli.model.loading import load_pipeline, resolve_base
from cns_cli.model.regional import (RegionalAttnProcessor, _Regions, box_coverage, layer_grid, layer_weights,
                                    regional_generate)
from cns_cli.regions import Box

KW = dict(num_inference_steps=3, guidance_scale=7.5, output_type="np")


@pytest.fixture(scope="module")
def pipe(tiny_base):
    p = load_pipeline(resolve_base(tiny_base))
    p.set_progress_bar_config(disable=True)
    return p


def test_layer_grid_halves_with_ceil_on_odd_non_square_latents():
    assert layer_grid(15 * 9, 15, 9) == (15, 9)
    assert layer_grid(8 * 5, 15, 9) == (8, 5)
    assert layer_grid(4 * 3, 15, 9) == (4, 3)
    with pytest.raises(ValueError):
        layer_grid(7, 15, 9)


def test_coverage_is_area_and_never_empty():
    third = box_coverage(Box(1 / 3, 0, 2 / 3, 1), 4, 4)  # rounding inward would leave no cell on 4x4
    assert torch.allclose(third[0], torch.tensor([0.0, 2 / 3, 2 / 3, 0.0]))
    assert torch.allclose(third.sum(), torch.tensor(4 * 4 / 3))  # area: a third of 16 cells
    tiny = box_coverage(Box(0.70, 0.10, 0.72, 0.12), 4, 4)
    assert tiny.max() == 1.0 and (tiny > 0).sum() == 1 and tiny[0, 2] == 1.0  # kept: the cell it lies in
    assert torch.equal(box_coverage(Box(0, 0, 1, 1), 3, 5), torch.ones(3, 5))


def test_overlapping_boxes_average_and_never_exceed_one():
    w = layer_weights([Box(0, 0, 0.75, 1), Box(0.25, 0, 1, 1)], 1, 4)
    assert torch.allclose(w, torch.tensor([[1, 0.5, 0.5, 0], [0, 0.5, 0.5, 1]]))
    assert (w.sum(0) <= 1 + 1e-6).all()


def _attn2(pipe):
    name, attn = next((n, m) for n, m in pipe.unet.named_modules() if n.endswith("attn2"))
    return attn, pipe.unet.attn_processors[f"{name}.processor"]


def test_processor_follows_the_formula(pipe):
    """Left half box reads text A, right quarter box reads B, overlapping a right-middle column; the rest reads the
    context. Batch = [uncond, cond] as under classifier-free guidance; a 4x4 feature map."""
    torch.manual_seed(0)
    attn, inner = _attn2(pipe)
    d = attn.to_k.in_features
    ctx, text_a, text_b = (torch.randn(1, 7, d) for _ in range(3))
    x = torch.randn(2, 16, attn.to_q.in_features)
    boxes = [Box(0, 0, 0.5, 1), Box(0.25, 0, 0.5, 0.25)]
    s = 0.75
    regions = _Regions(torch.stack([text_a, text_b], 1), None, boxes, s, (4, 4), guided=True)
    with torch.no_grad():
        got = RegionalAttnProcessor(inner, regions)(attn, x, torch.cat([ctx, ctx]))
        o_ctx = inner(attn, x, torch.cat([ctx, ctx]))
        o_a, o_b = inner(attn, x[1:], text_a), inner(attn, x[1:], text_b)
    assert torch.equal(got[0], o_ctx[0])  # unconditional half untouched
    grid = lambda t: t.view(4, 4, -1)  # noqa: E731  [row, col, channels] of the conditional image
    g, c, a, b = grid(got[1]), grid(o_ctx[1]), grid(o_a[0]), grid(o_b[0])
    assert torch.equal(g[:, 2:], c[:, 2:])  # outside every box: exactly the context output
    torch.testing.assert_close(g[1:, :2], (1 - s) * c[1:, :2] + s * a[1:, :2])  # only box A
    torch.testing.assert_close(g[0, 1], (1 - s) * c[0, 1] + s * (a[0, 1] + b[0, 1]) / 2)  # both boxes: averaged
    torch.testing.assert_close(g[0, 0], (1 - s) * c[0, 0] + s * a[0, 0])  # B does not reach column 0


def test_unconditional_texts_rewrite_the_unconditional_half(pipe):
    torch.manual_seed(1)
    attn, inner = _attn2(pipe)
    d = attn.to_k.in_features
    ctx, text, neg = (torch.randn(1, 7, d) for _ in range(3))
    x = torch.randn(2, 16, attn.to_q.in_features)
    regions = _Regions(text[:, None], neg[:, None], [Box(0, 0, 1, 1)], 1.0, (4, 4), guided=True)
    with torch.no_grad():
        got = RegionalAttnProcessor(inner, regions)(attn, x, torch.cat([ctx, ctx]))
        torch.testing.assert_close(got[0], inner(attn, x[:1], neg)[0])
        torch.testing.assert_close(got[1], inner(attn, x[1:], text)[0])


def test_full_box_reading_the_prompt_is_plain_sampling_bit_for_bit(pipe):
    plain = pipe("a dog on the beach", generator=torch.Generator().manual_seed(4), **KW).images
    same = regional_generate(pipe, "a dog on the beach", [Box(0, 0, 1, 1)], ["a dog on the beach"],
                             generator=torch.Generator().manual_seed(4), **KW).images
    assert np.array_equal(plain, same)


def test_regions_change_the_image_and_the_pipeline_is_restored(pipe):
    before = dict(pipe.unet.attn_processors)
    plain = pipe("a dog and a hat on the beach", generator=torch.Generator().manual_seed(2), **KW).images
    regional = regional_generate(pipe, "a dog and a hat on the beach", [Box(0, 0, 0.5, 1), Box(0.5, 0, 1, 1)],
                                 ["a red dog", "a blue hat"], generator=torch.Generator().manual_seed(2), **KW).images
    assert np.abs(plain - regional).max() > 0.01
    after = dict(pipe.unet.attn_processors)
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)
    again = pipe("a dog and a hat on the beach", generator=torch.Generator().manual_seed(2), **KW).images
    assert np.array_equal(plain, again)


def test_pipeline_is_restored_when_the_call_fails(pipe):
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(Exception):
        regional_generate(pipe, "a dog", [Box(0, 0, 1, 1)], ["a dog"], height=31, **KW)  # not a multiple of 8
    after = dict(pipe.unet.attn_processors)
    assert all(before[k] is after[k] for k in before)


def test_batched_prompts_each_read_their_own_region_texts(pipe):
    """Two prompts in one call, each with its own region texts, equal the two prompts called one at a time."""
    boxes = [Box(0, 0, 0.5, 1), Box(0.5, 0, 1, 1)]
    texts = [["a red dog", "a blue hat"], ["a small car", "a big house"]]
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6)]  # noqa: E731
    both = regional_generate(pipe, ["a dog and a hat", "a car and a house"], boxes, texts, generator=gens(), **KW).images
    for i, (prompt, t) in enumerate(zip(["a dog and a hat", "a car and a house"], texts)):
        one = regional_generate(pipe, prompt, boxes, t, generator=torch.Generator().manual_seed(5 + i), **KW).images
        np.testing.assert_allclose(both[i], one[0], atol=1e-5)


def test_plans_share_a_call_only_when_boxes_strength_and_unconditional_mode_agree():
    """The bench batches plans; a batch that mixed strengths would draw every image at the first plan's."""
    from cns_cli.demo.assess import _batches
    from cns_cli.model.regional import generate_plans
    from cns_cli.regions import Region, RegionPlan

    def plan(strength=1.0, x=0.5, uncond=None):
        regions = (Region("a", Box(0, 0, x, 1), "a <a> dog"), Region("b", Box(x, 0, 1, 1), "a <b> hat"))
        return RegionPlan("a dog and a hat", regions, strength, "manual", uncond)

    plans = [plan(), plan(), plan(0.6), plan(0.6, x=0.4), plan(0.6, x=0.4, uncond=("a dog", "a hat"))]
    assert _batches(len(plans), 32, plans) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert _batches(3, 2, None) == [(0, 2), (2, 3)]
    with pytest.raises(ValueError, match="share boxes, strength"):
        generate_plans(None, [plan(), plan(0.6)])
