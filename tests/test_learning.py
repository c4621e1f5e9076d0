"""`cns learn` as plan -> fit -> commit (cns_cli/learning): commit needs no model, a dry run never reaches it,
the lock is held while a new bank trains, and the user paths that had no test: bf16 autocast on the CPU,
--gradient-checkpointing (it must really engage), --batch-size > 1 and --resolution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cns_cli.bank import Bank
from cns_cli.bank.models import Slice
from cns_cli.errors import BankLockedError
from cns_cli.learn import LearnConfig, learn
from cns_cli.learning.commit import commit
from cns_cli.learning.results import Plan, Trained

from tests.bank import bankfactory as bf

FAST = LearnConfig(steps=3, score_steps=1)


def test_commit_needs_no_model_and_stores_what_it_was_given(tmp_path):
    bank = bf.build_bank(tmp_path / "b.cnsbank", 1)
    parent = bank.head()
    rows = {bf.LAYER_K: np.array([1, 5, 9], np.int32), bf.LAYER_V: np.array([0, 15], np.int32)}
    coef = {bf.LAYER_K: np.full((3, 2), 0.5, np.float32), bf.LAYER_V: np.full((2, 2), -1.0, np.float32)}
    q = bank.read_object(parent.basis.object)["Q"]
    plan = Plan(name="new", class_word="cat", base=parent.base, q=q, basis=parent.basis, slice=Slice(start=4, rank=2),
                rows=rows, general_rows={}, general_key={}, general_cached=True, training={"steps": 3})
    trained = Trained(coef=coef, embedding=np.ones((1, bf.TEXT_DIM), np.float32), stats={"final_loss": 0.1})
    with bank.transaction() as tx:
        rev = commit(tx, plan, trained, ["cns", "learn", "new"])
    c = rev.concepts["new"]
    assert (rev.number, rev.parent, c.learned_in) == (2, 1, 2)
    assert c.neurons.per_layer == {bf.LAYER_K: 3, bf.LAYER_V: 2} and c.slice == Slice(start=4, rank=2)
    stored = bank.read_object(c.delta)
    assert stored[f"{bf.LAYER_K}.rows"].tolist() == [1, 5, 9] and (stored[f"{bf.LAYER_V}.coef"] == -1).all()
    assert rev.concepts["concept-0"] == parent.concepts["concept-0"]  # the earlier concept, untouched
    assert rev.caches == parent.caches and rev.basis == parent.basis


def test_commit_imports_no_torch():
    code = ("import sys, cns_cli.learning.commit, cns_cli.learn; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_dry_run_never_reaches_commit(tiny_base, dog_photos, tmp_path, monkeypatch):
    import cns_cli.learning.commit as commit_module

    def no(*a, **k):
        raise AssertionError("a dry run committed")

    monkeypatch.setattr(commit_module, "commit", no)
    out = learn(tmp_path / "b.cnsbank", "dog", dog_photos, class_word="dog", base=tiny_base, config=FAST, dry_run=True)
    assert out.revision is None and out.plan["neurons"] > 0
    assert not (tmp_path / "b.cnsbank").exists()


def test_a_new_bank_is_locked_while_it_trains(tiny_base, dog_photos, tmp_path, monkeypatch):
    from cns_cli.model import train

    root = tmp_path / "b.cnsbank"
    seen = []
    real_step = train.Trainer.step

    def step(self):
        with pytest.raises(BankLockedError):  # another writer is refused while this learn trains
            with Bank.open(root).transaction():
                pass
        seen.append(Bank.open(root).head().number)  # the bank exists, at its init revision
        return real_step(self)

    monkeypatch.setattr(train.Trainer, "step", step)
    out = learn(root, "dog", dog_photos, class_word="dog", base=tiny_base, config=FAST)
    assert seen == [0, 0, 0] and out.revision == 1


def test_bf16_autocast_trains_on_the_cpu(tiny_base, dog_photos, tmp_path):
    cfg = LearnConfig(steps=3, score_steps=1, precision="bf16")
    out = learn(tmp_path / "b.cnsbank", "dog", dog_photos, class_word="dog", base=tiny_base, config=cfg)
    rev = Bank.open(tmp_path / "b.cnsbank").head()
    assert out.stats["precision"] == "bf16" and np.isfinite(out.stats["final_loss"])
    coef = Bank.open(tmp_path / "b.cnsbank").read_object(rev.concepts["dog"].delta)
    assert any(np.abs(v).max() > 0 for k, v in coef.items() if k.endswith(".coef"))  # the rows moved, in fp32


def test_gradient_checkpointing_engages(tiny_base, dog_photos, tmp_path, monkeypatch):
    import torch.utils.checkpoint

    calls = []
    real = torch.utils.checkpoint.checkpoint

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)  # diffusers binds it when enabled
    cfg = LearnConfig(steps=2, score_steps=1, gradient_checkpointing=True)
    learn(tmp_path / "b.cnsbank", "dog", dog_photos, class_word="dog", base=tiny_base, config=cfg)
    assert calls, "no block was checkpointed"


def test_batch_size_and_resolution_reach_training(tiny_base, dog_photos, tmp_path, monkeypatch):
    from cns_cli.model import train

    shapes = []
    real = train.diffusion_loss

    def spy(unet, scheduler, latents, states, gen, added=None, rows=None):
        assert rows is None  # one process: the whole batch
        shapes.append((tuple(latents.shape), tuple(states.shape[:1])))
        return real(unet, scheduler, latents, states, gen, added, rows)

    monkeypatch.setattr(train, "diffusion_loss", spy)
    cfg = LearnConfig(steps=2, score_steps=1, batch_size=3, resolution=32)
    learn(tmp_path / "b.cnsbank", "dog", dog_photos, class_word="dog", base=tiny_base, config=cfg)
    # scoring (1 batch) and training (2 steps) all see 3 images of 32 px -> latents of 32 / vae factor
    from cns_cli.model.loading import load_pipeline, resolve_base

    factor = load_pipeline(resolve_base(tiny_base)).vae_scale_factor
    assert shapes == [((3, 4, 32 // factor, 32 // factor), (3,))] * 3


def test_generate_json_gives_one_record_per_image(tiny_base, dog_photos, tmp_path):
    from tests.clitools import cns

    bank = tmp_path / "b.cnsbank"
    learn(bank, "dog", dog_photos, class_word="dog", base=tiny_base, config=FAST)
    r = cns("--bank", bank, "generate", "<dog> on a beach", "a <dog>", "-n", "2", "--steps", "1",
            "--out", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["prompt"], x["seed"]) for x in records] == [("<dog> on a beach", 0), ("<dog> on a beach", 1),
                                                           ("a <dog>", 0), ("a <dog>", 1)]
    assert all(Path(x["path"]).is_file() and x["concepts"] == ["dog"] for x in records)


# -- multi-vector tokens (--vectors K) ------------------------------------------------------------------------


def test_a_3_vector_concept_stores_3_rows_and_adds_exactly_those_token_rows(vectors_bank_readonly, tiny_base):
    """<dog> learned with 3 vectors: a [3, e] embedding, the tokens <dog>, <dog>_1, <dog>_2 with those rows, every base
    row of the text encoder as it was; each vector started at the class word and trained on its own."""
    import torch

    from cns_cli.generate import build_pipeline
    from cns_cli.model.loading import load_pipeline, resolve_base
    from cns_cli.model.tokens import class_word_vector

    bank = Bank.open(vectors_bank_readonly)
    rev = bank.head()
    dog = bank.read_object(rev.concepts["dog"].embedding)["embedding"]
    hat = bank.read_object(rev.concepts["hat"].embedding)["embedding"]
    assert dog.shape == (3, 32) and hat.shape == (1, 32)
    assert rev.concepts["dog"].training["vectors"] == 3 and rev.concepts["hat"].training["vectors"] == 1
    base = load_pipeline(resolve_base(tiny_base))
    pipe = build_pipeline(bank, rev)
    n = len(base.tokenizer)
    tokens = ["<dog>", "<dog>_1", "<dog>_2", "<hat>"]
    assert pipe.tokenizer.convert_tokens_to_ids(tokens) == [n, n + 1, n + 2, n + 3] and len(pipe.tokenizer) == n + 4
    w, w0 = pipe.text_encoder.get_input_embeddings().weight, base.text_encoder.get_input_embeddings().weight
    assert torch.equal(w[:n], w0) and w.shape[0] == n + 4
    assert torch.equal(w[n:], torch.from_numpy(np.concatenate([dog, hat])))
    start = class_word_vector(base.tokenizer, base.text_encoder, "dog").numpy()
    assert all(not np.array_equal(row, start) for row in dog)  # all 3 trained
    assert not np.array_equal(dog[0], dog[1]) and not np.array_equal(dog[1], dog[2])  # each at its own position


def test_training_and_the_regulariser_read_the_expanded_prompts(tiny_base, dog_photos, hat_photos, tmp_path, monkeypatch):
    """Every prompt cns encodes while learning (scoring, training, the diagnostics, the earlier concepts' prompts of
    the drift budget)
    reads a 3-vector <dog> as its 3 tokens, in order, once per mention."""
    from cns_cli.model import text

    seen = []
    real = text._ids

    def spy(tokenizer, prompts, device):
        ids = real(tokenizer, prompts, device)
        seen.append((tokenizer, prompts, ids))
        return ids

    monkeypatch.setattr(text, "_ids", spy)
    path = tmp_path / "b.cnsbank"
    learn(path, "dog", dog_photos, class_word="dog", base=tiny_base, config=LearnConfig(steps=2, score_steps=1, vectors=3))
    own = list(seen)  # <dog>'s own scoring and training batches
    seen.clear()
    learn(path, "hat", hat_photos, class_word="hat", config=LearnConfig(steps=2, score_steps=1))

    def rows_naming(token, records):
        out = []
        for tok, prompts, ids in records:
            dog = tok.convert_tokens_to_ids(["<dog>", "<dog>_1", "<dog>_2"])
            out += [(prompt, row, dog) for prompt, row in zip(prompts, ids.tolist()) if token in prompt]
        return out

    earlier = rows_naming("<dog>", seen)  # the regulariser's prompt of the earlier concept
    assert [p for p, _, _ in earlier] == ["a photo of <dog> dog"]
    # 1 scoring batch + 2 training steps (one distinct prompt each) + the slice's selectivity before and after training
    assert len(rows_naming("<dog>", own)) == 1 + 2 + 2
    for _, row, dog in earlier + rows_naming("<dog>", own):
        at = row.index(dog[0])
        assert row[at : at + 3] == dog and sum(i in dog for i in row) == 3
    assert rows_naming("<hat>", seen)  # and the new concept's own prompts were encoded too


def test_the_plan_of_a_3_vector_concept_counts_its_vectors(tiny_base, dog_photos, tmp_path):
    from tests.clitools import cns

    args = ["--bank", tmp_path / "b.cnsbank", "learn", "dog", dog_photos, "--class", "dog", "--base", tiny_base,
            "--vectors", "3", "--score-steps", "1", "--dry-run"]
    plan = json.loads(cns(*args, "--json").stdout)["plan"]
    assert (plan["vectors"], plan["tokens"]) == (3, ["<dog>", "<dog>_1", "<dog>_2"])
    assert plan["parameters_trained"]["token"] == 3 * 32
    one = json.loads(cns(*args[:-5], "--score-steps", "1", "--dry-run", "--json").stdout)["plan"]
    assert one["vectors"] == 1 and plan["bytes_to_store"] - one["bytes_to_store"] == 2 * 32 * 4  # 2 more float32 rows
    r = cns(*args)
    assert r.exit_code == 0 and "+ 96 token in 3 vectors)" in r.stdout
    assert not (tmp_path / "b.cnsbank").exists()


def test_vectors_out_of_range_is_one_line_before_any_model_loads(dog_photos, tmp_path, no_model_load):
    from tests.clitools import cns, one_line_error

    for bad in ("0", "17"):
        msg = one_line_error(cns("--bank", tmp_path / "b.cnsbank", "learn", "dog", dog_photos, "--vectors", bad))
        assert msg == f"error: --vectors must be a whole number from 1 to 16, got {bad}"
    assert not (tmp_path / "b.cnsbank").exists()
