"""SD 1.5 (512x512) or SDXL (1024x1024) at full size on one GPU, random weights (no download), bf16.

Measures, in one process and interleaved: the cns learn step vs the PEFT LoRA step (rank 4 on q/k/v/out)
and the full K/V step (time, peak memory); one UNet step of generation with classifier-free guidance
(batch 2); and the time to apply 100 concepts' deltas to the UNet. Runs in well under 3 minutes on an
H100. `--model tiny|tiny-sdxl --device cpu` runs the same code on a tiny pipeline (a smoke test).

    python benchmarks/gpu_sd15.py [--device cuda] [--model sd15|sdxl|tiny] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import (  # noqa: E402
    METHODS,
    Setup,
    fake_concepts,
    make_step,
    sd15_text_encoder,
    sd15_unet,
    sdxl_text_encoders,
    sdxl_unet,
)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, n: int) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", choices=("sd15", "sdxl", "tiny", "tiny-sdxl"), default="sd15")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from cns_cli.bank.delta import decode_delta
    from cns_cli.model.kv import ConceptTensors, apply_deltas
    from cns_cli.model.loading import kv_layers
    from cns_cli.model.runtime import autocast, resolve_precision

    dtype = resolve_precision(args.precision, args.device)
    torch.manual_seed(0)
    if args.model == "sd15":
        unet, te, res = sd15_unet("cpu"), sd15_text_encoder("cpu"), 512
    elif args.model == "sdxl":
        unet, te, res = sdxl_unet("cpu"), sdxl_text_encoders("cpu"), 1024
    else:  # the tiny test pipelines: the same code paths in seconds on a CPU
        from cns_cli.model.tiny import BUILDERS

        pipe = BUILDERS["sdxl" if args.model == "tiny-sdxl" else "sd1"]()
        te = [pipe.text_encoder, pipe.text_encoder_2] if args.model == "tiny-sdxl" else pipe.text_encoder
        unet, res = pipe.unet, 32
    t_dim = unet.config.cross_attention_dim  # the text width every K/V row reads (SDXL: 768 + 1280)
    s = Setup(unet, te, res, 1, args.device, dtype)
    out: dict = {"model": args.model, "device": args.device, "precision": args.precision, "resolution": res,
                 "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}

    # 1. learn steps, interleaved; peak memory per method on CUDA (all copies resident: compare deltas)
    steps = {m: make_step(m, s) for m in METHODS}
    for fn in steps.values():
        fn()
    times = {m: [] for m in METHODS}
    for _ in range(args.rounds):
        for m, fn in steps.items():
            times[m].append(timed(fn, args.device, 2))
    med = {m: statistics.median(v) for m, v in times.items()}
    out["learn_step_ms"] = {m: round(v * 1000, 2) for m, v in med.items()}
    out["learn_step_ratio_to_lora"] = {m: round(v / med["lora"], 3) for m, v in med.items()}
    if args.device == "cuda":
        base_mem = torch.cuda.memory_allocated()
        peaks = {}
        for m, fn in steps.items():
            torch.cuda.reset_peak_memory_stats()
            fn()
            sync(args.device)
            peaks[m] = (torch.cuda.max_memory_allocated() - base_mem) / 2**20
        out["learn_step_peak_extra_mb"] = {m: round(v, 1) for m, v in peaks.items()}
    del steps

    # 2. one denoising step with classifier-free guidance (UNet on a batch of 2)
    latent = torch.randn(2, 4, res // 8, res // 8, device=args.device)
    with torch.no_grad(), autocast(args.device, dtype):
        cond = s.conditioner(["image 0"])  # the product's text side (SDXL: states + added conditioning)
        states = cond.states.repeat(2, 1, 1)
        extra = {} if cond.added is None else {"added_cond_kwargs": {k: v.repeat(2, 1) for k, v in cond.added.items()}}
        unet_call = lambda: s.unet(latent, torch.tensor([500, 500], device=args.device), encoder_hidden_states=states,  # noqa: E731
                                   **extra)
        unet_call()
        out["generate_step_cfg_ms"] = round(statistics.median(timed(unet_call, args.device, 3) for _ in range(args.rounds)) * 1000, 2)

    # 3. apply 100 concepts' deltas (float32 sums, added once per layer)
    kv = {n: m.out_features for n, m in kv_layers(s.unet).items()}
    q = torch.linalg.qr(torch.randn(t_dim, t_dim))[0]
    concepts = []
    for i, (_, delta, _) in enumerate(fake_concepts(kv, t_dim, 100, sum(p.numel() for p in s.unet.parameters()))):
        layers = decode_delta(delta)
        rows = {layer: torch.from_numpy(d.rows).long() for layer, d in layers.items()}
        coef = {layer: torch.from_numpy(d.coef) for layer, d in layers.items()}
        start = (4 * i) % (t_dim - 3)
        concepts.append(ConceptTensors(rows, coef, q[:, start:start + 4]))
    out["apply_100_concepts_ms"] = round(statistics.median(
        timed(lambda: apply_deltas(s.unet, concepts), args.device, 1) for _ in range(args.rounds)) * 1000, 2)
    print(json.dumps(out, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
