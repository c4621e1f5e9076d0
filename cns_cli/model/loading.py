"""Loading a base model the way users name it, and describing it for the bank.

A base is a hub id (optionally `id@revision`), a local diffusers folder (with model_index.json) or a single
`.safetensors` checkpoint. Pickle checkpoints (.ckpt/.bin/.pt/.pth) are refused: we never unpickle what a
user hands us. Hub ids are looked up in the local cache first; a download is attempted only when the hub is
not switched off (HF_HUB_OFFLINE), and failure says how to fix it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..bank.models import BaseModelPointer, Fingerprint
from ..errors import ModelError, ModelMismatchError

KV_SUFFIXES = ("attn2.to_k", "attn2.to_v")
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BaseSpec:
    kind: str  # "hub" | "local-dir" | "single-file"
    location: str
    revision: str | None = None


BUILTIN_MODELS = ("demo",)


def builtin_path(name: str) -> Path:
    """Where a model that ships inside the package lives (package data, read-only)."""
    from importlib.resources import files

    return Path(str(files("cns_cli") / "data" / f"{name}-model"))


def resolve_base(spec: str) -> BaseSpec:
    """Classify what the user typed after --base, without loading anything."""
    if spec in BUILTIN_MODELS:
        if not (builtin_path(spec) / "model_index.json").is_file():
            raise ModelError(f"the {spec} model is not bundled with this build of cns; train one with "
                             "`python tools/train_demo_model.py OUT` (in a clone of the cns repository) and pass --base OUT/pipeline")
        return BaseSpec("builtin", spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{spec} is a folder but not a diffusers pipeline (no model_index.json); "
                             "pass a folder saved with save_pretrained, a .safetensors file or a hub id")
        return BaseSpec("local-dir", str(path.resolve()))
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(f"{spec} is a pickle checkpoint, which cns never loads (it can run code); "
                         "convert it to .safetensors first")
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise ModelError(f"{spec} is not a .safetensors checkpoint; pass a diffusers folder or a .safetensors file")
        return BaseSpec("single-file", str(path.resolve()))
    repo, _, rev = spec.partition("@")
    if _HUB_ID.match(repo):
        return BaseSpec("hub", repo, rev or None)
    raise ModelError(f"base model {spec!r} is neither an existing path nor a hub id like 'org/model'; check the spelling")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def quiet_libraries() -> None:
    """diffusers/transformers print progress bars and advisory warnings; cns reports progress itself."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read at import time by transformers
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_pipeline(spec: BaseSpec):
    """A StableDiffusionPipeline for `spec` in float32 on the CPU, safety checker off. Callers check the
    fingerprint and apply deltas at full precision, then `place` it on the run's device and dtype."""
    quiet_libraries()
    import torch
    from diffusers import StableDiffusionPipeline

    common = dict(dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    try:
        if spec.kind == "single-file":
            pipe = StableDiffusionPipeline.from_single_file(spec.location, local_files_only=_offline(), **common)
        elif spec.kind == "local-dir":
            pipe = StableDiffusionPipeline.from_pretrained(spec.location, local_files_only=True, **common)
        elif spec.kind == "builtin":
            pipe = StableDiffusionPipeline.from_pretrained(builtin_path(spec.location), local_files_only=True, **common)
        else:
            try:
                pipe = StableDiffusionPipeline.from_pretrained(spec.location, revision=spec.revision, local_files_only=True, **common)
            except (OSError, ValueError):
                if _offline():
                    raise
                pipe = StableDiffusionPipeline.from_pretrained(spec.location, revision=spec.revision, **common)
    except ModelError:
        raise
    except Exception as e:  # diffusers raises OSError/ValueError/EnvironmentError with long texts
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if spec.kind == "hub":
            raise ModelError(
                f"cannot load {spec.location} offline: it is not in the local Hugging Face cache ({first}); "
                f"download it first (`hf download {spec.location}`) or pass a local folder or .safetensors file with --base"
            ) from None
        raise ModelError(f"cannot load the base model {spec.location}: {first}") from None
    if len(pipe.tokenizer) <= 2:  # transformers falls back silently to a 2-token tokenizer on a bad folder
        raise ModelError(f"the tokenizer of {spec.location} loaded with only {len(pipe.tokenizer)} tokens; "
                         "its tokenizer files are missing or unreadable")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def place(pipe, device: str, dtype):
    """Move a loaded (and already personalised) pipeline to where it runs."""
    return pipe.to(device, dtype)


def kv_layers(unet) -> dict:
    """The cross-attention K/V projections of a UNet, by module path, in a stable (sorted) order."""
    import torch

    found = {name: m for name, m in unet.named_modules() if name.endswith(KV_SUFFIXES) and isinstance(m, torch.nn.Linear)}
    if not found:
        raise ModelError("the base UNet has no cross-attention to_k/to_v layers; cns needs a Stable-Diffusion-style UNet")
    return dict(sorted(found.items()))


def fingerprint(unet) -> str:
    """Scheme kv-sha256-v1 (format/SPEC.md): sha256 over every attn2.to_k/to_v weight sorted by path, each
    as UTF-8 path, NUL, shape as little-endian int64s, float32 little-endian bytes."""
    import numpy as np
    import torch

    h = hashlib.sha256()
    for name, layer in kv_layers(unet).items():
        w = layer.weight.detach().to("cpu", torch.float32).contiguous().numpy()
        h.update(name.encode() + b"\0" + np.asarray(w.shape, dtype="<i8").tobytes())
        h.update(w.astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def describe_base(spec: BaseSpec, pipe) -> BaseModelPointer:
    """The bank's pointer to this base: where it is, what it fingerprints to, the K/V layer shapes."""
    layers = kv_layers(pipe.unet)
    dims = {m.in_features for m in layers.values()}
    if len(dims) != 1:
        raise ModelError(f"the base's K/V layers have different input widths {sorted(dims)}; cns expects one text width")
    return BaseModelPointer(
        kind=spec.kind, location=spec.location, revision=spec.revision,
        fingerprint=Fingerprint(digest=fingerprint(pipe.unet)), text_dim=dims.pop(),
        kv_layers={name: m.out_features for name, m in layers.items()}, vocab_size=len(pipe.tokenizer),
    )


def check_matches(pointer: BaseModelPointer, pipe) -> None:
    """Refuse to apply a bank to a base it was not built on."""
    got = fingerprint(pipe.unet)
    if got != pointer.fingerprint.digest:
        raise ModelMismatchError(
            f"the base model at {pointer.location} is not the one this bank was built on "
            f"(fingerprint {got[:12]}… vs {pointer.fingerprint.digest[:12]}…); restore the original base or start a new bank"
        )


def model_dir(spec: BaseSpec) -> Path | None:
    """The base model's folder on disk when it has one we may read extra files from (bundled or a local
    diffusers folder); None for hub ids and single files."""
    if spec.kind == "builtin":
        return builtin_path(spec.location)
    if spec.kind == "local-dir":
        return Path(spec.location)
    return None


def spec_of(pointer: BaseModelPointer) -> BaseSpec:
    return BaseSpec(pointer.kind, pointer.location, pointer.revision)
