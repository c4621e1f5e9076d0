"""Loading a base model the way users name it, and describing it for the bank.

A base is a hub id (optionally `id@revision`), a local diffusers folder (with model_index.json) or a single
`.safetensors` checkpoint, of a family in model/family.py (SD 1.x, SD 2.x, SDXL); the family is read from the
configs or the checkpoint's tensor names before any weight loads, and anything else is refused then. A single
file loads offline with `config` (`--config DIR`): a diffusers folder of the same family, whose configs and
tokenizers diffusers uses instead of downloading them. Pickle checkpoints (.ckpt/.bin/.pt/.pth) are refused:
we never unpickle what a user hands us. Hub ids are looked up in the local cache first; a download is
attempted only when the hub is not switched off (HF_HUB_OFFLINE), and failure says how to fix it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..bank.models import BaseModelPointer, Fingerprint
from ..errors import ModelError, ModelMismatchError, UsageError
from . import family as families

KV_SUFFIXES = ("attn2.to_k", "attn2.to_v")
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class BaseSpec:
    kind: str  # "hub" | "local-dir" | "single-file" | "builtin"
    location: str
    revision: str | None = None
    config: str | None = None  # single-file: the diffusers folder its configs and tokenizers come from


BUILTIN_MODELS = ("demo",)


def builtin_path(name: str) -> Path:
    """Where a model that ships inside the package lives (package data, read-only)."""
    from importlib.resources import files

    return Path(str(files("cns_cli") / "data" / f"{name}-model"))


def resolve_base(spec: str, config: str | Path | None = None) -> BaseSpec:
    """Classify what the user typed after --base (and --config), without loading anything."""
    base = _resolve_base(spec)
    if config is None:
        return base
    if base.kind != "single-file":
        raise UsageError(f"--config is for a single .safetensors checkpoint; {spec} is a "
                         f"{'folder' if base.kind in ('local-dir', 'builtin') else 'hub id'} with its own configs: leave out --config")
    return BaseSpec(base.kind, base.location, None, _config_folder(config))


def _config_folder(config: str | Path) -> str:
    """The absolute path of a --config folder, which must be a diffusers folder."""
    folder = Path(config).expanduser()
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"--config {config} is not a diffusers folder (no model_index.json); pass a folder of a "
                         "model of the same family saved with save_pretrained (its weights are not needed)")
    return str(folder.resolve())


def _resolve_base(spec: str) -> BaseSpec:
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

    import huggingface_hub

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()  # its "Retrying in 8s [Retry 4/5]" lines: cns says it once
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def detect_family(spec: BaseSpec) -> str | None:
    """The family of `spec` from its configs or tensor names, loading no weights: refuses an unsupported model,
    a single file without a config folder offline, and a config folder of another family than the checkpoint.
    None for a hub id whose configs are not cached (its family is known once loaded)."""
    if spec.kind in ("local-dir", "builtin"):
        return families.family_of_folder(model_dir(spec), spec.location)
    if spec.kind == "single-file":
        found = families.family_of_checkpoint(Path(spec.location))
        if spec.config is None:
            why = "offline" if _offline() else hub_unreachable()
            if why:
                raise ModelError(_single_file_needs_config(spec, found, why))
            return found
        if not (Path(spec.config) / "model_index.json").is_file():  # a recorded folder that moved or was deleted
            raise ModelError(f"the config folder {spec.config} of {spec.location} is gone or not a diffusers folder; "
                             f"pass --config DIR, a diffusers folder of an {families.NAMES[found]} model")
        wanted = families.family_of_folder(Path(spec.config), f"the --config folder {spec.config}")
        if wanted != found:
            raise ModelError(f"the --config folder {spec.config} is an {families.NAMES[wanted]} model but "
                             f"{spec.location} is an {families.NAMES[found]} checkpoint; pass a config folder of an "
                             f"{families.NAMES[found]} model")
        return found
    index = _cached_json(spec, "model_index.json")
    if index is None and not _offline():
        if why := hub_unreachable():  # one quick look instead of five retries per file over half a minute
            raise ModelError(_hub_model_not_cached(spec, why))
        try:  # the one small file that says what the model is, before gigabytes of weights
            from diffusers import DiffusionPipeline

            index = dict(DiffusionPipeline.load_config(spec.location, revision=spec.revision))
        except Exception:  # not found, no network: the load below fails with the message that says so
            return None
    if index is None:
        return None
    return families.family_of_configs(index, _cached_json(spec, "text_encoder/config.json"),
                                      _cached_json(spec, "unet/config.json"), spec.location)


def _cached_json(spec: BaseSpec, name: str) -> dict | None:
    """A config file of a hub model from the local cache only (None when not cached or unreadable)."""
    import json

    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(spec.location, name, revision=spec.revision)
        doc = json.loads(Path(found).read_text(encoding="utf-8")) if isinstance(found, str) else None
    except Exception:  # a malformed id or revision, or an unreadable file: the loader will say so
        return None
    return doc if isinstance(doc, dict) else None


def _single_file_needs_config(spec: BaseSpec, family: str, why: str) -> str:
    return (f"{spec.location} is a single-file checkpoint, and its configs cannot be downloaded "
            f"({why}); pass --config DIR, a diffusers folder of an {families.NAMES[family]} model "
            "(its weights are not needed; `cns relocate --config DIR` records it in an existing bank)")


def _hub_model_not_cached(spec: BaseSpec, why: str) -> str:
    return (f"cannot download {spec.location}: the Hugging Face Hub cannot be reached ({why}) and the model is not "
            f"in the local cache; connect to the internet and run again (or `hf download {spec.location}` where there "
            "is one), or pass a local folder or .safetensors file with --base")


def _connection_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "no connection" in the HTTP stacks huggingface_hub and diffusers use: httpx2
    (huggingface_hub 1.x-2.x, named httpx in some versions) and requests (older ones), plus the socket level."""
    import importlib
    import socket

    found: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests.exceptions", ("ConnectionError", "Timeout"))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(found)


