"""Shared pieces of the benchmarks: model shapes, and one step of the one training loop per method on the same model.

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
# SDXL 1.0 base: Stability's sd_xl_base.yaml as diffusers' converter maps it (70 attn2 layers, text width 2048).
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SDXL_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
SDXL_TEXT_2 = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
SDXL_EMBEDDING_DIMS = (768, 1280)
METHODS = ("cns", "cns_rows_only", "lora", "kv_full")  # cns_rows_only: `cns learn --lr-token 0`


def sd15_unet(device: str = "meta"):
    """An SD 1.5-config UNet with random weights (on the meta device: shapes only, no memory)."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel(**SD15_UNET)


def sdxl_unet(device: str = "meta"):
    """An SDXL-config UNet with random weights (meta device: shapes only)."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel(**SDXL_UNET)


def sd15_text_encoder(device: str = "cpu"):
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        return CLIPTextModel(CLIPTextConfig(**SD15_TEXT))


def sdxl_text_encoders(device: str = "cpu") -> list:
    """SDXL's two text encoders (CLIP ViT-L, OpenCLIP bigG with projection) with random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device(device):
        return [CLIPTextModel(CLIPTextConfig(**SDXL_TEXT)), CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2))]


class FixedIds:
    """Stands in for a tokenizer (no vocabulary can be downloaded): every call returns the first rows of fixed
    random token ids, so the product's own text code (cns_cli.model.text) runs unchanged on them."""

    model_max_length = 77
    added_tokens_encoder: dict = {}  # no added tokens: cns_cli.model.text leaves the prompts as they are

    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __call__(self, prompts, **_):
        from types import SimpleNamespace

        return SimpleNamespace(input_ids=self.ids[: len(prompts)])


