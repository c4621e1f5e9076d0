"""Tiny, randomly initialised Stable Diffusion pipelines (SD 1.x, SD 2.x v-prediction, SDXL), built offline.

Tests, benchmarks and the README's smoke run use them in place of real weights (none can be downloaded
here). They are saved with `save_pretrained` in the hub's layout (model/saving.py; and, for the single-file
path, as one original-layout .safetensors by model/ldm.py) and loaded back through the same code users run
(`cns_cli.model.loading`), so the loading path is exercised too. Shapes follow ../shared/docs/SDXL.md "Tiny random pipelines"; the two
SDXL text encoders have different widths (32 and 64), as single-file loading tells them apart by width.

    python -m cns_cli.model.tiny OUT_DIR [--seed N] [--family sd1|sd2|sdxl]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

# Words given their own BPE merges so that test prompts tokenize to a handful of tokens.
_WORDS = ["a", "photo", "of", "dog", "cat", "hat", "on", "the", "beach", "in", "snow", "red", "blue",
          "wearing", "grass", "at", "night", "house", "ball", "and", "with", "small", "big", "car"]


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: 256 printable stand-ins for the 256 byte values."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tiny_tokenizer():
    """A CLIPTokenizer with a locally built byte-level vocabulary (≈560 tokens)."""
    return word_tokenizer(_WORDS)


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one lower-case word (as `CLIPTokenizer.bpe` does it): repeatedly merge every occurrence
    of the adjacent pair with the lowest merge rank until no pair has a rank."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pair = min(itertools.pairwise(parts), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def word_tokenizer(words, model_max_length: int = 77, pad_token: str | None = None):
    """A CLIPTokenizer over the 512 byte-level symbols plus BPE merges that make each of `words` exactly one
    token; any other text still tokenizes, byte by byte.

    Merges are applied by rank, so a word's left-to-right chain can be pre-empted by an earlier word's merge
    ("t"+"o</w>" from "to" splits "photo"). Each word therefore gets merges for the parts BPE actually leaves
    it with, appended after all existing ones: a later merge can never change how an earlier word tokenizes
    (BPE only reaches a later-ranked pair when no earlier one applies, and a finished word has no pairs)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for ch in _bytes_to_unicode():
        vocab[ch] = len(vocab)
    for ch in _bytes_to_unicode():
        vocab[ch + "</w>"] = len(vocab)
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(parts := _bpe(word, ranks)) > 1:
            ranks[(parts[0], parts[1])] = len(ranks)
            vocab.setdefault(parts[0] + parts[1], len(vocab))
        vocab.setdefault(parts[0], len(vocab))  # one-letter words ("a</w>") are already byte symbols
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    extra = {} if pad_token is None else {"pad_token": pad_token}  # OpenCLIP tokenizers (SD 2.x, SDXL's 2nd) pad with "!"
    return CLIPTokenizer(vocab=vocab, merges=list(ranks), model_max_length=model_max_length, **extra)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    )


def _clip_config(tokenizer, width: int, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra,
    )


def build_tiny_pipeline(seed: int = 0, text_dim: int = 32):
    """A random StableDiffusionPipeline (SD 1.x): 32x32 images, 16x16x4 latents, 14 cross-attention K/V layers."""
    from .loading import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim, attention_head_dim=8, norm_num_groups=8,
    )
    vae = _vae()
    text_encoder = CLIPTextModel(_clip_config(tokenizer, text_dim))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_sd2_pipeline(seed: int = 0):
    """A random SD 2.x-style StableDiffusionPipeline: OpenCLIP-like text encoder (width 64, gelu, "!" padding),
    linear-projection attention with upcasting, DDIM with v-prediction and trailing spacing (as SD 2.1 768-v)."""
    from .loading import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = word_tokenizer(_WORDS, pad_token="!")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(_clip_config(tokenizer, 64, hidden_act="gelu"))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction", timestep_spacing="trailing",
    )
    return StableDiffusionPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_sdxl_pipeline(seed: int = 0):
    """A random StableDiffusionXLPipeline: CLIP-L-like text_encoder (width 32) and a CLIPTextModelWithProjection
    text_encoder_2 (width 64, projection 64, "!" padding), text states 32 + 64 = 96 wide, added conditioning
    "text_time" (6 size/crop numbers x 8 + the 64-d pooled text), 12 attn2 modules (24 K/V layers), Euler."""
    from .loading import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = tiny_tokenizer(), word_tokenizer(_WORDS, pad_token="!")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 64,
        cross_attention_dim=32 + 64, norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(_clip_config(tokenizer, 32))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2, 64, hidden_act="gelu", projection_dim=64))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )


BUILDERS = {"sd1": build_tiny_pipeline, "sd2": build_tiny_sd2_pipeline, "sdxl": build_tiny_sdxl_pipeline}


def save_tiny_pipeline(out: str | Path, seed: int = 0, family: str = "sd1") -> Path:
    """Saved in the hub's layout (saving.py), as the models the tiny pipelines stand in for are."""
    from .saving import save_pipeline

    return save_pipeline(BUILDERS[family](seed), out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", choices=sorted(BUILDERS), default="sd1")
    args = ap.parse_args()
    print(save_tiny_pipeline(args.out, args.seed, args.family))


if __name__ == "__main__":
    main()