def connection_error(e: BaseException) -> BaseException | None:
    """The connection failure in `e`'s chain (libraries wrap it in OSError or their own errors), or None."""
    types = _connection_error_types()
    seen = 0
    while e is not None and seen < 16:
        if isinstance(e, types):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached, from one quick request (5 s, no retries) through
    huggingface_hub's own HTTP session (its proxies and endpoint); None when it answers at all. Asked before
    the first download of a run, so an offline machine gets one line at once instead of huggingface_hub's
    retries (five per file, 33 s)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=5)
    except Exception as e:  # noqa: BLE001 - only a connection failure is an answer; anything else: try the download
        lost = connection_error(e)
        return None if lost is None else f"{type(lost).__name__}: {lost}"[:200]
    return None


def load_pipeline(spec: BaseSpec):
    """The family's diffusers pipeline for `spec` (StableDiffusionPipeline or StableDiffusionXLPipeline) in
    float32 on the CPU, safety checker off. Callers check the fingerprint and apply deltas at full precision,
    then `place` it on the run's device and dtype."""
    quiet_libraries()
    import diffusers
    import torch

    family = detect_family(spec) or "sd1"  # refusals come before any weight loads (None: a hub id not cached)
    cls = getattr(diffusers, families.PIPELINE_CLASS[family])
    common = dict(dtype=torch.float32)
    if family != "sdxl":
        common |= dict(safety_checker=None, requires_safety_checker=False)
    try:
        if spec.kind == "single-file":
            extra = {"config": spec.config, "local_files_only": True} if spec.config else {"local_files_only": _offline()}
            pipe = cls.from_single_file(spec.location, **extra, **common)
        elif spec.kind == "local-dir":
            pipe = cls.from_pretrained(spec.location, local_files_only=True, **common)
        elif spec.kind == "builtin":
            pipe = cls.from_pretrained(builtin_path(spec.location), local_files_only=True, **common)
        else:
            try:
                pipe = cls.from_pretrained(spec.location, revision=spec.revision, local_files_only=True, **common)
            except (OSError, ValueError):
                if _offline():
                    raise
                pipe = cls.from_pretrained(spec.location, revision=spec.revision, **common)
    except ModelError:
        raise
    except Exception as e:  # diffusers raises OSError/ValueError/EnvironmentError with long texts
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        if (lost := connection_error(e)) is not None:  # the hub answered the first look, then the download failed
            why = f"{type(lost).__name__}: {lost}"[:200]
            if spec.kind == "single-file":
                raise ModelError(_single_file_needs_config(spec, families.family_of_checkpoint(Path(spec.location)), why)) from None
            raise ModelError(_hub_model_not_cached(spec, why)) from None
        if spec.kind == "hub":
            reason = first if len(first) <= 120 else first[:119] + "…"  # the advice after it is what matters
            raise ModelError(
                f"cannot load {spec.location} offline: it is not in the local Hugging Face cache ({reason}); "
                f"download it first (`hf download {spec.location}`) or pass a local folder or .safetensors file with --base"
            ) from None
        raise ModelError(f"cannot load the base model {spec.location}: {first}") from None
    families.family_of_pipeline(pipe)  # the UNet's conditioning agrees with the pipeline class
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None and len(tok) <= 2:  # transformers falls back silently to a 2-token tokenizer on a bad folder
            raise ModelError(f"the {name} of {spec.config or spec.location} loaded with only {len(tok)} tokens; "
                             "its tokenizer files are missing or unreadable")
    families.prediction_type_of(dict(pipe.scheduler.config), spec.location)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def place(pipe, device: str, dtype):
    """Move a loaded (and already personalised) pipeline to where it runs."""
    return pipe.to(device, dtype)


