"""A diffusers pipeline as one original-layout (LDM / SGM) `.safetensors` checkpoint: what A1111, ComfyUI and
model sites call a "single-file" model. cns only reads such files (through diffusers' `from_single_file`); this
writer exists so that a tiny one can be made offline (for the README's SDXL session and for the tests) and
loaded through that real path.

    python -m tools.ldm_checkpoint PIPELINE_FOLDER OUT.safetensors [--configs DIR]

PIPELINE_FOLDER is a diffusers folder (save_pretrained) of a family cns supports: SD 1.x, SD 2.x or SDXL, e.g.
`python -m cns_cli.model.tiny ./tiny-xl --family sdxl`. `--configs DIR` also writes the pipeline's weightless
config folder (its configs and tokenizers, no weights): what `cns init --base OUT.safetensors --config DIR`
needs to load the checkpoint offline. Neither output may exist already. Run it from a clone of the repository.

Key names are the inverse of diffusers' loaders/single_file_utils.py (convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint):

    UNet          model.diffusion_model.{input_blocks, middle_block, output_blocks, time_embed, label_emb, out}.*
    VAE           first_stage_model.{encoder, decoder}.{down, mid, up}.* (attention as 1x1 convs)
    SD 1.x text   cond_stage_model.transformer.text_model.*             (Hugging Face CLIP names)
    SD 2.x text   cond_stage_model.model.*                               (OpenCLIP names, fused in_proj)
    SDXL text     conditioner.embedders.0.transformer.text_model.*  and  conditioner.embedders.1.model.*
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/ldm_checkpoint.py`: the repository root makes cns_cli importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.ckpt", "*.pt", "*.pth", "*.msgpack", "*.onnx", "*.pb", "*.h5")

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise ValueError(f"unexpected resnet key {rest!r}")


def unet_to_ldm(sd: dict, config) -> dict:
    """diffusers UNet2DConditionModel state dict -> LDM UNet keys (without the model.diffusion_model. prefix)."""
    per = config["layers_per_block"] + 1  # LDM blocks per level: L resnets(+attention) and one down/upsampler
    has_attn = {b: t.startswith("CrossAttn") for b, t in enumerate(config["up_block_types"])}
    out = {}
    for key, v in sd.items():
        parts = key.split(".")
        top = ".".join(parts[:-1])
        if top in _UNET_TOP:
            out[f"{_UNET_TOP[top]}.{parts[-1]}"] = v
            continue
        kind, rest = parts[0], parts[1:]
        if kind == "mid_block":
            what, j, tail = rest[0], int(rest[1]), ".".join(rest[2:])
            out[f"middle_block.{2 * j}.{_resnet(tail)}" if what == "resnets" else f"middle_block.1.{tail}"] = v
        elif kind == "down_blocks":
            b, what, j, tail = int(rest[0]), rest[1], int(rest[2]), ".".join(rest[3:])
            if what == "resnets":
                out[f"input_blocks.{b * per + j + 1}.0.{_resnet(tail)}"] = v
            elif what == "attentions":
                out[f"input_blocks.{b * per + j + 1}.1.{tail}"] = v
            else:  # downsamplers.0.conv.*
                out[f"input_blocks.{(b + 1) * per}.0.op.{tail.removeprefix('conv.')}"] = v
        elif kind == "up_blocks":
            b, what, j, tail = int(rest[0]), rest[1], int(rest[2]), ".".join(rest[3:])
            if what == "resnets":
                out[f"output_blocks.{b * per + j}.0.{_resnet(tail)}"] = v
            elif what == "attentions":
                out[f"output_blocks.{b * per + j}.1.{tail}"] = v
            else:  # upsamplers.0.conv.*: after the resnet (and the attention, where the level has one)
                out[f"output_blocks.{b * per + per - 1}.{2 if has_attn[b] else 1}.{tail}"] = v
        else:
            raise ValueError(f"unexpected UNet key {key!r}")
    return out


_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def vae_to_ldm(sd: dict, config) -> dict:
    """diffusers AutoencoderKL state dict -> LDM VAE keys (without the first_stage_model. prefix)."""
    n_up = len(config["up_block_types"])
    out = {}
    for key, v in sd.items():
        side, *rest = key.split(".")
        if side in ("quant_conv", "post_quant_conv"):
            out[key] = v
            continue
        name = ".".join(rest)
        if name.startswith("conv_norm_out."):
            name = "norm_out." + name.removeprefix("conv_norm_out.")
        elif name.startswith(("down_blocks.", "up_blocks.")):
            level, (b, what, *tail) = rest[0].split("_")[0], rest[1:]
            b = int(b) if level == "down" else n_up - 1 - int(b)  # LDM numbers decoder levels from the bottom
            if what == "resnets":
                name = f"{level}.{b}.block.{tail[0]}." + ".".join(tail[1:]).replace("conv_shortcut", "nin_shortcut")
            else:  # downsamplers.0.conv / upsamplers.0.conv
                name = f"{level}.{b}.{'downsample' if level == 'down' else 'upsample'}." + ".".join(tail[1:])
        elif name.startswith("mid_block.resnets."):
            j, tail = rest[2], ".".join(rest[3:])
            name = f"mid.block_{int(j) + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        elif name.startswith("mid_block.attentions.0."):
            tail = name.removeprefix("mid_block.attentions.0.")
            for new, old in _VAE_ATTN:
                if tail.startswith(new + "."):
                    tail = old + tail[len(new):]
            name = "mid.attn_1." + tail
            if v.ndim == 2:
                v = v[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out[f"{side}.{name}"] = v
    return out


def clip_to_ldm(sd: dict, prefix: str) -> dict:
    """A Hugging Face CLIPTextModel state dict under `prefix` (its `text_model.` wrapper restored)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in sd.items() if not k.endswith("position_ids")}


