"""Training-step time and peak memory: cns vs a PEFT LoRA (rank 4 on q/k/v/out) vs full K/V fine-tuning,
on the same model, batch, resolution, noise and timesteps (see _models.py for what each method trains).

Timing interleaves the methods round by round in one process and reports medians and ratios to LoRA
(the machines are noisy). Peak memory: on CUDA, max_memory_allocated per method; on CPU, the growth of the
peak RSS of a fresh subprocess per method over its own baseline (model, gradients and optimiser
state already allocated by a first step), sampled every millisecond.

    python benchmarks/learn_step.py [--model tiny|sd15|sdxl] [--device cpu|cuda] [--precision fp32|bf16]
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
from _models import METHODS, Setup, make_step, sd15_text_encoder, sd15_unet, sdxl_text_encoders, sdxl_unet  # noqa: E402

DEFAULT_RESOLUTION = {"tiny": 32, "sd15": 512, "sdxl": 128}
# SDXL's UNet is 10 GB in fp32: one copy per method does not fit a 24 GB machine, so each method runs in its own
# process (rounds alternate the methods): cns, cns with a frozen token (`--lr-token 0`) and LoRA.
SDXL_METHODS = ("cns", "cns_rows_only", "lora")


def build(args) -> Setup:
    from cns_cli.model.runtime import resolve_precision

    dtype = resolve_precision(args.precision, args.device)
    if args.model == "tiny":
        from cns_cli.model.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline(seed=0)
        return Setup(pipe.unet, pipe.text_encoder, args.resolution or 32, args.batch, args.device, dtype)
    torch.manual_seed(0)
    if args.model == "sdxl":
        return Setup(sdxl_unet("cpu"), sdxl_text_encoders("cpu"), resolution(args), args.batch, args.device, dtype)
    unet = sd15_unet("cpu")
    return Setup(unet, sd15_text_encoder("cpu"), resolution(args), args.batch, args.device, dtype)


def resolution(args) -> int:
    return args.resolution or DEFAULT_RESOLUTION[args.model]


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
    would also count the temporary peak of building the model). Prints that (MB) as the last line; with
    --json also the median step time and the trainable parameters (the one-process-per-method mode)."""
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
    times = []
    for _ in range(max(3, args.steps)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    done.set()
    t.join()
    if args.json:
        print(json.dumps({"step_s": statistics.median(times), "trainable": step.trainable}))
    print(max(peak[0] - base, 0.0))


def one_process_per_method(args) -> None:
    """Each of SDXL_METHODS in a fresh process per round (rounds alternate the order): median step time over the
    rounds' medians, and peak RSS growth, as `memory_of` measures it."""
    runs = {m: [] for m in SDXL_METHODS}
    for r in range(args.rounds):
        for m in SDXL_METHODS if r % 2 == 0 else SDXL_METHODS[::-1]:
            cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device, "--precision",
                   args.precision, "--batch", str(args.batch), "--resolution", str(resolution(args)), "--steps",
                   str(args.steps), "--memory-of", m, "--json"]
            lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
            runs[m].append({**json.loads(lines[-2]), "peak_mb": float(lines[-1])})
            print(f"round {r + 1} {m}: {runs[m][-1]}", file=sys.stderr, flush=True)
    med = {m: statistics.median(x["step_s"] for x in v) for m, v in runs.items()}
    report(args, med, {m: v[0]["trainable"] for m, v in runs.items()},
           {m: max(x["peak_mb"] for x in v) for m, v in runs.items()},
           "CPU peak RSS while stepping minus RSS before (MB; activations and temporaries), fresh process per method and round")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=tuple(DEFAULT_RESOLUTION), default="tiny")
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
    if args.model == "sdxl":
        return one_process_per_method(args)

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
    report(args, med, trainable, memory, mem_kind)


def report(args, med: dict, trainable: dict, memory: dict, mem_kind: str) -> None:
    result = {
        "model": args.model, "device": args.device, "precision": args.precision, "batch": args.batch,
        "resolution": resolution(args), "rounds": args.rounds, "threads": torch.get_num_threads(),
        "step_ms": {m: round(v * 1000, 2) for m, v in med.items()},
        "step_ratio_to_lora": {m: round(v / med["lora"], 3) for m, v in med.items()},
        "trainable_parameters": trainable,
        "peak_memory_mb": {m: round(v, 1) for m, v in memory.items()}, "memory_measure": mem_kind,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for m in med:
            print(f"{m:8s} {result['step_ms'][m]:9.2f} ms/step  x{result['step_ratio_to_lora'][m]:.2f} of LoRA  "
                  f"{result['trainable_parameters'][m]:>11,} trainable  {result['peak_memory_mb'][m]:8.1f} MB peak")

if __name__ == "__main__":
    main()
