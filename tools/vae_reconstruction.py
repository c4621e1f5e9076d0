"""Does a demo VAE give every individual back? Encode and decode fresh renders of each of the twelve (and of
generic objects) and measure what survives: the mean absolute pixel error, and, with an evaluator of the VAE's
world, how often the reconstruction is still recognised as that individual (nearest of the twelve) and its
scene / class / colour still read right — next to the same numbers for the renders themselves, the ceiling.
What the VAE loses no UNet can draw, so this is the gate before the long UNet phase of
`tools/train_demo_model.py`.

    python tools/vae_reconstruction.py OUT/vae [--evaluator FILE] [--n 16] [--sheet PNG] [--json FILE]

OUT/vae is what `train_demo_model.py` writes when its VAE phase ends (`vae.json` names the world); a demo pipeline
folder works too (its `vae/`, world from its training.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python tools/vae_reconstruction.py`: the repository root makes cns_cli importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FRESH_SEED = 31_337  # reference renders from a stream neither the VAE's pool nor the evaluator's references use


def load(folder: Path):
    """(AutoencoderKL in float32, world) from an OUT/vae folder or a demo pipeline folder."""
    from diffusers import AutoencoderKL

    from cns_cli.demo.world import model_world

    folder = Path(folder)
    if (folder / "vae.json").is_file():
        return AutoencoderKL.from_pretrained(folder).float().eval(), json.loads((folder / "vae.json").read_text())["world"]
    if not (folder / "vae" / "config.json").is_file():
        raise SystemExit(f"{folder}: neither an OUT/vae folder (vae.json) nor a demo pipeline folder (vae/)")
    return AutoencoderKL.from_pretrained(folder / "vae").float().eval(), model_world(folder)


def reconstruct(vae, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 [N, H, W, 3] -> the VAE's reconstruction from its latent means, uint8 of the same shape."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            out.append(((y + 1) * 127.5).round().permute(0, 2, 3, 1).to(torch.uint8).numpy())
    return np.concatenate(out)


def measure(vae, world: int, n: int = 16, evaluator=None) -> tuple[dict, dict]:
    """({"individuals": {name: {...}}, "generic": {...}}, {name: (renders, reconstructions)})."""
    from cns_cli.demo.individuals import individuals_of, reference_renders
    from cns_cli.demo.world import render_dataset

    report: dict = {"world": world, "n": n, "individuals": {}}
    pairs = {}
    for name in individuals_of(world):
        x = reference_renders(name, n, seed=FRESH_SEED, world=world)
        y = reconstruct(vae, x)
        pairs[name] = (x, y)
        r = {"mean_abs_error": float(np.abs(y.astype(np.int16) - x.astype(np.int16)).mean())}
        if evaluator is not None:
            r["recognised"] = float(np.mean([k == name for k in evaluator.nearest_individual(y)]))
            r["recognised_renders"] = float(np.mean([k == name for k in evaluator.nearest_individual(x)]))
        report["individuals"][name] = r
    images, specs, _ = render_dataset(12 * n, seed=FRESH_SEED, held_out=None, world=world)
    rec = reconstruct(vae, images)
    generic = {"mean_abs_error": float(np.abs(rec.astype(np.int16) - images.astype(np.int16)).mean())}
    if evaluator is not None:
        for key, imgs in (("reconstructions", rec), ("renders", images)):
            score = evaluator.prompt_alignment(imgs, specs)
            generic[key] = {k: score[k] for k in ("scene", "class", "colour")}
    report["generic"] = generic
    if evaluator is not None:
        report["min_recognised"] = min(r["recognised"] for r in report["individuals"].values())
    return report, pairs


def sheet(pairs: dict, path: Path, per: int = 6) -> None:
    """Two rows per individual (renders above, reconstructions below), `per` columns, twice the size."""
    from PIL import Image

    blocks = [np.concatenate([np.concatenate(list(x[:per]), 1), np.concatenate(list(y[:per]), 1)], 0)
              for x, y in pairs.values()]
    half = -(-len(blocks) // 2)
    left, right = np.concatenate(blocks[:half], 0), np.concatenate(blocks[half:], 0)
    right = np.pad(right, ((0, left.shape[0] - right.shape[0]), (0, 0), (0, 0)), constant_values=255)
    img = np.concatenate([left, np.full((left.shape[0], 8, 3), 255, np.uint8), right], 1)
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.Resampling.NEAREST).save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/vae_reconstruction.py", description=__doc__.splitlines()[0])
    ap.add_argument("vae", type=Path, help="OUT/vae of a training run, or a demo pipeline folder")
    ap.add_argument("--evaluator", type=Path, help="evaluator weights of the VAE's world (recognition and attributes)")
    ap.add_argument("--n", type=int, default=16, help="renders per individual (generic renders: 12 x n)")
    ap.add_argument("--sheet", type=Path, help="write renders above their reconstructions here (PNG)")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    import torch

    from cns_cli.demo.evaluator import Evaluator
    from cns_cli.model.loading import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    vae, world = load(args.vae)
    ev = None
    if args.evaluator:
        ev = Evaluator.load(args.evaluator)
        ev.check_world(world)
    report, pairs = measure(vae, world, args.n, ev)
    for name, r in report["individuals"].items():
        extra = f"  recognised {r['recognised']:.2f} (renders {r['recognised_renders']:.2f})" if ev else ""
        print(f"{name:8s} mean abs error {r['mean_abs_error']:5.2f}{extra}")
    print(f"generic  mean abs error {report['generic']['mean_abs_error']:5.2f}"
          + (f"  reconstructions {report['generic']['reconstructions']}" if ev else ""))
    if args.sheet:
        sheet(pairs, args.sheet)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