class Setup:
    """Everything one step needs: unet, text encoder(s) (SDXL: two), scheduler, latents, token ids, device, dtype.
    `pipe` holds the tokenizers and text encoders under diffusers' attribute names and `conditioner` is the
    product's text.TextConditioner on it: text states (and SDXL's added conditioning) exactly as `cns learn`."""

    def __init__(self, unet, text_encoder, resolution: int, batch: int, device: str, dtype, seed: int = 0):
        from types import SimpleNamespace

        from diffusers import DDPMScheduler

        from cns_cli.model.text import TextConditioner

        encoders = list(text_encoder) if isinstance(text_encoder, (list, tuple)) else [text_encoder]
        self.unet = unet.to(device, dtype).requires_grad_(False)
        self.text_encoders = [te.to(device, dtype).requires_grad_(False) for te in encoders]
        self.text_encoder = self.text_encoders[0]
        self.device, self.dtype, self.batch = device, dtype, batch
        self.scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        g = torch.Generator().manual_seed(seed)
        latent = resolution // 8
        self.latents = torch.randn(batch, 4, latent, latent, generator=g).to(device)
        self.token_ids, tokenizers = [], []
        for te in self.text_encoders:
            vocab = te.config.vocab_size
            ids = torch.randint(0, vocab - 1, (batch, 77), generator=g)
            ids[:, 5] = vocab - 1  # stands in for the new concept token
            self.token_ids.append(vocab - 1)
            tokenizers.append(FixedIds(ids.to(device)))
        self.ids, self.token_id = tokenizers[0].ids, self.token_ids[0]
        names = [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
        self.pipe = SimpleNamespace(**{k: v for (kt, ke), tok, te in zip(names, tokenizers, self.text_encoders)
                                       for k, v in ((kt, tok), (ke, te))})
        self.conditioner = TextConditioner(self.pipe, size=resolution)
        self.gen = g


def _amp(s: Setup):
    from cns_cli.model.runtime import autocast

    return autocast(s.device, s.dtype)


def make_step(method: str, base: Setup, rows_budget: float = 0.0013, copy_model: bool = True):
    """A zero-argument callable doing one step of the one training loop (cns_cli.model.train.Trainer, what
    `cns learn` and `cns bench` run) for `method`, on its own copy of the UNet (or, with copy_model=False, on
    `base`'s UNet itself: for a process that measures one method only)."""
    from cns_cli.bench.methods import add_lora
    from cns_cli.method.basis import orthogonal_basis
    from cns_cli.method.delta import protection_gram
    from cns_cli.method.select import budget_in_rows
    from cns_cli.model.loading import kv_layers
    from cns_cli.model.train import Trainer, attach_trainable_token, cns_trainables, frozen_or_live_states

    s = copy.copy(base)
    s.unet = copy.deepcopy(base.unet) if copy_model else base.unet
    encoders = [copy.deepcopy(te) for te in base.text_encoders] if copy_model else base.text_encoders
    if copy_model:
        from types import SimpleNamespace

        from cns_cli.model.text import TextConditioner

        s.pipe = SimpleNamespace(**vars(base.pipe))
        for attr, te in zip(("text_encoder", "text_encoder_2"), encoders):
            setattr(s.pipe, attr, te)
        s.conditioner = TextConditioner(s.pipe, size=base.conditioner.size)
    extra = None
    if method in ("cns", "cns_rows_only"):
        layers = kv_layers(s.unet)
        d = next(iter(layers.values())).in_features
        n_rows = budget_in_rows(rows_budget, sum(p.numel() for p in s.unet.parameters()), d)
        sizes = torch.tensor([m.out_features for m in layers.values()])
        pick = torch.randperm(int(sizes.sum()), generator=torch.Generator().manual_seed(1))[:n_rows].sort().values
        offsets, rows = torch.cumsum(sizes, 0) - sizes, {}
        for (name, m), off in zip(layers.items(), offsets.tolist()):
            rows[name] = pick[(pick >= off) & (pick < off + m.out_features)] - off
        b = torch.from_numpy(orthogonal_basis(d))[:, :4].to(s.device)
        gram = protection_gram(torch.randn(280 * 77, d, device=s.device), b)
        inits = [te.get_input_embeddings().weight[:1].float() for te in encoders]  # (1, e): a 1-vector token
        tokens = [attach_trainable_token(e, [i], v) for e, i, v in zip(encoders, s.token_ids, inits, strict=True)]
        groups, extra, _ = cns_trainables(s.unet, rows, b, tokens, lr=1e-4, lr_token=1e-4 if method == "cns" else 0.0,
                                          reg_lambda=1.0, gram=gram)
    elif method == "lora":
        add_lora(s.unet, seed=0)
        groups = [{"params": [p for n, p in s.unet.named_parameters() if "lora" in n], "lr": 1e-4}]
        for p in groups[0]["params"]:
            p.data = p.data.float()
    elif method == "kv_full":
        groups = [{"params": [m.weight for m in kv_layers(s.unet).values()], "lr": 1e-4}]
        for p in groups[0]["params"]:
            p.data = p.data.float() if s.dtype == torch.float32 else p.data
            p.requires_grad_(True)
    else:
        raise ValueError(method)
    # The token trains in "cns": the text encoders run in every step, as in `cns learn`; otherwise the text side is
    # frozen and encoded once (`cns learn --lr-token 0`, the LoRA and K/V baselines): the product's own choice.
    prompts = [f"image {i}" for i in range(s.batch)]  # stand-ins: the Setup's token ids are the prompts
    states = frozen_or_live_states(s.conditioner, prompts, method != "cns", lambda: _amp(s))
    trainer = Trainer(s.unet, s.scheduler, s.latents, prompts, states, groups, batch=s.batch, gen=s.gen,
                      amp=lambda: _amp(s))

    def step() -> float:  # the step `cns learn` runs: nothing re-implemented here
        return trainer.step()

    step.trainable = sum(p.numel() for p in trainer.parameters)
    return step


def fake_concepts(kv: dict[str, int], text_dim: int, n: int, unet_parameters: int, rank: int = 4, seed: int = 0,
                  embedding_dims: tuple[int, ...] | None = None):
    """n concepts of the default size (budget rows spread over the layers, rank-4 coefficients, one token
    vector per text encoder): what a bank of n learned concepts costs to store and apply, without training n
    concepts. Each item: (name, delta object's tensors, embedding object's tensors)."""
    import numpy as np

    from cns_cli.bank.delta import encode_delta
    from cns_cli.method.select import budget_in_rows

    rng = np.random.default_rng(seed)
    layers, sizes = list(kv), np.array(list(kv.values()))
    n_rows = budget_in_rows(0.0013, unet_parameters, text_dim)
    out = []
    for i in range(n):
        pick = np.sort(rng.choice(int(sizes.sum()), size=min(n_rows, int(sizes.sum())), replace=False))
        edges = np.concatenate([[0], np.cumsum(sizes)])
        parts = {}
        for j, layer in enumerate(layers):
            rows = pick[(pick >= edges[j]) & (pick < edges[j + 1])] - edges[j]
            if rows.size:
                parts[layer] = (rows, (rng.standard_normal((rows.size, rank)) * 1e-3).astype(np.float32))
        delta = encode_delta(parts)  # the delta object's tensors (cns_cli/bank/delta.py)
        widths = embedding_dims or (text_dim,)
        embedding = {key: rng.standard_normal((1, w)).astype(np.float32) * 0.01
                     for key, w in zip(("embedding", "embedding_2"), widths)}
        out.append((f"c{i}", delta, embedding))
    return out


def bank_with_concepts(path, base_path: str, n: int, seed: int = 0):
    """A bank on `base_path` holding n fake concepts (valid objects and revisions, one learn each)."""

    from cns_cli.bank import Bank, Basis, Concept, Operation
    from cns_cli.bank.delta import decode_delta
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
            per_layer = {layer: d.n for layer, d in decode_delta(delta).items()}
            concepts[name] = Concept(
                token=f"<{name}>", class_word="thing", learned_in=1, slice=Slice(start=start, rank=4),
                neurons=Neurons(total=sum(per_layer.values()), per_layer=per_layer),
                delta=tx.put(delta, "delta", {"concept": name}), embedding=tx.put(emb, "embedding"),
                training={"fake": True}, stats={})
        tx.commit(Operation(kind="learn", concept=f"c{n - 1}", argv=["benchmark"]), concepts=concepts, basis=basis)
    return bank
