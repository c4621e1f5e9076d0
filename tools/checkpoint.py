"""Training checkpoints that resume a run exactly, in safetensors and JSON only (no pickle, no torch.save).

A checkpoint is one folder, written whole and then pointed to:

    FOLDER/<name>/<module>.safetensors   the float32 weights of each module
    FOLDER/<name>/state.safetensors      the optimiser's tensors (Adam's moments and step counts) and the RNG states
                                         (torch's global generator, the device's, and each named torch.Generator)
    FOLDER/<name>/state.json             everything else: what the caller records (phase, step, a running loss,
                                         the settings) and the optimiser's index (its param groups, and which
                                         state entries are tensors in state.safetensors and which are plain values)
    FOLDER/progress.json                 {"checkpoint": "<name>", ...}: replaced atomically, last

so a run interrupted while saving resumes from the previous checkpoint, whole. Older checkpoint folders are removed
once the pointer has moved.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

POINTER = "progress.json"
STATE = "state"


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def _module_tensors(module) -> dict:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def optimizer_to_safetensors(optimizer) -> tuple[dict, dict]:
    """(tensors, index): `optimizer.state_dict()` split into named tensors ("optimizer.<param>.<key>") and a JSON
    index holding the param groups and, per parameter, each state entry as {"tensor": name} or {"value": v}."""
    import torch

    sd = optimizer.state_dict()
    tensors, state = {}, {}
    for pid, entries in sd["state"].items():
        state[str(pid)] = {}
        for key, v in entries.items():
            if torch.is_tensor(v):
                name = f"optimizer.{pid}.{key}"
                tensors[name] = v.detach().to("cpu").contiguous().clone()
                state[str(pid)][key] = {"tensor": name}
            else:
                state[str(pid)][key] = {"value": v}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"state": state, "param_groups": groups}


def optimizer_from_safetensors(optimizer, tensors: dict, index: dict) -> None:
    """Load what `optimizer_to_safetensors` gave into `optimizer` (built over the same parameters, in order)."""
    # clone(): load_state_dict keeps a tensor that already has its parameter's dtype and device as it is, and the
    # optimiser then updates it in place; the checkpoint's own tensors stay as they were read
    state = {int(pid): {k: (tensors[e["tensor"]].clone() if "tensor" in e else e["value"]) for k, e in entries.items()}
             for pid, entries in index["state"].items()}
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in index["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _device_rng(device: str):
    """(get_state, set_state) of the device's default generator, or None on a CPU."""
    import torch

    if device.startswith("cuda"):
        return (lambda: torch.cuda.get_rng_state(device)), (lambda s: torch.cuda.set_rng_state(s, device))
    if device.startswith("mps"):
        return torch.mps.get_rng_state, torch.mps.set_rng_state
    return None


@dataclass
class Checkpoint:
    path: Path
    info: dict  # what the caller recorded (phase, step, ...); a NaN it recorded reads back as None
    index: dict  # the optimiser's index, or None
    tensors: dict  # state.safetensors: optimiser tensors and RNG states

    @property
    def step(self) -> int:
        return int(self.info["step"])

    def load_modules(self, modules: dict) -> None:
        from safetensors.torch import load_file

        for name, module in modules.items():
            module.load_state_dict(load_file(str(self.path / f"{name}.safetensors")))

    def restore(self, optimizer=None, generators: dict | None = None, device: str = "cpu") -> None:
        """The optimiser's state (when one was saved) and every RNG state: torch's global generator, the
        device's, and each of `generators` by name."""
        import torch

        if optimizer is not None and self.index is not None:
            optimizer_from_safetensors(optimizer, self.tensors, self.index)
        torch.set_rng_state(self.tensors["rng.torch"])
        if (rng := _device_rng(device)) and "rng.device" in self.tensors:
            rng[1](self.tensors["rng.device"])
        for name, gen in (generators or {}).items():
            gen.set_state(self.tensors[f"rng.generator.{name}"])


def save(folder: Path, name: str, info: dict, modules: dict, optimizer=None, generators: dict | None = None,
         device: str = "cpu") -> Path:
    """Write checkpoint `name` under `folder` (weights of `modules`, the optimiser's state, the RNG states and
    `info`), point progress.json at it, then remove every other checkpoint folder. Returns its folder."""
    import torch
    from safetensors.torch import save_file

    final = Path(folder) / name
    tmp = Path(folder) / f"{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for module_name, module in modules.items():
        save_file(_module_tensors(module), str(tmp / f"{module_name}.safetensors"))
    tensors, index = optimizer_to_safetensors(optimizer) if optimizer is not None else ({}, None)
    tensors["rng.torch"] = torch.get_rng_state()
    if rng := _device_rng(device):
        tensors["rng.device"] = rng[0]().cpu()
    for gen_name, gen in (generators or {}).items():
        tensors[f"rng.generator.{gen_name}"] = gen.get_state()
    save_file(tensors, str(tmp / f"{STATE}.safetensors"))
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in info.items()}
    _write_json(tmp / f"{STATE}.json", {"info": clean, "optimizer": index, "modules": sorted(modules)})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    _write_json(Path(folder) / POINTER, {"checkpoint": name, **{k: clean[k] for k in ("phase", "step") if k in clean}})
    for other in Path(folder).iterdir():
        if other.is_dir() and other.name != name and (other / f"{STATE}.json").is_file():
            shutil.rmtree(other)
    return final


def load(folder: Path) -> Checkpoint | None:
    """The checkpoint progress.json points at, or None when there is none."""
    from safetensors.torch import load_file

    pointer = Path(folder) / POINTER
    if not pointer.is_file():
        return None
    target = json.loads(pointer.read_text()).get("checkpoint")
    if not target:
        raise SystemExit(f"{pointer} names no checkpoint (written by an older version of this script?); "
                         "start again without --resume")
    path = Path(folder) / target
    doc = json.loads((path / f"{STATE}.json").read_text())
    return Checkpoint(path, doc["info"], doc["optimizer"], load_file(str(path / f"{STATE}.safetensors")))
