"""Train a finished demo VAE's decoder further, and put it into a pipeline whose UNet learned that VAE's latents.

The decoder phase of `train_demo_model.py` (`train_decoder`: the same loop, not a copy) run again on an OUT/vae
folder: the encoder stays frozen, so the latents a UNet was trained on do not change, only the pixels they
decode to — SD's ft-MSE decoders were made this way for an already trained UNet. So the decoder can be
improved after the hours of the UNet phase, or while it runs, and dropped into the finished pipeline.

    python tools/refine_decoder.py OUT/vae REFINED --steps 1000 [--lr 3e-4] [--seed 1] [--pool 10000] [--resume]
    python tools/refine_decoder.py --apply REFINED/vae PIPELINE   # replace PIPELINE/vae's weights with it

REFINED/vae is an OUT/vae folder again (`vae.json` records every refinement), usable with `--vae`,
`vae_reconstruction.py` and `--apply`. The run is checkpointed every `--checkpoint-every` steps in
REFINED/checkpoints and `--resume` continues it exactly. `--apply` refuses a VAE whose encoder differs from
the pipeline's (the UNet would be drawing latents of another encoder) and keeps the pipeline's latent scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/refine_decoder.py`: the repository root makes cns_cli and tools importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import checkpoint  # noqa: E402
from tools import train_demo_model as T  # noqa: E402

ENCODER = ("encoder.", "quant_conv.")  # what the latents depend on (the decoder phase changes neither)


def refine(src: Path, out: Path, steps: int, lr: float, seed: int, pool_size: int, every: int = 100,
           resume: bool = False) -> dict:
    """Train `src`'s decoder `steps` more steps on a pool of `pool_size` renders drawn with `seed`; write
    `out/vae`. Returns its record."""
    import torch

    from cns_cli.demo.pairs import training_set

    record = json.loads((Path(src) / T.VAE_RECORD).read_text()) if (Path(src) / T.VAE_RECORD).is_file() else {}
    world = record.get("world")
    if world not in T.ARCH:
        raise SystemExit(f"{src}: not an OUT/vae folder of a demo world (no {T.VAE_RECORD} naming one)")
    s = replace(T.Settings(), world=world, seed=seed, pool=pool_size, decoder_steps=steps, decoder_lr=lr,
                checkpoint_every=every)
    torch.manual_seed(seed)
    pipe = T.build_untrained(seed, world)
    T.load_vae(pipe, src, world)  # checks the architecture, the weights' digest and the world's version
    encoder = T._weights_sha256(pipe.vae, ENCODER)
    ck = checkpoint.load(out / "checkpoints") if resume else None
    if ck is not None:
        ck.load_modules(T._modules(pipe))
        if ck.info["settings"] != T.asdict(s):
            raise SystemExit(f"{out}: that run has other settings ({ck.info['settings']}); resume it with them")
    T._log(out, f"rendering {pool_size} images of world {world} (seed {seed}) to refine {src}'s decoder")
    pool, _ = training_set(pool_size, seed=seed, world=world)
    loss = T.train_decoder(pipe, pool, s, "cpu", out, resume=ck, vae_loss=record.get("final_vae_loss"))
    T.round_to_fp16(pipe.vae)
    assert T._weights_sha256(pipe.vae, ENCODER) == encoder  # the latents a UNet learned are untouched
    step = {"from": str(src), "steps": steps, "lr": lr, "seed": seed, "pool": pool_size, "final_decoder_loss": loss}
    new = {**{k: v for k, v in record.items() if k != "vae_weights_sha256"}, "final_decoder_loss": loss,
           "encoder_sha256": encoder, "refinements": [*record.get("refinements", []), step]}
    T.save_vae(pipe.vae, out / "vae", new)
    T._log(out, f"wrote {out / 'vae'} (decoder loss {loss:.5f})")
    return json.loads((out / "vae" / T.VAE_RECORD).read_text())


def apply(vae_dir: Path, pipeline: Path) -> None:
    """Replace `pipeline`'s VAE weights with `vae_dir`'s (same encoder required), keeping its latent scale and
    recording the refinement in its training.json."""
    import torch
    from diffusers import AutoencoderKL

    from cns_cli.bank.atomic import atomic_write

    current = AutoencoderKL.from_pretrained(pipeline / "vae")
    refined = AutoencoderKL.from_pretrained(vae_dir)
    if T._weights_sha256(current, ENCODER) != T._weights_sha256(refined, ENCODER):
        raise SystemExit(f"{vae_dir}: its encoder is not {pipeline}'s, so the UNet's latents would not match it;"
                         " refine the decoder of the VAE the pipeline was trained on")
    refined.register_to_config(scaling_factor=current.config.scaling_factor)
    # written whole beside the pipeline's files, then renamed over them one by one: a crash leaves either file
    # old or new, and the config is the same in both (the scale is kept), so the pipeline always loads
    with tempfile.TemporaryDirectory(dir=pipeline) as tmp:
        refined.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, pipeline / "vae" / f.name)
    info_path = pipeline / "training.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    record = json.loads((vae_dir / T.VAE_RECORD).read_text())
    info["decoder_refinements"] = record.get("refinements", [])
    info["final_decoder_loss"] = record.get("final_decoder_loss")
    atomic_write(info_path, (json.dumps(info, indent=2) + "\n").encode())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/refine_decoder.py", description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="an OUT/vae folder (with --apply: the refined one)")
    ap.add_argument("out", type=Path, help="where to write OUT/vae and checkpoints (with --apply: the pipeline)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (cosine schedule, as the decoder phase)")
    ap.add_argument("--seed", type=int, default=1, help="the renders and batches (the trainer used 0: a fresh stream)")
    ap.add_argument("--pool", type=int, default=10_000, help="renders drawn once and cropped")
    ap.add_argument("--checkpoint-every", type=int, default=100)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints exactly")
    ap.add_argument("--apply", action="store_true", help="put SRC (a refined VAE) into the pipeline folder OUT")
    args = ap.parse_args(argv)
    from cns_cli.model.loading import quiet_libraries

    quiet_libraries()
    if args.apply:
        apply(args.src, args.out)
        print(f"{args.out}/vae now holds {args.src}'s weights (latent scale kept)")
        return 0
    (args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    refine(args.src, args.out, args.steps, args.lr, args.seed, args.pool, args.checkpoint_every, args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
