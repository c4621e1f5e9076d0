"""The methods `cns bench` compares. Each learns concepts one at a time (`learn`) and hands out the model as it
stands (`pipeline`: a float32 StableDiffusionPipeline with every concept learned so far).

cns and its ablations run the real `cns learn` into a bank of their own, so their bytes are the bank's and
their images are `cns generate`'s. The baselines run in memory with `trainer.train_concept`. Every method
learns one new token per concept (`vectors` vectors, each started at its class word's embedding, lr_token as cns),
so they differ only in what they change in the UNet:

  kv-finetune   every cross-attention K/V weight, carried from concept to concept (Custom Diffusion, continual)
  lora-seq      one LoRA (rank 4 on to_q/to_k/to_v/to_out.0 of every attention, the diffusers DreamBooth-LoRA
                default), trained on concept after concept
  lora-merge    one LoRA per concept trained on the base, all summed into the weights (merge)
  ti            nothing: textual inversion alone

Storage ("bytes") is what a user must keep after k concepts, float32: the bank's objects for cns; the K/V
weights for kv-finetune; the adapter for lora-seq; every adapter for lora-merge; plus the token vectors.
"params_trained" and "weights_changed" count the token's k vectors as k x text_dim.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

from ..learn import LearnConfig
from .trainer import ConceptData, prepare, train_concept

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass(frozen=True)
class MethodInfo:
    key: str
    group: str  # "cns", "ablation" or "baseline"
    label: str
    learn_overrides: dict = field(default_factory=dict)  # LearnConfig fields (cns and ablations)


METHODS: dict[str, MethodInfo] = {m.key: m for m in (
    MethodInfo("cns", "cns", "CNS (defaults)"),
    MethodInfo("cns-keep-general", "ablation", "no general-neuron removal", {"remove_general": False}),
    MethodInfo("cns-random", "ablation", "random neurons, same budget", {"selection": "random"}),
    MethodInfo("cns-dense", "ablation", "dense rows (rank = text width, no slices)", {"rank": "text_dim", "slice": "shared"}),
    MethodInfo("cns-no-reg", "ablation", "no protection (no drift budget, no penalty)", {"max_drift": None, "reg_lambda": 0.0}),
    MethodInfo("cns-lambda", "ablation", "0.x's protection: the penalty λ = 1, no drift budget", {"max_drift": None, "reg_lambda": 1.0}),
    MethodInfo("kv-finetune", "baseline", "continual K/V fine-tuning (Custom Diffusion)"),
    MethodInfo("lora-seq", "baseline", "one LoRA r4, trained sequentially"),
    MethodInfo("lora-merge", "baseline", "a LoRA r4 per concept, summed"),
    MethodInfo("ti", "baseline", "textual inversion only"),
)}

# Learning rates of the baselines' UNet parameters. LoRA: the DreamBooth-LoRA script's 1e-4 is tuned for SD's
# 400+ steps; at the bench's step budget we use 1e-3 (a LoRA's B starts at 0, so it needs the larger step).
# K/V fine-tuning moves every row, so it gets cns's row-coefficient lr / 10 (Custom Diffusion: 1e-5 at SD scale).
BASELINE_LR = {"kv-finetune": 1e-4, "lora-seq": 1e-3, "lora-merge": 1e-3, "ti": 0.0}


@dataclass(frozen=True)
class Budget:
    """What every method gets: the same steps per concept, seed, token lr, base model and device."""

    base: str
    steps: int
    seed: int
    text_dim: int  # the base's text width: a token's size, and the dense ablation's rank
    lr_token: float = LearnConfig.lr_token  # every method's token learns at cns's default rate
    vectors: int = LearnConfig.vectors  # every method's token has this many vectors (<name>, <name>_1, …)
    device: str = "cpu"
    new_basis: Any = field(default=None, compare=False, repr=False)  # (d, d) Q for new banks: experiments only


def make_method(key: str, budget: Budget, workdir: Path):
    info = METHODS[key]
    if info.group in ("cns", "ablation"):
        return BankMethod(info, budget, workdir / f"{key}.cnsbank")
    return {"kv-finetune": KVFinetune, "lora-seq": LoraSequential, "lora-merge": LoraMerge,
            "ti": TextualInversion}[key](info, budget)


class BankMethod:
    """cns (or an ablation): `cns learn` into its own bank; the model is `cns generate`'s pipeline."""

    def __init__(self, info: MethodInfo, budget: Budget, bank_path: Path):
        self.info, self.budget, self.bank_path = info, budget, bank_path
        self.bytes_total = 0
        self._pipe = None  # the base, loaded once by `pipeline`
        self._applied = None  # the concepts in it now (an AppliedConcepts)

    def learn(self, c: ConceptData) -> dict:
        from ..learn import LearnConfig, learn

        overrides = dict(self.info.learn_overrides)
        if overrides.get("rank") == "text_dim":
            overrides["rank"] = self.budget.text_dim
        cfg = LearnConfig(steps=self.budget.steps, seed=self.budget.seed, lr_token=self.budget.lr_token,
                          vectors=self.budget.vectors, device=self.budget.device, **overrides)
        outcome = learn(self.bank_path, c.name, c.photos, class_word=c.cls, base=self.budget.base, config=cfg,
                        new_basis=self.budget.new_basis)
        plan = outcome.plan
        self.bytes_total += plan["bytes_to_store"]
        text_dim = self.budget.text_dim
        return {"seconds": outcome.stats["seconds"], "params_trained": plan["parameters_trained"]["total"],
                "weights_changed": plan["neurons"] * text_dim + self.budget.vectors * text_dim,
                "bytes_total": self.bytes_total,
                "final_loss": outcome.stats["final_loss"]}

    def pipeline(self):
        """The bank's HEAD applied to one base pipeline, loaded (and fingerprint-checked) on the first call only:
        later calls take the previous concepts out exactly (bank_apply.apply_concepts) and apply the new HEAD's, so
        the pipeline is bit for bit `cns generate`'s without reloading the base after every concept."""
        from ..bank import Bank
        from ..model.bank_apply import apply_concepts
        from ..model.personalised import load_personalised

        bank = Bank.open(self.bank_path)
        rev = bank.head()
        if self._pipe is None:
            self._pipe = load_personalised(bank, rev, [], self.budget.device)
        if self._applied is not None:
            self._applied.remove()
            self._applied = None
        self._applied = apply_concepts(self._pipe, bank, rev)
        return self._pipe


