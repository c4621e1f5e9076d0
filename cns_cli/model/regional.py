"""Regional cross-attention: each concept's box reads its own text (Mix-of-Show's regionally controllable
sampling, as attention processors on any diffusers Stable Diffusion pipeline).

In every cross-attention layer (`attn2`) of the UNet, at every step, for a pixel p of the layer's feature map:

    A_r(p) = softmax(q(p) K_rᵀ / √d) V_r            per head; K_r, V_r: the layer's to_k / to_v of region r's
                                                     separately encoded text (the concept deltas included)
    W_r(p)                                           box r's area coverage of p's cell at this layer's size,
                                                     divided by Σ_r W_r(p) where boxes overlap (so Σ_r W_r ≤ 1)
    O(p)   = (1 − s·ΣW(p)) · O_ctx(p)  +  s·ΣW(p) · to_out( Σ_r W_r(p) A_r(p) / ΣW(p) )

O_ctx is the layer's own output over the context prompt, computed by the processor that was installed before
(so outside every box, ΣW = 0, the output is exactly diffusers'); s is the region strength. Only the
conditional half of the classifier-free-guidance batch is rewritten, unless unconditional region texts are
given (then the unconditional half's boxes read those). Self-attention is untouched; there is no extra UNet
pass: the cost is one query / output projection and one attention over ≤ 77 text tokens per region, per layer.

`regional_generate(pipe, prompt, boxes, texts, ...)` installs the processors for one call and restores the
pipeline's own afterwards (also on error), so the pipeline object is unchanged after a regional call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import UsageError
from ..regions import Box, RegionPlan


def layer_grid(seq_len: int, latent_h: int, latent_w: int) -> tuple[int, int]:
    """(h, w) of a UNet level with `seq_len` pixels: the latent size halved with ceil (as stride-2 convolutions
    with padding 1 do) until h·w matches. Square-root guessing fails on non-square or odd sizes."""
    h, w = latent_h, latent_w
    while h * w > seq_len:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != seq_len:
        raise ValueError(f"no UNet level of a {latent_h}x{latent_w} latent has {seq_len} pixels")
    return h, w


def box_coverage(box: Box, h: int, w: int) -> torch.Tensor:
    """float32 [h, w]: the share of each cell's area the box covers. A box that covers no cell at least half
    (thin, or small on a coarse level, where inward rounding would drop it) keeps its best cell at full weight:
    a region is never empty at any level."""

    def axis(lo: float, hi: float, n: int) -> torch.Tensor:
        edges = torch.arange(n, dtype=torch.float64)
        return (torch.minimum(edges + 1, torch.tensor(hi * n)) - torch.maximum(edges, torch.tensor(lo * n))).clamp(0, 1)

    cov = torch.outer(axis(box.y0, box.y1, h), axis(box.x0, box.x1, w)).float()
    if cov.max() < 0.5:
        flat = cov.view(-1)
        flat[flat.argmax()] = 1.0
    return cov


def layer_weights(boxes: Sequence[Box], h: int, w: int) -> torch.Tensor:
    """float32 [R, h·w]: every box's coverage, divided by the total where boxes overlap (Σ_r ≤ 1 per pixel)."""
    cov = torch.stack([box_coverage(b, h, w).reshape(-1) for b in boxes])
    return cov / cov.sum(0).clamp(min=1.0)


class _Regions:
    """What every layer's processor shares for one call: texts, boxes, strength and per-level weights."""

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor | None, boxes: Sequence[Box], strength: float,
                 latent_hw: tuple[int, int], guided: bool):
        self.cond, self.uncond = cond, uncond  # [P, R, L, D] encoded region texts, per prompt and region
        self.boxes, self.strength, self.latent_hw, self.guided = list(boxes), strength, latent_hw, guided
        self._weights: dict[tuple, torch.Tensor] = {}

    def weights(self, seq_len: int, like: torch.Tensor) -> torch.Tensor:
        key = (seq_len, like.device, like.dtype)
        if key not in self._weights:
            w = layer_weights(self.boxes, *layer_grid(seq_len, *self.latent_hw))
            self._weights[key] = w.to(like.device, like.dtype)
        return self._weights[key]


