"""A tiny, randomly initialised Stable Diffusion pipeline, built entirely offline.

Tests, benchmarks and the README's smoke run use it in place of real weights (none can be downloaded
here). It is saved with `save_pretrained` and loaded back through the same code users run
(`cns_cli.model.loading`), so the loading path is exercised too.

    python -m cns_cli.model.tiny OUT_DIR [--seed N]
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


def word_tokenizer(words, model_max_length: int = 77):
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
    return CLIPTokenizer(vocab=vocab, merges=list(ranks), model_max_length=model_max_length)


def build_tiny_pipeline(seed: int = 0, text_dim: int = 32):
    """A random StableDiffusionPipeline: 32x32 images, 16x16x4 latents, 14 cross-attention K/V layers."""
    from .loading import quiet_libraries

    quiet_libraries()
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def save_tiny_pipeline(out: str | Path, seed: int = 0) -> Path:
    out = Path(out)
    build_tiny_pipeline(seed).save_pretrained(out, safe_serialization=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(save_tiny_pipeline(args.out, args.seed))


if __name__ == "__main__":
    main()
