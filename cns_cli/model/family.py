"""Which model families cns works on, and telling them apart from configs or a checkpoint's tensor names
(never by loading weights), so an unsupported model is refused before a long load.

    sd1   SD 1.x   StableDiffusionPipeline, CLIP ViT-L text encoder (quick_gelu)
    sd2   SD 2.x   StableDiffusionPipeline, OpenCLIP-H text encoder (gelu); epsilon or v-prediction
    sdxl  SDXL     StableDiffusionXLPipeline: two text encoders, added "text_time" conditioning

SD 1.x and 2.x share a pipeline class and a UNet layout; the text encoder tells them apart (in a diffusers folder
its config's activation, in a single-file checkpoint its key names), as in diffusers' own single-file loader.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..bank.models import FAMILIES
from ..errors import ModelError

NAMES = dict(zip(FAMILIES, ("SD 1.x", "SD 2.x", "SDXL")))
SUPPORTED = "SD 1.x, SD 2.x and SDXL text-to-image models"
PIPELINE_CLASS = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
PREDICTION_TYPES = ("epsilon", "v_prediction")
# What common unsupported pipelines are, in words people use
_KNOWN = {"StableDiffusion3Pipeline": "SD 3", "FluxPipeline": "Flux", "Flux2Pipeline": "Flux 2",
          "StableDiffusionXLImg2ImgPipeline": "an SDXL refiner / img2img model",
          "StableDiffusionInpaintPipeline": "an inpainting model", "StableDiffusionXLInpaintPipeline": "an inpainting model",
          "StableCascadeDecoderPipeline": "Stable Cascade", "PixArtAlphaPipeline": "PixArt", "DDPMPipeline": "an unconditional UNet",
          "KandinskyV22Pipeline": "Kandinsky"}


def unsupported(where: str, what: str) -> ModelError:
    return ModelError(f"{where} is {what}, which cns does not support; cns works on {SUPPORTED} "
                      "(a UNet with cross-attention)")


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def pipeline_class_of(model_index: dict, where: str) -> str:
    """The supported diffusers pipeline class a model_index.json names, or a refusal naming what it is."""
    name = model_index.get("_class_name")
    if name not in set(PIPELINE_CLASS.values()):
        raise unsupported(where, _KNOWN.get(name, f"a {name or 'pipeline without a class name'}"))
    return name


def family_of_configs(model_index: dict, text_encoder: dict | None, unet: dict | None, where: str) -> str:
    """sd1 / sd2 / sdxl from a diffusers folder's configs (model_index.json, text_encoder/ and unet/config.json)."""
    cls = pipeline_class_of(model_index, where)
    if unet is not None:
        blocks = [*unet.get("down_block_types", ()), *unet.get("up_block_types", ()), str(unet.get("mid_block_type"))]
        if not any("CrossAttn" in str(b) for b in blocks):
            raise unsupported(where, "a UNet without cross-attention")
    if cls == "StableDiffusionXLPipeline":
        if unet is not None and unet.get("addition_embed_type") != "text_time":
            raise unsupported(where, "an SDXL-like pipeline whose UNet lacks the \"text_time\" conditioning")
        return "sdxl"
    return "sd2" if (text_encoder or {}).get("hidden_act") == "gelu" else "sd1"


def family_of_folder(folder: Path, where: str | None = None) -> str:
    where = where or str(folder)
    index = _read_json(folder / "model_index.json")
    if index is None:
        raise ModelError(f"{where} has no readable model_index.json; pass a folder saved with save_pretrained")
    return family_of_configs(index, _read_json(folder / "text_encoder" / "config.json"),
                             _read_json(folder / "unet" / "config.json"), where)


def prediction_type_of(scheduler_config: dict | None, where: str) -> str:
    kind = (scheduler_config or {}).get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise unsupported(where, f"a model whose scheduler predicts {kind!r} (cns trains epsilon and v_prediction models)")
    return kind


def family_of_checkpoint(path: Path) -> str:
    """sd1 / sd2 / sdxl from the tensor names of an original-layout .safetensors checkpoint (its header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            keys = set(f.keys())
            conv_in = "model.diffusion_model.input_blocks.0.0.weight"
            in_channels = f.get_slice(conv_in).get_shape()[1] if conv_in in keys else None
    except Exception as e:  # a safetensors error of any kind: the file is not a readable checkpoint
        raise ModelError(f"{path} is not a readable .safetensors checkpoint ({type(e).__name__}); check the file") from None
    where = str(path)
    if any(".joint_blocks." in k or k.startswith("joint_blocks.") for k in keys):
        raise unsupported(where, "an SD 3 checkpoint")
    if any("double_blocks." in k for k in keys):
        raise unsupported(where, "a Flux checkpoint")
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise unsupported(where, "not a Stable Diffusion checkpoint (no model.diffusion_model.* UNet tensors)")
    if not any(k.startswith("model.diffusion_model.") and ".attn2.to_k." in k for k in keys):
        raise unsupported(where, "a UNet without cross-attention")
    if in_channels not in (None, 4):
        raise unsupported(where, f"an inpainting or other {in_channels}-channel UNet")
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        return "sdxl"
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        raise unsupported(where, "an SDXL refiner")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd1"
    raise unsupported(where, "a checkpoint without a text encoder cns recognises")


def text_pairs(pipe) -> list[tuple]:
    """(tokenizer, text encoder) of every text encoder of `pipe`, in pipeline order (SDXL: two)."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def family_of_pipeline(pipe) -> str:
    """The family of a loaded pipeline (the same rules as for its configs)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        if pipe.unet.config.get("addition_embed_type") != "text_time":
            raise unsupported("this pipeline", "an SDXL-like pipeline whose UNet lacks the \"text_time\" conditioning")
        return "sdxl"
    return "sd2" if pipe.text_encoder.config.hidden_act == "gelu" else "sd1"

