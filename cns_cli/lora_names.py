"""How other tools name a LoRA's layers and describe its base, per model family (`cns export`).

kohya trains SD 1.x / 2.x LoRAs on the diffusers UNet layout, so their keys keep diffusers' module paths; for
SDXL it trains on the original (SGM) layout, and A1111, ComfyUI and diffusers' SDXL loader expect those names
(kohya-ss/sd-scripts library/sdxl_model_util.py; A1111 extensions-builtin/Lora/networks.py; ComfyUI
comfy/utils.py). With L = layers_per_block, the attention blocks map as

    down_blocks.{b}.attentions.{j}   ->  input_blocks.{1 + b·(L+1) + j}.1
    mid_block.attentions.0           ->  middle_block.1
    up_blocks.{b}.attentions.{j}     ->  output_blocks.{b·(L+1) + j}.1

and the rest of the path (transformer_blocks.{t}.attn2.to_k) is unchanged. A file must never mix the two
spellings: diffusers' SDXL loader then drops the SGM keys silently.
"""

from __future__ import annotations

import re

# (family, prediction type) -> (ss_base_model_version, ss_v2, modelspec.architecture, modelspec.resolution, modelspec.prediction_type)
# from sd-scripts library/sai_model_spec.py and library/model_util.py.
KOHYA_BASES = {
    ("sd1", "epsilon"): ("sd_v1", "False", "stable-diffusion-v1/lora", "512x512", "epsilon"),
    ("sd2", "epsilon"): ("sd_v2", "True", "stable-diffusion-v2-512/lora", "512x512", "epsilon"),
    ("sd2", "v_prediction"): ("sd_v2_v", "True", "stable-diffusion-v2-768-v/lora", "768x768", "v"),
    ("sdxl", "epsilon"): ("sdxl_base_v1-0", "False", "stable-diffusion-xl-v1-base/lora", "1024x1024", "epsilon"),
}
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.attentions\.(\d+)\.(.*)$")


def sgm_path(layer: str, layers_per_block: int) -> str:
    """A diffusers attention module path in the SGM (original SDXL / LDM) layout."""
    if layer.startswith("mid_block.attentions.0."):
        return "middle_block.1." + layer.removeprefix("mid_block.attentions.0.")
    m = _BLOCK.match(layer)
    if not m:
        raise ValueError(f"{layer!r} is not inside a UNet attention block")
    kind, b, j, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    per = layers_per_block + 1
    if kind == "down_blocks":
        return f"input_blocks.{1 + b * per + j}.1.{rest}"
    return f"output_blocks.{b * per + j}.1.{rest}"


def layers_per_block(layers) -> int:
    """L of a UNet from its attention layers' paths: the number of attentions in its fullest down block (each
    down block has L; an up block has L + 1)."""
    found = [int(m.group(3)) for m in map(_BLOCK.match, layers) if m and m.group(1) == "down_blocks"]
    if not found:
        raise ValueError("no down-block attention layers to read layers_per_block from")
    return max(found) + 1


def kohya_key(layer: str, family: str = "sd1", layers_per_block: int = 2) -> str:
    """kohya/A1111 module name of a diffusers layer: `lora_unet_` + its path (SGM for SDXL) with '_' for '.', e.g.
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k (SD 1.x / 2.x) or
    lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k (SDXL)."""
    path = sgm_path(layer, layers_per_block) if family == "sdxl" else layer  # sd1, sd2: diffusers paths
    return "lora_unet_" + path.replace(".", "_")


def kohya_base_metadata(family: str, prediction_type: str = "epsilon") -> dict[str, str]:
    """The `ss_*` / `modelspec.*` fields that say which base a kohya LoRA is for. A combination sd-scripts has no
    name for (a v-prediction SD 1.x or SDXL) keeps the family's names and says v in `modelspec.prediction_type`."""
    key = (family, prediction_type)
    version, v2, architecture, resolution, _ = KOHYA_BASES.get(key, KOHYA_BASES[(family, "epsilon")])
    v = prediction_type == "v_prediction"
    return {"ss_base_model_version": version, "ss_v2": v2, "ss_v_parameterization": str(v),
            "modelspec.architecture": architecture, "modelspec.resolution": resolution,
            "modelspec.prediction_type": "v" if v else "epsilon"}