class InMemoryMethod:
    """A baseline: one live float32 pipeline; `unet_params` / `after` say what it trains and keeps."""

    def __init__(self, info: MethodInfo, budget: Budget):
        from ..model.loading import load_pipeline, resolve_base

        self.info, self.budget = info, budget
        self.pipe = load_pipeline(resolve_base(budget.base)).to(budget.device)
        self.pipe.unet.requires_grad_(False)
        self.pipe.text_encoder.requires_grad_(False)
        self.pipe.vae.requires_grad_(False)
        self.text_dim = budget.text_dim
        self.count = 0

    def learn(self, c: ConceptData) -> dict:
        import time

        from ..bank.names import token_for
        from ..model import tokens

        t0 = time.perf_counter()
        pipe = self.pipe
        init = tokens.class_word_start(pipe.tokenizer, pipe.text_encoder, c.cls, self.budget.vectors)  # (k, e)
        (token_ids,) = tokens.add_tokens_everywhere([(pipe.tokenizer, pipe.text_encoder)], [(token_for(c.name), [init])])
        latents, prompts = prepare(pipe, c)
        wrapper = tokens.attach_trainable_token(pipe.text_encoder, token_ids, init)
        unet, params = self.trainable_unet()
        unet.train()
        try:
            losses = train_concept(unet, pipe, latents, prompts, params, wrapper.vectors, steps=self.budget.steps,
                                   lr=BASELINE_LR[self.info.key], lr_token=self.budget.lr_token,
                                   seed=self.budget.seed)
        finally:
            unet.eval()
            pipe.text_encoder.set_input_embeddings(wrapper.base)
            self._keep(wrapper)
            for p in params:
                p.requires_grad_(False)
        self.count += 1
        self.after(unet)
        tail = losses[-max(1, len(losses) // 10):]
        token = self.budget.vectors * self.text_dim  # the values of the token's k vectors
        return {"seconds": round(time.perf_counter() - t0, 3), "params_trained": sum(p.numel() for p in params) + token,
                "weights_changed": self.weights_changed() + token,
                "bytes_total": 4 * (self.stored_values() + token * self.count),
                "final_loss": sum(tail) / len(tail)}

    @staticmethod
    def _keep(wrapper) -> None:
        """The trained vectors into the embedding table's rows of the token's k ids."""
        import torch

        with torch.no_grad():
            weight = wrapper.base.weight
            weight[torch.tensor(wrapper.token_ids)] = wrapper.vectors.detach().to(weight)

    def pipeline(self):
        return self.pipe

    # hooks ---------------------------------------------------------------------------------------------
    def trainable_unet(self):
        """(the UNet to train with, its trainable tensors (requires_grad set))."""
        return self.pipe.unet, []

    def after(self, unet) -> None:
        """Called after each concept's training."""

    def weights_changed(self) -> int:
        return 0

    def stored_values(self) -> int:
        return 0


class TextualInversion(InMemoryMethod):
    pass


class KVFinetune(InMemoryMethod):
    def _weights(self):
        from ..model.loading import kv_layers

        return [layer.weight for layer in kv_layers(self.pipe.unet).values()]

    def trainable_unet(self):
        params = self._weights()
        for p in params:
            p.requires_grad_(True)
        return self.pipe.unet, params

    def weights_changed(self) -> int:
        return sum(w.numel() for w in self._weights())

    def stored_values(self) -> int:
        return self.weights_changed()


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=LORA_TARGETS)


def add_lora(unet, seed: int) -> None:
    """Adds the adapter with its random initial A drawn from `seed`: peft draws it from torch's global RNG, so
    without this the LoRA baselines started from other weights in every run (two 8-concept runs differed by 7
    points of zero-shot accuracy)."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet.add_adapter(_lora_config())


def _lora_params(unet) -> list:
    params = []
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_" in name:
            params.append(p)
    return params


def _target_weights(unet) -> int:
    import torch

    return sum(m.weight.numel() for n, m in unet.named_modules()
               if isinstance(m, torch.nn.Linear) and n.endswith(tuple("." + t for t in LORA_TARGETS)) and "lora_" not in n)


class LoraSequential(InMemoryMethod):
    """One adapter on the live UNet, kept and trained further on every concept (never merged)."""

    def trainable_unet(self):
        if self.count == 0:
            self.targets = _target_weights(self.pipe.unet)
            add_lora(self.pipe.unet, self.budget.seed)
        return self.pipe.unet, _lora_params(self.pipe.unet)

    def weights_changed(self) -> int:
        return self.targets

    def stored_values(self) -> int:
        return sum(p.numel() for n, p in self.pipe.unet.named_parameters() if "lora_" in n)


class LoraMerge(InMemoryMethod):
    """A fresh adapter per concept on a copy of the base UNet; the live UNet is base + Σ ΔW of all of them."""

    def __init__(self, info: MethodInfo, budget: Budget):
        super().__init__(info, budget)
        self.base_unet = copy.deepcopy(self.pipe.unet)
        self.targets = _target_weights(self.base_unet)
        self.adapter_values = 0

    def trainable_unet(self):
        unet = copy.deepcopy(self.base_unet)
        add_lora(unet, self.budget.seed * 1_000 + self.count)  # a different start per concept, the same every run
        params = _lora_params(unet)
        self.adapter_values = sum(p.numel() for p in params)
        return unet, params

    def after(self, unet) -> None:
        import torch
        from peft.tuners.lora import LoraLayer

        live = dict(self.pipe.unet.named_modules())
        with torch.no_grad():
            for name, module in unet.named_modules():
                if isinstance(module, LoraLayer):
                    target = live[name]
                    target.weight += module.get_delta_weight("default").to(target.weight)

    def weights_changed(self) -> int:
        return self.targets

    def stored_values(self) -> int:
        return self.adapter_values * self.count
