"""tools/checkpoint.py: optimiser state and RNG states through safetensors + JSON, and the pointer that makes a
checkpoint count only once it is whole."""

from __future__ import annotations

import json

from tools import checkpoint


def _model_and_optimizer(seed: int):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.SiLU(), torch.nn.Linear(4, 3))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))


def _steps(model, opt, gen, n: int) -> list[float]:
    import torch

    losses = []
    for _ in range(n):
        x = torch.randn(8, 5, generator=gen)
        loss = (model(x) - torch.randn(8, 3)).pow(2).mean()  # the target uses torch's global RNG
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_a_restored_run_continues_bit_for_bit(tmp_path):
    import torch

    model, opt = _model_and_optimizer(0)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    whole = _steps(model, opt, gen, 6)

    model, opt = _model_and_optimizer(0)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    first = _steps(model, opt, gen, 3)
    checkpoint.save(tmp_path, "step-3", {"phase": "fit", "step": 3, "loss": float("nan")}, {"model": model}, opt,
                    {"batches": gen})
    _steps(model, opt, gen, 2)  # the run goes on past the checkpoint, then dies

    model, opt = _model_and_optimizer(99)  # a fresh process: other weights, a fresh optimiser and RNGs
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(6)
    ck = checkpoint.load(tmp_path)
    assert ck.step == 3 and ck.info["loss"] is None  # NaN is stored as null
    ck.load_modules({"model": model})
    ck.restore(opt, {"batches": gen})
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)
    assert first + _steps(model, opt, gen, 3) == whole


def test_the_pointer_moves_last_and_older_checkpoints_go(tmp_path):
    import torch

    model, opt = _model_and_optimizer(0)
    _steps(model, opt, torch.Generator().manual_seed(0), 1)
    assert checkpoint.load(tmp_path) is None
    checkpoint.save(tmp_path, "a", {"step": 1}, {"model": model}, opt)
    checkpoint.save(tmp_path, "b", {"step": 2}, {"model": model}, opt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "progress.json"]
    assert json.loads((tmp_path / "progress.json").read_text()) == {"checkpoint": "b", "step": 2}
    # a save that dies half-way leaves a .partial folder and the pointer where it was
    (tmp_path / "c.partial").mkdir()
    assert checkpoint.load(tmp_path).path.name == "b"
    index = json.loads((tmp_path / "b" / "state.json").read_text())["optimizer"]
    names = {e["tensor"] for entries in index["state"].values() for e in entries.values()}
    assert names == {f"optimizer.{i}.{k}" for i in range(4) for k in ("step", "exp_avg", "exp_avg_sq")}
    raw = (tmp_path / "b" / "state.safetensors").read_bytes()  # safetensors: u64 header length + JSON header
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert names | {"rng.torch"} <= set(header)
