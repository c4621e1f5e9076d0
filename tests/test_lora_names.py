"""Layer names for kohya files per family: SD 1.x / 2.x keep diffusers paths, SDXL uses the SGM layout that
A1111, ComfyUI and diffusers' own converter map back."""

from __future__ import annotations

import pytest

from cns_cli.lora_names import KOHYA_BASES, kohya_base_metadata, kohya_key, layers_per_block, sgm_path

T = "transformer_blocks.0.attn2.to_k"


@pytest.mark.parametrize("layer, want", [
    (f"down_blocks.1.attentions.0.{T}", f"input_blocks.4.1.{T}"),
    (f"down_blocks.1.attentions.1.{T}", f"input_blocks.5.1.{T}"),
    (f"down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_v", "input_blocks.8.1.transformer_blocks.9.attn2.to_v"),
    (f"mid_block.attentions.0.{T}", f"middle_block.1.{T}"),
    (f"up_blocks.0.attentions.2.{T}", f"output_blocks.2.1.{T}"),
    (f"up_blocks.1.attentions.0.{T}", f"output_blocks.3.1.{T}"),
])
def test_sgm_names_of_the_real_sdxl_layout(layer, want):
    """The SDXL base's attention blocks (sd-scripts' sdxl_model_util mapping, L = 2)."""
    assert sgm_path(layer, 2) == want


def test_kohya_keys_per_family():
    layer = f"down_blocks.1.attentions.0.{T}"
    assert kohya_key(layer, "sd1") == kohya_key(layer, "sd2") == "lora_unet_" + layer.replace(".", "_")
    assert kohya_key(layer, "sdxl", 2) == "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"


def test_layers_per_block_from_paths():
    assert layers_per_block([f"down_blocks.0.attentions.{j}.{T}" for j in range(2)] + [f"up_blocks.1.attentions.2.{T}"]) == 2
    with pytest.raises(ValueError):
        layers_per_block([f"mid_block.attentions.0.{T}"])


def test_metadata_names_the_base_like_sd_scripts():
    assert kohya_base_metadata("sdxl")["ss_base_model_version"] == "sdxl_base_v1-0"
    v = kohya_base_metadata("sd2", "v_prediction")
    assert v["modelspec.prediction_type"] == "v" and v["ss_base_model_version"] == "sd_v2_v"
    assert v["ss_v_parameterization"] == "True" and kohya_base_metadata("sd2")["ss_v_parameterization"] == "False"
    assert v["ss_v2"] == "True" and kohya_base_metadata("sd1")["ss_v2"] == "False"
    assert {f for f, _ in KOHYA_BASES} == {"sd1", "sd2", "sdxl"}