def open_clip_to_ldm(sd: dict, prefix: str) -> dict:
    """A CLIPTextModel(WithProjection) state dict in OpenCLIP names under `prefix`: fused q/k/v (in_proj),
    text_projection stored transposed, (hidden, projection) — the SD 2.x and SDXL-bigG layout."""
    import torch

    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}
    out = {prefix + "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           prefix + "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": sd.pop("final_layer_norm.weight"),
           prefix + "ln_final.bias": sd.pop("final_layer_norm.bias")}
    proj = sd.pop("text_projection.weight", None)
    hidden = out[prefix + "ln_final.weight"].shape[0]
    out[prefix + "text_projection"] = (proj.T if proj is not None else torch.eye(hidden)).contiguous()
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv)
            out[f"{dst}attn.out_proj.{kind}"] = sd.pop(f"{src}self_attn.out_proj.{kind}")
            out[f"{dst}ln_1.{kind}"] = sd.pop(f"{src}layer_norm1.{kind}")
            out[f"{dst}ln_2.{kind}"] = sd.pop(f"{src}layer_norm2.{kind}")
            out[f"{dst}mlp.c_fc.{kind}"] = sd.pop(f"{src}mlp.fc1.{kind}")
            out[f"{dst}mlp.c_proj.{kind}"] = sd.pop(f"{src}mlp.fc2.{kind}")
    if sd:
        raise ValueError(f"unexpected text-encoder keys {sorted(sd)[:3]}")
    return out


def pipeline_to_ldm(pipe) -> dict:
    """Every weight of an SD 1.x / 2.x / SDXL pipeline in one original-layout state dict."""
    sd = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config).items()}
    sd |= {f"first_stage_model.{k}": v for k, v in vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config).items()}
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: CLIP-L in HF names, bigG in OpenCLIP names
        sd |= clip_to_ldm(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer.")
        sd |= open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model.")
    elif pipe.text_encoder.config.hidden_act == "gelu":  # SD 2.x: OpenCLIP-H
        sd |= open_clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.model.")
    else:
        sd |= clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer.")
    return sd


def save_single_file(pipe, path: str | Path) -> Path:
    """Write `pipe`'s weights as one original-layout .safetensors checkpoint."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file({k: v.detach().contiguous() for k, v in pipeline_to_ldm(pipe).items()}, str(path))
    return path


def config_folder(pipeline_folder: str | Path, dest: str | Path) -> Path:
    """A copy of a diffusers pipeline folder without its weight files (configs and tokenizers): what
    `cns init --config` needs next to a single-file checkpoint of the same family."""
    dest = Path(dest)
    shutil.copytree(pipeline_folder, dest, ignore=shutil.ignore_patterns(*WEIGHT_PATTERNS))
    return dest


def _check_paths(folder: Path, out: Path, configs: Path | None) -> None:
    """Every refusal before anything loads or is written: one line each."""
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder; pass a diffusers pipeline folder "
                         "(e.g. one written by `python -m cns_cli.model.tiny FOLDER --family sdxl`)")
    if not (folder / "model_index.json").is_file():
        raise SystemExit(f"error: {folder} is not a diffusers pipeline folder (no model_index.json)")
    if out.suffix.lower() != ".safetensors":
        raise SystemExit(f"error: {out} must end in .safetensors (cns loads a single file by that extension)")
    for path in (out, configs):
        if path is not None and (path.exists() or path.is_symlink()):
            raise SystemExit(f"error: {path} already exists; remove it or choose another path")
    if configs is not None and configs.resolve() == out.resolve():
        raise SystemExit("error: OUT and --configs must be different paths")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tools.ldm_checkpoint",
                                 description="Write a diffusers pipeline folder as one original-layout (LDM / SGM) "
                                             ".safetensors checkpoint, and with --configs its weightless config folder.")
    ap.add_argument("pipeline", type=Path, metavar="PIPELINE_FOLDER",
                    help="a diffusers pipeline folder (SD 1.x, SD 2.x or SDXL)")
    ap.add_argument("out", type=Path, metavar="OUT.safetensors",
                    help="the single-file checkpoint to write (.safetensors; must not exist)")
    ap.add_argument("--configs", type=Path, metavar="DIR",
                    help="also write the weightless config folder here (for `cns init --config DIR`; must not exist)")
    args = ap.parse_args(argv)
    _check_paths(args.pipeline, args.out, args.configs)

    from cns_cli.errors import CnsError
    from cns_cli.model.loading import load_pipeline, resolve_base

    try:
        pipe = load_pipeline(resolve_base(str(args.pipeline)))
    except CnsError as e:
        raise SystemExit(f"error: {e}") from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(save_single_file(pipe, args.out))
    if args.configs is not None:
        print(config_folder(args.pipeline, args.configs))


if __name__ == "__main__":
    main()
