"""Bytes on disk per concept: a cns concept (delta + embedding objects, as the bank stores them) vs a
rank-4 LoRA on q/k/v/out (DreamBooth-LoRA defaults, float32 and float16 safetensors) vs a full K/V delta
(every attn2.to_k/to_v weight, as Custom Diffusion stores it), at the shapes of the tiny test pipeline and
of SD 1.5 and SDXL (their UNet configs on the meta device: shapes only, no weights). Every number is the length
of a real safetensors encoding of tensors of those shapes. The cns concept spreads its budget of rows over
every K/V layer at random, which is the most headers a concept of that size can need.

    python benchmarks/storage.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import SDXL_EMBEDDING_DIMS, fake_concepts, sd15_unet, sdxl_unet  # noqa: E402


def _bytes(tensors: dict[str, np.ndarray]) -> int:
    from safetensors.numpy import save

    return len(save(tensors))


def _zeros_bytes(shapes: dict[str, tuple], dtype) -> int:
    """Length of the safetensors file holding tensors of these shapes (the values do not change it)."""
    return _bytes({k: np.zeros(s, dtype) for k, s in shapes.items()})


def measure(unet, text_dim: int, embedding_dims: tuple[int, ...] | None = None) -> dict:
    from cns_cli.bank.delta import decode_delta
    from cns_cli.bank.store import encode_object
    from cns_cli.model.loading import kv_layers

    kv = {name: m.out_features for name, m in kv_layers(unet).items()}
    params = sum(p.numel() for p in unet.parameters())
    (_, delta, emb), = fake_concepts(kv, text_dim, 1, params, embedding_dims=embedding_dims)
    cns = len(encode_object(delta, "delta", {"concept": "c0"})) + len(encode_object(emb, "embedding"))
    lora = {}
    for name, m in unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and hasattr(m, "in_features"):
            lora[f"unet.{name}.lora_A.weight"] = (4, m.in_features)
            lora[f"unet.{name}.lora_B.weight"] = (m.out_features, 4)
    full = {f"{name}.weight": (m.out_features, m.in_features) for name, m in kv_layers(unet).items()}
    rows = sum(d.n for d in decode_delta(delta).values())
    return {
        "unet_parameters": params, "kv_rows": sum(kv.values()), "cns_rows": int(rows),
        "cns_bytes": cns,
        "lora_r4_fp32_bytes": _zeros_bytes(lora, np.float32), "lora_r4_fp16_bytes": _zeros_bytes(lora, np.float16),
        "full_kv_fp32_bytes": _zeros_bytes(full, np.float32),
        "lora_r4_parameters": sum(int(np.prod(s)) for s in lora.values()),
        "cns_parameters": int(rows) * 4 + sum(embedding_dims or (text_dim,)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from cns_cli.model.tiny import build_tiny_pipeline

    result = {"tiny": measure(build_tiny_pipeline().unet, 32), "sd15": measure(sd15_unet("meta"), 768),
              "sdxl": measure(sdxl_unet("meta"), 2048, SDXL_EMBEDDING_DIMS)}
    for r in result.values():
        r["lora_fp16_over_cns"] = round(r["lora_r4_fp16_bytes"] / r["cns_bytes"], 1)
        r["full_kv_over_cns"] = round(r["full_kv_fp32_bytes"] / r["cns_bytes"], 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for shape, r in result.items():
            print(f"{shape:5s} cns {r['cns_bytes']:>11,} B ({r['cns_rows']} rows) | LoRA r4 fp32 {r['lora_r4_fp32_bytes']:>11,} B, "
                  f"fp16 {r['lora_r4_fp16_bytes']:>11,} B | full K/V {r['full_kv_fp32_bytes']:>12,} B")


if __name__ == "__main__":
    main()