class RegionalAttnProcessor:
    """Wraps an `attn2` layer's processor: its output over the context prompt, then the regions mixed in."""

    def __init__(self, inner, regions: _Regions):
        self.inner, self.regions = inner, regions
        self._kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the text is constant: K/V once per call

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        rg = self.regions
        half = hidden_states.shape[0] // 2 if rg.guided else 0
        out = out.clone()
        out[half:] = self._mix(attn, hidden_states[half:], out[half:], rg.cond, "cond")
        if rg.uncond is not None and half:
            out[:half] = self._mix(attn, hidden_states[:half], out[:half], rg.uncond, "uncond")
        return out

    def _mix(self, attn, x: torch.Tensor, o_ctx: torch.Tensor, texts: torch.Tensor, which: str) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        heads = attn.heads
        keys, values = self._region_kv(attn, texts, which, batch, x)  # [R·B, heads, L, d]
        n_regions = texts.shape[1]
        q = attn.to_q(x)
        inner = q.shape[-1]
        q = q.view(batch, seq_len, heads, inner // heads).transpose(1, 2)  # [B, heads, N, d]
        # Every region in one attention call: the queries repeated per region, the regions' keys side by side.
        a = F.scaled_dot_product_attention(q.repeat(n_regions, 1, 1, 1), keys, values)
        a = a.view(n_regions, batch, heads, seq_len, -1)
        w = self.regions.weights(seq_len, x)  # [R, N]
        total = w.sum(0)  # [N], in [0, 1]
        mixed = torch.einsum("rn,rbhnd->bhnd", w / total.clamp(min=torch.finfo(total.dtype).tiny), a)
        region_out = attn.to_out[1](attn.to_out[0](mixed.transpose(1, 2).reshape(batch, seq_len, inner)))
        region_out = region_out / attn.rescale_output_factor
        share = (self.regions.strength * total).view(1, -1, 1)
        return (1 - share) * o_ctx + share * region_out

    def _region_kv(self, attn, texts: torch.Tensor, which: str, batch: int, like: torch.Tensor):
        """The regions' keys and values at this layer, [R·B, heads, L, d] with row r·B + b = region r of batch row b
        (rows are prompt-major: diffusers repeats each prompt's images in place). Computed once per call."""
        if which not in self._kv:
            prompts, n_regions = texts.shape[:2]
            flat = texts.to(like.device, like.dtype).flatten(0, 1)  # [P·R, L, D]
            if attn.norm_cross:
                flat = attn.norm_encoder_hidden_states(flat)

            def arrange(t: torch.Tensor) -> torch.Tensor:
                t = t.view(prompts, n_regions, *t.shape[1:]).transpose(0, 1)  # [R, P, L, inner]
                t = t.repeat_interleave(batch // prompts, 1).flatten(0, 1)  # [R·B, L, inner]
                return t.view(t.shape[0], t.shape[1], attn.heads, -1).transpose(1, 2)

            self._kv[which] = (arrange(attn.to_k(flat)), arrange(attn.to_v(flat)))
        return self._kv[which]


def _check_layer(name: str, attn) -> None:
    """The mix above assumes a plain cross-attention layer (every SD 1.x / 2.x / XL attn2 is one)."""
    if attn.spatial_norm is not None or attn.group_norm is not None or attn.residual_connection \
            or attn.norm_q is not None or attn.norm_k is not None:
        raise UsageError(f"region control supports plain cross-attention layers; {name} is not one")


def encode_texts(pipe, texts: Sequence[str], clip_skip: int | None = None) -> torch.Tensor:
    """[N, L, D] text states of `texts`, exactly as the pipeline encodes a prompt."""
    # By keyword: SD's and SDXL's encode_prompt take these under the same names but in different orders, and SDXL's
    # returns four tensors (its pooled text stays the context prompt's: only attn2 reads the regions' texts).
    out = pipe.encode_prompt(prompt=list(texts), device=pipe._execution_device, num_images_per_prompt=1,
                             do_classifier_free_guidance=False, clip_skip=clip_skip)
    return out[0]


def regional_generate(pipe, prompt: str | list[str], boxes: Sequence[Box], texts: Sequence[str] | Sequence[Sequence[str]],
                      strength: float = 1.0, uncond_texts: Sequence[str] | Sequence[Sequence[str]] | None = None,
                      **call_kwargs):
    """Call `pipe(prompt, **call_kwargs)` with every box reading its own text (formula in the module docstring).

    `prompt`: the context text (or a list, one per image row); `boxes`: the regions, shared by every prompt;
    `texts`: one text per box, or per prompt a list of one text per box; `uncond_texts`: likewise for the
    unconditional half (default: untouched). Returns what the pipeline returns."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    per_prompt_texts = _per_prompt(texts, len(prompts), len(boxes), "texts")
    unet = pipe.unet
    height = call_kwargs.get("height") or unet.config.sample_size * pipe.vae_scale_factor
    width = call_kwargs.get("width") or unet.config.sample_size * pipe.vae_scale_factor
    guided = call_kwargs.get("guidance_scale", 7.5) > 1 and unet.config.time_cond_proj_dim is None
    with torch.no_grad():
        clip_skip = call_kwargs.get("clip_skip")
        cond = encode_texts(pipe, [t for row in per_prompt_texts for t in row], clip_skip)
        uncond = None
        if uncond_texts is not None:
            rows = _per_prompt(uncond_texts, len(prompts), len(boxes), "uncond_texts")
            uncond = encode_texts(pipe, [t for row in rows for t in row], clip_skip)
    shape = (len(prompts), len(boxes), *cond.shape[1:])
    regions = _Regions(cond.view(shape), None if uncond is None else uncond.view(shape), boxes, strength,
                       (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor), guided)
    saved = dict(unet.attn_processors)
    modules = dict(unet.named_modules())
    installed = {}
    for key, proc in saved.items():
        layer = key.removesuffix(".processor")
        if layer.endswith("attn2"):
            _check_layer(layer, modules[layer])
            proc = RegionalAttnProcessor(proc, regions)
        installed[key] = proc
    # set_attn_processor pops the entries of the dict it is given: always hand it a copy.
    unet.set_attn_processor(dict(installed))
    try:
        return pipe(prompts if len(prompts) > 1 else prompts[0], **call_kwargs)
    finally:
        unet.set_attn_processor(dict(saved))


def generate_plans(pipe, plans: Sequence[RegionPlan], **call_kwargs):
    """`regional_generate` for `regions.RegionPlan`s, one per prompt (what `cns generate` and `cns bench` draw).
    Plans in one call share their boxes, strength and unconditional mode (`plan_key`)."""
    first = plans[0]
    if any(plan_key(p) != plan_key(first) for p in plans):
        raise ValueError("region plans in one call must share boxes, strength and unconditional mode")
    uncond = [p.uncond_texts for p in plans] if first.uncond_texts is not None else None
    return regional_generate(pipe, [p.context for p in plans], first.boxes, [p.texts for p in plans], first.strength,
                             uncond, **call_kwargs)


def plan_key(plan: RegionPlan) -> tuple:
    """What plans drawn in one call must have in common."""
    return tuple(plan.boxes), plan.strength, plan.uncond_texts is None


def _per_prompt(texts, n_prompts: int, n_boxes: int, what: str) -> list[list[str]]:
    rows = [list(texts)] * n_prompts if texts and isinstance(texts[0], str) else [list(t) for t in texts]
    if len(rows) != n_prompts or any(len(r) != n_boxes for r in rows):
        raise ValueError(f"{what}: need one text per box ({n_boxes}) for each of {n_prompts} prompt(s)")
    return rows
