"""Shared pieces of the benchmarks: model shapes, and one training step per method on the same model.

Methods (each the method as people run it, same batch, resolution, noise and timesteps):
- cns:    the concept's rows of attn2.to_k/to_v (budget 0.13 % of UNet parameters), rank-4 slice
          coefficients + the token embedding (text encoder forward/backward), self-regularisation;
- lora:   PEFT LoRA rank 4 on to_q/to_k/to_v/to_out.0 of every attention (DreamBooth-LoRA defaults), text
          encoder frozen;
- kv_full: every attn2.to_k/to_v weight trainable (Custom-Diffusion style), text encoder frozen.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8,
)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
METHODS = ("cns", "cns_rows_only", "lora", "kv_full")  # cns_rows_only: `cns learn --lr-token 0`


def sd15_unet(device: str = "meta"):
    """An SD 1.5-config UNet with random weights (on the meta device: shapes only, no memory)."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel(**SD15_UNET)


def sd15_text_encoder(device: str = "cpu"):
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        return CLIPTextModel(CLIPTextConfig(**SD15_TEXT))


class Setup:
    """Everything one step needs: unet, text encoder, scheduler, latents, token ids, device, dtype."""

    def __init__(self, unet, text_encoder, resolution: int, batch: int, device: str, dtype, seed: int = 0):
        from diffusers import DDPMScheduler

        self.unet, self.text_encoder = unet.to(device, dtype).requires_grad_(False), text_encoder.to(device, dtype).requires_grad_(False)
        self.device, self.dtype, self.batch = device, dtype, batch
        self.scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        g = torch.Generator().manual_seed(seed)
        latent = resolution // 8
        self.latents = torch.randn(batch, 4, latent, latent, generator=g).to(device)
        vocab = text_encoder.config.vocab_size
        self.ids = torch.randint(0, vocab - 1, (batch, 77), generator=g).to(device)
        self.token_id = vocab - 1  # stands in for the new concept token
        self.ids[:, 5] = self.token_id
        self.gen = g


def _amp(s: Setup):
    from cns_cli.model.runtime import autocast

    return autocast(s.device, s.dtype)


def _loss(s: Setup, unet, states) -> torch.Tensor:
    t = torch.randint(0, 1000, (s.batch,), generator=s.gen).to(s.device)
    noise = torch.randn(s.latents.shape, generator=s.gen).to(s.device)
    with _amp(s):
        pred = unet(s.scheduler.add_noise(s.latents, noise, t), t, encoder_hidden_states=states).sample
    return torch.nn.functional.mse_loss(pred.float(), noise)


def make_step(method: str, base: Setup, rows_budget: float = 0.0013, copy_model: bool = True):
    """A zero-argument callable doing one optimiser step of `method` on its own copy of the UNet (or, with
    copy_model=False, on `base`'s UNet itself: for a process that measures one method only)."""
    from cns_cli.method.basis import orthogonal_basis
    from cns_cli.method.delta import protection_gram, self_regularisation
    from cns_cli.method.select import budget_in_rows
    from cns_cli.model.kv import attach_trainable
    from cns_cli.model.loading import kv_layers
    from cns_cli.model.tokens import attach_trainable_token

    s = copy.copy(base)
    s.unet = copy.deepcopy(base.unet) if copy_model else base.unet
    te = copy.deepcopy(base.text_encoder) if copy_model else base.text_encoder
    if method in ("cns", "cns_rows_only"):
        layers = kv_layers(s.unet)
        d = next(iter(layers.values())).in_features
        n_rows = budget_in_rows(rows_budget, sum(p.numel() for p in s.unet.parameters()), d)
        sizes = torch.tensor([m.out_features for m in layers.values()])
        pick = torch.randperm(int(sizes.sum()), generator=torch.Generator().manual_seed(1))[:n_rows].sort().values
        offsets, rows = torch.cumsum(sizes, 0) - sizes, {}
        for (name, m), off in zip(layers.items(), offsets.tolist()):
            sel = pick[(pick >= off) & (pick < off + m.out_features)] - off
            rows[name] = sel
        b = torch.from_numpy(orthogonal_basis(d))[:, :4].to(s.device)
        wrappers = attach_trainable(s.unet, rows, b)
        gram = protection_gram(torch.randn(280 * 77, d, device=s.device), b)
        params = [w.coef for w in wrappers.values()]
        if method == "cns":
            token = attach_trainable_token(te, s.token_id, te.get_input_embeddings().weight[0].float())
            params.append(token.vector)

            def states():
                with _amp(s):
                    return te(s.ids)[0]
        else:  # token frozen: the text states are computed once, as `cns learn --lr-token 0` does
            with torch.no_grad(), _amp(s):
                fixed_states = te(s.ids)[0]

            def states():
                return fixed_states

        def extra():
            return self_regularisation([w.coef for w in wrappers.values()], gram)
    elif method == "lora":
        from peft import LoraConfig

        s.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                      target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        params = [p for n, p in s.unet.named_parameters() if "lora" in n]
        for p in params:
            p.data = p.data.float()
        with torch.no_grad(), _amp(s):
            fixed = te(s.ids)[0]
        states, extra = (lambda: fixed), (lambda: 0.0)
    elif method == "kv_full":
        params = [m.weight for m in kv_layers(s.unet).values()]
        for p in params:
            p.data = p.data.float() if s.dtype == torch.float32 else p.data
            p.requires_grad_(True)
        with torch.no_grad(), _amp(s):
            fixed = te(s.ids)[0]
        states, extra = (lambda: fixed), (lambda: 0.0)
    else:
        raise ValueError(method)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    trainable = sum(p.numel() for p in params)

    def step() -> float:
        loss = _loss(s, s.unet, states()) + extra()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    step.trainable = trainable
    return step


