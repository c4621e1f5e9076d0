"""Where and in what precision a model runs: `--device` and `--precision`.

Policy (diffusers' "usability over performance", with speed as the default only where it is safe):
weights are loaded and fingerprinted in float32, deltas are applied in float32, and only then is the
pipeline cast to the run dtype. On a GPU, `auto` means bf16 (fp16 where bf16 is unsupported) with
autocast; trainables stay float32. On CPU and MPS, `auto` means fp32 (low-precision matmuls are slow on
most CPUs, and fp32 keeps `cns generate` bit-identical to plain diffusers).
"""

from __future__ import annotations

import contextlib

from ..errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(requested: str) -> str:
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if requested == "auto":
        return "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    if requested not in available:
        raise UsageError(f"--device {requested} is not one of auto, cpu, cuda, mps")
    if not available[requested]:
        raise UsageError(f"--device {requested} is not available on this machine; use --device auto or cpu")
    return requested


def resolve_precision(requested: str, device: str):
    """The torch dtype a run uses on `device`."""
    import torch

    if requested not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested}")
    if requested == "auto":
        if device != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if requested == "fp16" and device == "cpu":
        raise UsageError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[requested]


def autocast(device: str, dtype):
    """Mixed precision for the forward passes; a no-op in fp32."""
    import torch

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else device, dtype=dtype)


def precision_name(dtype) -> str:
    import torch

    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
