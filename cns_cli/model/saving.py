"""Saving a pipeline folder that every reader loads: diffusers with transformers 4.x or 5, ComfyUI's diffusers
loader, and anything that reads the hub's Stable Diffusion folders (issue 34).

`save_pretrained` under transformers 5 alone is not that:
- a CLIPTextModel that was not loaded from a `text_model.`-prefixed file (built here, or loaded from a single-file
  checkpoint or a folder transformers 5 wrote) is saved without that prefix. Every SD 1.x / 2.x / XL text encoder
  on the hub has it; transformers 4.x reads an unprefixed file as "no weights" (a warning, then a randomly
  initialised encoder) and ComfyUI reports every key missing. transformers 5 reads both spellings.
- a tokenizer is saved as tokenizer.json only, while model_index.json names the slow `CLIPTokenizer`, which
  transformers 4.x builds from vocab.json + merges.txt (+ added_tokens.json for the concept tokens).
- a component over the library's default shard size is split into shards: SDXL's float32 UNet (10.3 GB) is
  over diffusers' 10 GB, and ComfyUI's diffusers loader reads only unsharded `diffusion_pytorch_model.safetensors`.

So `save_pipeline` writes one file per component (as the hub's folders have), every CLIP text encoder under the
hub's key names, and the slow tokenizer's files next to the fast one's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ONE_FILE = 2**50  # bytes: max_shard_size larger than any model, so no component is split into shards
TEXT_WEIGHTS = "model.safetensors"  # transformers' name for an unsharded safetensors checkpoint
HUB_PREFIX = "text_model."  # the CLIPTextTransformer's name inside CLIPTextModel(WithProjection) in transformers 4.x
OWN_KEYS = ("text_projection.",)  # CLIPTextModelWithProjection's projection sits beside text_model, not in it


def hub_key(key: str) -> str:
    """A CLIP text encoder weight's name as on the hub (and as transformers 4.x writes it): under `text_model.`,
    except the projection of CLIPTextModelWithProjection. Idempotent."""
    return key if key.startswith(HUB_PREFIX) or key.startswith(OWN_KEYS) else HUB_PREFIX + key


def save_pipeline(pipe, folder: str | Path) -> Path:
    """`pipe.save_pretrained(folder)` in safetensors, one file per component, then each CLIP text encoder's file
    under the hub's key names and each fast tokenizer's slow files beside it."""
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True, max_shard_size=ONE_FILE)
    for name, component in pipe.components.items():
        if _is_clip_text_encoder(component):
            hub_text_encoder_keys(folder / name / TEXT_WEIGHTS)
        elif hasattr(component, "backend_tokenizer"):
            write_slow_tokenizer_files(component, folder / name)
    return folder


def _is_clip_text_encoder(component) -> bool:
    return getattr(getattr(component, "config", None), "model_type", None) == "clip_text_model"


def hub_text_encoder_keys(path: Path) -> None:
    """Rename the weights of the text encoder file at `path` to hub_key(name), in place (a no-op when they already
    are); the tensors and the file's metadata are kept as transformers wrote them."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        names, metadata = list(f.keys()), f.metadata()
        if all(hub_key(k) == k for k in names):
            return
        tensors = {hub_key(k): f.get_tensor(k) for k in names}  # one encoder in memory: ≤ 2.8 GB (SDXL's 2nd, fp32)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def write_slow_tokenizer_files(tokenizer, folder: Path) -> None:
    """Beside tokenizer.json, the files transformers 4.x's slow CLIPTokenizer reads and writes: vocab.json and
    merges.txt (the BPE model, written by the `tokenizers` library itself), added_tokens.json (tokens added on top
    of the BPE vocabulary, such as a concept's `<dog>`, with their ids) and special_tokens_map.json."""
    backend = tokenizer.backend_tokenizer  # a `tokenizers.Tokenizer`
    model = backend.model
    if type(model).__name__ != "BPE":
        return  # only CLIP's byte-level BPE has a slow twin that reads vocab.json + merges.txt
    model.save(str(folder))  # -> vocab.json, merges.txt
    vocab = backend.get_vocab(with_added_tokens=False)
    added = {t: i for t, i in sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1]) if t not in vocab}
    if added:  # as transformers 4.x writes it: only when there are such tokens
        _write_json(folder / "added_tokens.json", added)
    _write_json(folder / "special_tokens_map.json", {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)})


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")