def fake_concepts(kv: dict[str, int], text_dim: int, n: int, unet_parameters: int, rank: int = 4, seed: int = 0):
    """n concepts of the default size (budget rows spread over the layers, rank-4 coefficients, one token
    vector): what a bank of n learned concepts costs to store and apply, without training n concepts."""
    import numpy as np

    from cns_cli.method.select import budget_in_rows

    rng = np.random.default_rng(seed)
    layers, sizes = list(kv), np.array(list(kv.values()))
    n_rows = budget_in_rows(0.0013, unet_parameters, text_dim)
    out = []
    for i in range(n):
        pick = np.sort(rng.choice(int(sizes.sum()), size=min(n_rows, int(sizes.sum())), replace=False))
        edges = np.concatenate([[0], np.cumsum(sizes)])
        delta = {}
        for j, layer in enumerate(layers):
            rows = pick[(pick >= edges[j]) & (pick < edges[j + 1])] - edges[j]
            if rows.size:
                delta[f"{layer}.rows"] = rows.astype(np.int32)
                delta[f"{layer}.coef"] = (rng.standard_normal((rows.size, rank)) * 1e-3).astype(np.float32)
        out.append((f"c{i}", delta, rng.standard_normal((1, text_dim)).astype(np.float32) * 0.01))
    return out


def bank_with_concepts(path, base_path: str, n: int, seed: int = 0):
    """A bank on `base_path` holding n fake concepts (valid objects and revisions, one learn each)."""

    from cns_cli.bank import Bank, Basis, Concept, Operation
    from cns_cli.bank.models import Neurons, Slice
    from cns_cli.method.basis import allocate_slice, orthogonal_basis
    from cns_cli.model.loading import describe_base, load_pipeline, resolve_base

    spec = resolve_base(base_path)
    pipe = load_pipeline(spec)
    pointer = describe_base(spec, pipe)
    bank = Bank.create(path, pointer)
    if n == 0:
        return bank
    q = orthogonal_basis(pointer.text_dim)
    params = sum(p.numel() for p in pipe.unet.parameters())
    with bank.transaction() as tx:
        basis = Basis(object=tx.put({"Q": q}, "basis"), dim=pointer.text_dim, seed=0)
        concepts, used = {}, []
        for name, delta, emb in fake_concepts(pointer.kv_layers, pointer.text_dim, n, params, seed=seed):
            start, _ = allocate_slice(used, pointer.text_dim, 4)
            used.append((start, 4))
            per_layer = {k[:-5]: int(v.size) for k, v in delta.items() if k.endswith(".rows")}
            concepts[name] = Concept(
                token=f"<{name}>", class_word="thing", learned_in=1, slice=Slice(start=start, rank=4),
                neurons=Neurons(total=sum(per_layer.values()), per_layer=per_layer),
                delta=tx.put(delta, "delta", {"concept": name}), embedding=tx.put({"embedding": emb}, "embedding"),
                training={"fake": True}, stats={})
        tx.commit(Operation(kind="learn", concept=f"c{n - 1}", argv=["benchmark"]), concepts=concepts, basis=basis)
    return bank
