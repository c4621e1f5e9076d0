"""Does a `cns export --format pipeline` folder load in an older stack, with every weight and the concepts' tokens?
A developer check (issue 34), in two processes, because cns needs transformers 5 and the readers to check pin 4.x:

    python tools/check_pipeline_export.py make OUT [--full-sd15 TOKENIZER_DIR]      # cns's venv
    OLD/bin/python tools/check_pipeline_export.py load OUT [--result FILE.json]     # e.g. diffusers 0.36 + transformers 4.57

`make` (imports cns) builds a tiny random base of each family (SD 1.x, SD 2.x v, SDXL) in the hub's layout and, with
`--full-sd15`, a full-size random SD 1.5 (its tokenizer from TOKENIZER_DIR: vocab.json + merges.txt, e.g. ComfyUI's
comfy/sd1_tokenizer); on each it learns <dog> (1 vector) and <hat> (2 vectors) with `cns learn`, exports the pipeline,
draws one image with `cns generate` and records the prompt's token ids under transformers 5 (OUT/reference.json).

`load` (never imports cns; needs diffusers, transformers, safetensors, Pillow) loads each exported folder with
DiffusionPipeline.from_pretrained and every weight component with its own class's from_pretrained, and reports:
weights loaded / missing / unexpected per component, the largest difference of each loaded component's weights
from the exported files (0: loaded as written) and from the base's files (the concepts' change; the added token
rows), tokenizer class, length, added tokens and the prompt's ids against transformers 5's, and the image drawn
from the same seed against cns's. Exit status 1 if anything is missing, unexpected, different or unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes cns_cli importable (`make` only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = ("sd1", "sd2", "sdxl")
CONCEPTS = (("dog", 1), ("hat", 2))  # (name, token vectors)
PROMPT = "<dog> wearing a <hat> on the beach"
SEED, STEPS, GUIDANCE, FULL_SIZE_PX = 3, 3, 7.5, 64


# -- make: cns's side ---------------------------------------------------------------------------------------------


def full_size_sd15(tokenizer_dir: Path, seed: int = 0):
    """A StableDiffusionPipeline with SD 1.5's shapes (its hub config.json values) and random weights: UNet 860 M,
    CLIP ViT-L/14 text encoder 123 M, VAE 84 M parameters, CLIP's 49,408-token BPE tokenizer."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), attention_head_dim=8,
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                        projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1))
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77, pad_token="<|endoftext|>")
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1, set_alpha_to_one=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def make(out: Path, full_sd15: Path | None, tiny: bool = True) -> None:
    import diffusers
    import transformers

    from cns_cli.cli import app
    from cns_cli.model.tiny import save_tiny_pipeline
    from typer.testing import CliRunner

    out.mkdir(parents=True, exist_ok=True)
    photos = {name: _photos(out / "photos" / name, colour) for name, colour in (("dog", (140, 80, 20)), ("hat", (20, 40, 160)))}
    cases = {f: (lambda folder, f=f: save_tiny_pipeline(folder, family=f)) for f in FAMILIES if tiny}
    if full_sd15:
        from cns_cli.model.saving import save_pipeline

        cases["sd15-full"] = lambda folder: save_pipeline(full_size_sd15(full_sd15), folder)
    runner = CliRunner()

    def cns(*args) -> str:
        r = runner.invoke(app, [str(a) for a in args])
        if r.exit_code:
            raise SystemExit(f"cns {' '.join(map(str, args))}: exit {r.exit_code}\n{r.stderr}")
        return r.stdout

    reference = {"versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__},
                 "prompt": PROMPT, "seed": SEED, "steps": STEPS, "guidance": GUIDANCE, "cases": {}}
    for case, build in cases.items():
        folder = out / case
        base, bank = build(folder / "base"), folder / "b.cnsbank"
        size = ["--resolution", str(FULL_SIZE_PX)] if case == "sd15-full" else []
        for name, k in CONCEPTS:
            cns("--bank", bank, "learn", name, photos[name], "--class", name, "--base", base, "--steps", 2,
                "--score-steps", 1, "--vectors", k, "--lr", "5e-3", *size)
        cns("--bank", bank, "export", folder / "pipe", "--format", "pipeline")
        px = ["--width", FULL_SIZE_PX, "--height", FULL_SIZE_PX] if case == "sd15-full" else []
        rec = json.loads(cns("--bank", bank, "generate", PROMPT, "--seed", SEED, "--steps", STEPS, "--guidance", GUIDANCE,
                             "--out", folder / "images", "--json", *px))
        reference["cases"][case] = {"text": rec["text"], "image": rec["path"], "width": rec["width"],
                                    "height": rec["height"], "token_ids": _token_ids(folder / "pipe", rec["text"])}
        print(f"{case}: exported {folder / 'pipe'}", file=sys.stderr)
    (out / "reference.json").write_text(json.dumps(reference, indent=2) + "\n")


def _photos(folder: Path, colour: tuple[int, int, int], n: int = 4) -> Path:
    """n 96 px PNG "photos" of one coloured square at different places: enough for `cns learn` to run."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.new("RGB", (96, 96), (90 + 30 * i, 120, 150))
        ImageDraw.Draw(im).rectangle([8 + 10 * i, 12 + 6 * i, 52 + 10 * i, 56 + 6 * i], fill=colour)
        im.save(folder / f"{i:02d}.png")
    return folder


def _token_ids(pipe_dir: Path, text: str) -> dict[str, list[int]]:
    """The prompt's ids under the running transformers, each tokenizer, with multi-vector tokens expanded as
    diffusers' encode_prompt does (maybe_convert_prompt)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(pipe_dir)
    return {name: tok(pipe.maybe_convert_prompt(text, tok)).input_ids
            for name, tok in pipe.components.items() if name.startswith("tokenizer") and tok is not None}