def kv_layers(unet) -> dict:
    """The cross-attention K/V projections of a UNet, by module path, in a stable (sorted) order. A projection
    that PEFT wrapped (diffusers' load_lora_weights without fuse_lora makes `attn2.to_k` a LoRA layer around
    `attn2.to_k.base_layer`) is found through the wrapper: its base Linear, under the path it had. Its weight is
    the base weight (a fused LoRA is in it, an unfused one is not), which is what the fingerprint, apply_bank and
    remove_bank work on, so a bank and an unfused LoRA can be applied and removed in either order."""
    import torch

    found = {}
    for name, m in unet.named_modules():
        base = m.get_base_layer() if hasattr(m, "get_base_layer") else m  # peft's BaseTunerLayer, possibly nested
        if name.endswith(KV_SUFFIXES) and isinstance(base, torch.nn.Linear):
            found[name] = base
    if not found:
        raise ModelError(f"the base UNet has no cross-attention to_k/to_v layers; cns works on {families.SUPPORTED}")
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
    """The bank's pointer to this base: where it is, its family, what it fingerprints to, the K/V layer shapes
    and the widths of its text encoders' token embeddings."""
    layers = kv_layers(pipe.unet)
    dims = {m.in_features for m in layers.values()}
    if len(dims) != 1:
        raise ModelError(f"the base's K/V layers have different input widths {sorted(dims)}; cns expects one text width")
    return BaseModelPointer(
        kind=spec.kind, location=spec.location, revision=spec.revision,
        fingerprint=Fingerprint(digest=fingerprint(pipe.unet)), text_dim=dims.pop(),
        kv_layers={name: m.out_features for name, m in layers.items()}, vocab_size=len(pipe.tokenizer),
        family=families.family_of_pipeline(pipe),
        prediction_type=families.prediction_type_of(dict(pipe.scheduler.config), spec.location),
        embedding_dims=[enc.get_input_embeddings().weight.shape[1] for _, enc in families.text_pairs(pipe)], config=spec.config,
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


def spec_of(pointer: BaseModelPointer, config: str | Path | None = None) -> BaseSpec:
    """What a bank's base pointer says to load; `config` (--config) replaces a single-file base's recorded config
    folder for one run (the folder moved, or a 1.1 bank recorded none). A recorded place that is gone is said
    before anything loads, with the command that re-points the bank (`cns relocate`)."""
    check_recorded_places(pointer, config_too=config is None)
    if config is None:
        return BaseSpec(pointer.kind, pointer.location, pointer.revision, pointer.config)
    return BaseSpec(pointer.kind, pointer.location, pointer.revision, _config_folder(config))


def check_recorded_places(pointer: BaseModelPointer, config_too: bool = True) -> None:
    """ModelError when the folder or file a bank records for its base (or, with `config_too`, its config folder)
    is not there any more: moved or deleted. The fix is `cns relocate`, which every bank command can follow
    (generate and export have no --config of their own)."""
    where = Path(pointer.location)
    gone = ((pointer.kind == "local-dir" and not (where / "model_index.json").is_file())
            or (pointer.kind == "single-file" and not where.is_file()))
    if gone:
        what = "folder" if pointer.kind == "local-dir" else ".safetensors file"
        raise ModelError(f"this bank's base model is not at {pointer.location} any more (moved or deleted?); "
                         f"`cns relocate NEW_PATH` points the bank at the {what}'s new place (it checks the model's "
                         "fingerprint)")
    if config_too and pointer.config and not (Path(pointer.config) / "model_index.json").is_file():
        raise ModelError(f"the config folder {pointer.config} this bank records for {pointer.location} is gone "
                         "(moved or deleted?); `cns relocate --config DIR` points the bank at its new place, or at "
                         f"another diffusers folder of an {families.NAMES[pointer.family_name]} model (weights not needed)")
