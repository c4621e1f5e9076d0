"""Training-step time and peak memory: cns vs a PEFT LoRA (rank 4 on q/k/v/out) vs full K/V fine-tuning,
on the same model, batch, resolution, noise and timesteps (see _models.py for what each method trains).

Timing interleaves the methods round by round in one process and reports medians and ratios to LoRA
(the machines are noisy). Peak memory: on CUDA, max_memory_allocated per method; on CPU, the growth of the
peak RSS of a fresh subprocess per method over its own baseline (model, gradients and optimiser
state already allocated by a first step), sampled every millisecond.

    python benchmarks/learn_step.py [--model tiny|sd15] [--device cpu|cuda] [--precision fp32|bf16]
                                    [--resolution R] [--batch B] [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import METHODS, Setup, make_step, sd15_text_encoder, sd15_unet  # noqa: E402


def build(args) -> Setup:
    from cns_cli.model.runtime import resolve_precision

    dtype = resolve_precision(args.precision, args.device)
    if args.model == "tiny":
        from cns_cli.model.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(seed=0)
        return Setup(pipe.unet, pipe.text_encoder, args.resolution or 32, args.batch, args.device, dtype)
    torch.manual_seed(0)
    unet = sd15_unet("cpu")
    return Setup(unet, sd15_text_encoder("cpu"), args.resolution or 512, args.batch, args.device, dtype)


def peak_rss_growth(args, method: str) -> float:
    """MB of peak RSS that `steps` of `method` add over the model-loaded baseline, in a fresh process."""
    cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--precision", args.precision,
           "--batch", str(args.batch), "--memory-of", method]
    if args.resolution:
        cmd += ["--resolution", str(args.resolution)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_of(args) -> None:
    """Peak RSS while stepping minus RSS just before (sampled every millisecond by a thread: ru_maxrss
    would also count the temporary peak of building the model)."""
    import ctypes
    import gc
    import threading

    s = build(args)
    step = make_step(args.memory_of, s, copy_model=False)
    step()  # allocates gradients and optimiser state (small for every method here); the peak is activations
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed build-time memory back, for a clean baseline
    except OSError:
        pass
    base, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    for _ in range(3):
        step()
    done.set()
    t.join()
    print(max(peak[0] - base, 0.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("tiny", "sd15"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="steps per method per round")
    ap.add_argument("--memory-of", choices=METHODS, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.memory_of:
        return memory_of(args)

    s = build(args)
    steps = {m: make_step(m, s) for m in METHODS}
    for fn in steps.values():  # warm-up: allocator, kernels, lazy inits
        fn(), fn()
    times = {m: [] for m in METHODS}
    for _ in range(args.rounds):
        for m, fn in steps.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(args.steps):
                fn()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[m].append((time.perf_counter() - t) / args.steps)
    med = {m: statistics.median(v) for m, v in times.items()}
    trainable = {m: fn.trainable for m, fn in steps.items()}
    memory = {}
    if args.device == "cuda":
        for m, fn in steps.items():
            torch.cuda.synchronize()
            resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            memory[m] = (torch.cuda.max_memory_allocated() - resident) / 2**20
        mem_kind = "cuda peak allocated during one step minus what was resident before it (MB; activations, temporaries)"
    else:
        del steps, s  # free this process's model copies before the per-method processes load theirs
        gc.collect()
        memory = {m: peak_rss_growth(args, m) for m in METHODS}
        mem_kind = "CPU peak RSS while stepping minus RSS before (MB; activations and temporaries), fresh process per method"
    result = {
        "model": args.model, "device": args.device, "precision": args.precision, "batch": args.batch,
        "resolution": args.resolution or (32 if args.model == "tiny" else 512), "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "step_ms": {m: round(v * 1000, 2) for m, v in med.items()},
        "step_ratio_to_lora": {m: round(v / med["lora"], 3) for m, v in med.items()},
        "trainable_parameters": trainable,
        "peak_memory_mb": {m: round(v, 1) for m, v in memory.items()}, "memory_measure": mem_kind,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for m in METHODS:
            print(f"{m:8s} {result['step_ms'][m]:9.2f} ms/step  x{result['step_ratio_to_lora'][m]:.2f} of LoRA  "
                  f"{result['trainable_parameters'][m]:>11,} trainable  {result['peak_memory_mb'][m]:8.1f} MB peak")


if __name__ == "__main__":
    main()