# -- load: the reader's side (no cns) ------------------------------------------------------------------------------


def _files(folder: Path) -> dict:
    """key -> the open safetensors file holding it, in one component folder (tensors are read one at a time)."""
    from safetensors import safe_open

    return {k: f for f in (safe_open(str(p), "pt") for p in sorted(folder.glob("*.safetensors"))) for k in f.keys()}


def _max(values) -> float | None:
    values = list(values)
    return max(values) if values else None


def _component(pipe_dir: Path, base_dir: Path, name: str, cls) -> dict:
    """Load one weight component with its own class and compare its weights with the exported and the base files."""
    model, info = cls.from_pretrained(pipe_dir / name, output_loading_info=True)
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    written, base = _files(pipe_dir / name), _files(base_dir / name)
    w, b = (lambda k: written[k].get_tensor(k)), (lambda k: base[k].get_tensor(k))
    # transformers 4.x's state_dict() names are the hub's; diffusers' are the files' own
    diff_written = _max((ours[k] - w(k)).abs().max().item() for k in written if k in ours)  # None: no name matched
    grown = {k: (tuple(b(k).shape), tuple(w(k).shape)) for k in written if k in base and b(k).shape != w(k).shape}
    diff_base = _max((w(k) - b(k)).abs().max().item() for k in written if k in base and k not in grown)
    # a grown tensor (a token embedding: the base's rows, then the concepts' tokens) keeps the base's rows exactly
    diff_grown = _max([(w(k)[: b(k).shape[0]] - b(k)).abs().max().item() for k in grown] or [0.0])
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    return {"class": type(model).__name__, "weights_in_file": len(written), "loaded": len(set(written) & set(ours)),
            "missing": len(missing), "unexpected": len(unexpected), "missing_first": missing[:2],
            "mismatched": [str(m) for m in info.get("mismatched_keys", [])],
            "max_abs_diff_loaded_vs_file": diff_written, "max_abs_diff_file_vs_base": diff_base,
            "grown_vs_base": grown, "max_abs_diff_grown_base_rows": diff_grown}


def load(out: Path, result: Path | None) -> int:
    import diffusers
    import numpy as np
    import torch
    import transformers
    from diffusers import DiffusionPipeline
    from PIL import Image

    reference = json.loads((out / "reference.json").read_text())
    doc = {"reader": {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
           "writer": reference["versions"], "cases": {}}
    ok = True
    for case, ref in reference["cases"].items():
        pipe_dir, base_dir = out / case / "pipe", out / case / "base"
        entry: dict = {}
        index = json.loads((pipe_dir / "model_index.json").read_text())
        for name, spec in sorted(index.items()):  # each weight component with its own class, even if the pipeline fails
            if isinstance(spec, list) and spec[0] in ("diffusers", "transformers") and list((pipe_dir / name).glob("*.safetensors")):
                cls = getattr(diffusers if spec[0] == "diffusers" else transformers, spec[1])
                c = entry[name] = _component(pipe_dir, base_dir, name, cls)
                ok &= not (c["missing"] or c["unexpected"] or c["mismatched"] or c["max_abs_diff_loaded_vs_file"] != 0
                           or c["loaded"] != c["weights_in_file"] or c["max_abs_diff_grown_base_rows"] != 0)
        try:
            pipe = DiffusionPipeline.from_pretrained(pipe_dir, torch_dtype=torch.float32)
        except Exception as e:  # the failure is the result
            entry["pipeline"] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            doc["cases"][case] = entry
            ok = False
            continue
        entry["pipeline"] = type(pipe).__name__
        for name, component in pipe.components.items():
            if name.startswith("tokenizer") and component is not None:
                ids = component(pipe.maybe_convert_prompt(ref["text"], component)).input_ids
                entry[name] = {"class": type(component).__name__, "length": len(component),
                               "added_tokens": {t: i for t, i in component.get_added_vocab().items() if t.startswith("<") and not t.startswith("<|")},
                               "prompt_ids_equal_transformers_5": ids == ref["token_ids"][name]}
                ok &= entry[name]["prompt_ids_equal_transformers_5"]
        image = pipe(ref["text"], num_inference_steps=reference["steps"], guidance_scale=reference["guidance"],
                     width=ref["width"], height=ref["height"], generator=torch.Generator().manual_seed(reference["seed"])).images[0]
        theirs = np.asarray(image.convert("RGB"), dtype=np.int16)
        ours = np.asarray(Image.open(ref["image"]).convert("RGB"), dtype=np.int16)
        entry["image_max_pixel_diff_vs_cns_generate"] = int(np.abs(theirs - ours).max())
        ok &= entry["image_max_pixel_diff_vs_cns_generate"] <= 1
        doc["cases"][case] = entry
    doc["ok"] = ok
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    print(text)
    if result:
        result.write_text(text)
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="cns's venv: bases, banks, pipeline exports, reference.json")
    m.add_argument("out", type=Path)
    m.add_argument("--full-sd15", type=Path, metavar="TOKENIZER_DIR", help="also a full-size random SD 1.5")
    m.add_argument("--no-tiny", action="store_true", help="without the tiny SD 1.x, SD 2.x and SDXL cases")
    lo = sub.add_parser("load", help="the reader's venv: load every export and compare")
    lo.add_argument("out", type=Path)
    lo.add_argument("--result", type=Path, help="also write the JSON report here")
    args = ap.parse_args()
    if args.command == "make":
        make(args.out, args.full_sd15, tiny=not args.no_tiny)
    else:
        raise SystemExit(load(args.out, args.result))


if __name__ == "__main__":
    main()
