"""The core loop on a tiny random pipeline loaded from disk: learn, generate, forget, inspect.

What is asserted is what users rely on: only the selected K/V rows and the new token's embedding change;
earlier concepts' objects are never rewritten; the regulariser reduces drift on earlier prompts; images
are deterministic and equal a plain diffusers pipeline's; forgetting restores the base exactly.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cns_cli.bank import Bank
from cns_cli.cli import app
from cns_cli.generate import GenerateConfig, build_pipeline, generate
from cns_cli.learn import LearnConfig, learn
from cns_cli.model.loading import kv_layers, load_pipeline, resolve_base

FAST = dict(steps=8, score_steps=2)
runner = CliRunner()


def cns(*args: str):
    return runner.invoke(app, list(args))


def files_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


@pytest.fixture(scope="module")
def base_pipe(tiny_base):
    return load_pipeline(resolve_base(tiny_base))


@pytest.fixture(scope="module")
def dog_bank(tiny_base, dog_photos, tmp_path_factory) -> Path:
    """A bank holding only <dog>, learned through the CLI (so the CLI path is exercised once for real)."""
    path = tmp_path_factory.mktemp("loop") / "dog.cnsbank"
    r = cns("--bank", str(path), "learn", "dog", str(dog_photos), "--base", tiny_base, "--steps", "8",
            "--score-steps", "2", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["revision"] == 1 and doc["plan"]["neurons"] > 0
    return path


@pytest.fixture(scope="module")
def dog_hat_bank(dog_bank, hat_photos, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("loop") / "doghat.cnsbank"
    shutil.copytree(dog_bank, path)
    learn(path, "hat", hat_photos, config=LearnConfig(**FAST))
    return path


def test_learn_changes_exactly_the_selected_rows_and_the_new_token(dog_bank, base_pipe):
    bank = Bank.open(dog_bank)
    rev = bank.head()
    dog = rev.concepts["dog"]
    delta = bank.read_object(dog.delta)
    pipe = build_pipeline(bank, rev)
    layers = kv_layers(pipe.unet)
    base_params = dict(base_pipe.unet.named_parameters())
    for name, p in pipe.unet.named_parameters():
        b = base_params[name]
        layer = name.removesuffix(".weight")
        if layer in layers:
            changed = torch.nonzero((p != b).any(dim=1)).flatten().tolist()
            expected = delta[f"{layer}.rows"].tolist() if f"{layer}.rows" in delta else []
            assert changed == expected, layer
        else:
            assert torch.equal(p, b), name
    assert sum(len(v) for k, v in delta.items() if k.endswith(".rows")) == dog.neurons.total > 0
    for a, b in zip(pipe.vae.parameters(), base_pipe.vae.parameters()):
        assert torch.equal(a, b)
    new_emb = pipe.text_encoder.get_input_embeddings().weight
    old_emb = base_pipe.text_encoder.get_input_embeddings().weight
    assert new_emb.shape[0] == old_emb.shape[0] + 1 == len(pipe.tokenizer)
    assert torch.equal(new_emb[: old_emb.shape[0]], old_emb)
    token_id = pipe.tokenizer.convert_tokens_to_ids("<dog>")
    assert token_id == old_emb.shape[0]
    assert torch.equal(new_emb[token_id], torch.from_numpy(bank.read_object(dog.embedding)["embedding"][0]))
    for (n, a), b in zip(pipe.text_encoder.named_parameters(), base_pipe.text_encoder.parameters()):
        if "token_embedding" not in n:
            assert torch.equal(a, b), n
    assert pipe.tokenizer("a <dog> dog").input_ids.count(token_id) == 1


def test_neurons_avoid_general_rows_and_respect_the_budget(dog_bank, base_pipe):
    bank = Bank.open(dog_bank)
    rev = bank.head()
    general = bank.read_object(rev.caches.general_neurons)
    delta = bank.read_object(rev.concepts["dog"].delta)
    for key, rows in delta.items():
        if key.endswith(".rows"):
            assert not set(rows.tolist()) & set(general[key[:-5]].tolist())
    unet_params = sum(p.numel() for p in base_pipe.unet.parameters())
    assert rev.concepts["dog"].neurons.total <= int(0.0013 * unet_params / rev.base.text_dim)
    assert rev.concepts["dog"].training["budget"] == 0.0013  # every knob is recorded


def test_second_concept_leaves_the_first_bytes_identical(dog_bank, dog_hat_bank):
    before, after = Bank.open(dog_bank).head(), Bank.open(dog_hat_bank).head()
    assert after.concepts["dog"] == before.concepts["dog"]
    for ref in (before.concepts["dog"].delta, before.concepts["dog"].embedding, before.basis.object):
        assert (dog_hat_bank / ref.path).read_bytes() == (dog_bank / ref.path).read_bytes()
    hat, dog = after.concepts["hat"].slice, after.concepts["dog"].slice
    assert hat.start >= dog.start + dog.rank or dog.start >= hat.start + hat.rank  # disjoint slices


def _hat_drift(bank_path: Path) -> float:
    """Σ_l ‖ΔW_hat,l C_dog‖_F: how much <hat> moved the K/V outputs of <dog>'s prompt."""
    from cns_cli.model.bank_apply import basis_matrix, concept_tensors
    from cns_cli.model.text import encode

    bank = Bank.open(bank_path)
    rev = bank.head()
    pipe = build_pipeline(bank, rev)
    with torch.no_grad():
        states = encode(pipe.tokenizer, pipe.text_encoder, ["a photo of <dog> dog"])[0]  # (77, d)
    hat = concept_tensors(bank, rev, "hat", basis_matrix(bank, rev))
    return float(sum(((hat.coef[l] @ hat.basis_slice.T) @ states.T).norm() for l in hat.coef))


def test_regulariser_reduces_kv_drift_on_the_first_concept(dog_bank, hat_photos, tmp_path):
    drift = {}
    for lam in (0.0, 1.0):
        path = tmp_path / f"lambda-{lam}.cnsbank"
        shutil.copytree(dog_bank, path)
        learn(path, "hat", hat_photos, config=LearnConfig(steps=30, score_steps=2, reg_lambda=lam, max_drift=None))
        drift[lam] = _hat_drift(path)
    print(f"K/V drift on '<dog>' prompt after learning <hat>: regulariser off {drift[0.0]:.4f}, on {drift[1.0]:.4f}")
    assert drift[1.0] < 0.8 * drift[0.0]


def _relative_drift(bank_path: Path) -> dict[str, float]:
    """Per layer, Σ‖ΔW_hat c‖² / Σ‖W c‖² over the content positions of <dog>'s prompt (start excluded, end of text
    included), W the layer as <hat> was trained on it (the base with <dog> applied): the drift budget's ρ for the
    `earlier` set, measured the long way on the bank as stored."""
    from cns_cli.model.bank_apply import basis_matrix, concept_tensors
    from cns_cli.model.text import encode

    bank = Bank.open(bank_path)
    rev = bank.head()
    pipe = build_pipeline(bank, rev)  # both concepts applied
    prompt = "a photo of <dog> dog"
    n = len(pipe.tokenizer(prompt).input_ids)
    with torch.no_grad():
        states = encode(pipe.tokenizer, pipe.text_encoder, [prompt])[0][1:n]  # (content, d)
    hat = concept_tensors(bank, rev, "hat", basis_matrix(bank, rev))
    layers = kv_layers(pipe.unet)
    out = {}
    for name, coef in hat.coef.items():
        if not hat.rows[name].numel():
            continue
        delta = torch.zeros_like(layers[name].weight)
        delta[hat.rows[name]] = coef @ hat.basis_slice.T
        w = layers[name].weight.detach() - delta  # the layer without <hat>: what training saw
        out[name] = float((states @ delta.T).pow(2).sum() / (states @ w.T).pow(2).sum())
    return out


def test_a_concept_slice_is_its_own_orthonormal_basis_and_forgets_exactly(dog_bank, hat_photos, base_pipe, tmp_path):
    """--slice concept: B is stored in the delta object, orthonormal and orthogonal to <dog>'s slice; only <hat>'s
    rows and token change, and forgetting it gives <dog>'s weights back bit for bit."""
    from cns_cli.bank.delta import basis_of
    from cns_cli.bank.history import forget

    path = tmp_path / "own.cnsbank"
    shutil.copytree(dog_bank, path)
    learn(path, "hat", hat_photos, config=LearnConfig(steps=12, score_steps=2, lr=1e-2, slice="concept"))
    bank = Bank.open(path)
    rev = bank.head()
    hat, dog = rev.concepts["hat"], rev.concepts["dog"]
    q = bank.read_object(rev.basis.object)["Q"]
    b = basis_of(bank.read_object(hat.delta), hat, q)
    assert hat.slice.start is None and b.shape == (rev.base.text_dim, hat.slice.rank)
    assert np.abs(b.T @ b - np.eye(hat.slice.rank)).max() < 1e-5
    assert np.abs(basis_of(bank.read_object(dog.delta), dog, q).T @ b).max() < 1e-5
    assert hat.stats["selectivity"] > hat.slice.rank  # sees the concept better than a blind slice's average
    with_hat = {n: l.weight.detach().clone() for n, l in kv_layers(build_pipeline(bank, rev).unet).items()}
    dog_only = {n: l.weight.detach().clone() for n, l in kv_layers(build_pipeline(bank, Bank.open(dog_bank).head()).unet).items()}
    changed = {n for n in with_hat if not torch.equal(with_hat[n], dog_only[n])}
    assert changed and changed <= set(hat.neurons.per_layer)
    forget(bank, "hat")
    after = {n: l.weight.detach() for n, l in kv_layers(build_pipeline(bank, bank.head()).unet).items()}
    assert all(torch.equal(after[n], dog_only[n]) for n in after)


def test_drift_budget_bounds_the_change_of_earlier_prompts_exactly(dog_bank, hat_photos, tmp_path):
    """With --max-drift ε every layer's relative K/V change on <dog>'s prompt is ≤ ε (measured on the stored bank);
    without a budget the same learn moves it further, so the bound is what held the rows."""
    drift, recorded = {}, {}
    for eps in (1e-4, None):
        path = tmp_path / f"drift-{eps}.cnsbank"
        shutil.copytree(dog_bank, path)
        learn(path, "hat", hat_photos, config=LearnConfig(steps=30, score_steps=2, lr=1e-2, max_drift=eps))
        drift[eps] = max(_relative_drift(path).values())
        recorded[eps] = Bank.open(path).head().concepts["hat"].stats
    assert drift[1e-4] <= 1e-4 * (1 + 1e-3)
    assert recorded[1e-4]["drift_earlier"] == pytest.approx(drift[1e-4], rel=1e-2)
    assert max(v for k, v in recorded[1e-4].items() if k.startswith("drift_")) <= 1e-4 * (1 + 1e-3)
    assert drift[None] > 3e-4  # unbounded, the rows move the earlier prompt more than the budget allows
    assert recorded[None]["largest_coefficient"] > recorded[1e-4]["largest_coefficient"] > 0


def _pixels(path: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_generate_is_deterministic_and_personalised(dog_bank, base_pipe, tmp_path):
    cfg = GenerateConfig(seed=3, steps=4)
    a = generate(dog_bank, ["<dog> on a beach"], tmp_path / "a", cfg)[0]
    b = generate(dog_bank, ["<dog> on a beach"], tmp_path / "b", cfg)[0]
    assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()
    assert a["text"] == "<dog> dog on a beach" and a["seed"] == 3 and a["revision"] == 1
    base_img = base_pipe(a["text"], num_inference_steps=4, generator=torch.Generator().manual_seed(3)).images[0]
    assert np.abs(_pixels(a["path"]) - np.asarray(base_img, dtype=np.int16)).max() > 0


def test_generate_equals_plain_diffusers_with_the_same_weights(dog_hat_bank, tiny_base, tmp_path):
    """The bank's weights applied by hand, from the objects and the SPEC formula, in a plain pipeline."""
    bank = Bank.open(dog_hat_bank)
    rev = bank.head()
    pipe = load_pipeline(resolve_base(tiny_base))
    q = bank.read_object(rev.basis.object)["Q"].astype(np.float64)
    layers = kv_layers(pipe.unet)
    with torch.no_grad():
        total = {n: np.zeros(tuple(m.weight.shape)) for n, m in layers.items()}
        for c in rev.concepts.values():
            t = bank.read_object(c.delta)
            b = q[:, c.slice.start : c.slice.start + c.slice.rank]
            for layer in c.neurons.per_layer:
                total[layer][t[f"{layer}.rows"]] += t[f"{layer}.coef"].astype(np.float64) @ b.T
        for n, m in layers.items():
            m.weight += torch.from_numpy(total[n]).float()
        names = sorted(rev.concepts, key=lambda n: rev.concepts[n].learned_in)
        pipe.tokenizer.add_tokens([rev.concepts[n].token for n in names])
        pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer))
        for n in names:
            tid = pipe.tokenizer.convert_tokens_to_ids(rev.concepts[n].token)
            pipe.text_encoder.get_input_embeddings().weight[tid] = torch.from_numpy(bank.read_object(rev.concepts[n].embedding)["embedding"][0])
    rec = generate(dog_hat_bank, ["<dog> wearing a <hat>"], tmp_path, GenerateConfig(seed=5, steps=4, guidance=6.0))[0]
    assert rec["text"] == "<dog> dog wearing a <hat> hat" and rec["concepts"] == ["dog", "hat"]
    ref = pipe(rec["text"], num_inference_steps=4, guidance_scale=6.0, generator=torch.Generator().manual_seed(5)).images[0]
    assert np.abs(_pixels(rec["path"]) - np.asarray(ref, dtype=np.int16)).max() <= 1


def test_png_records_how_it_was_made(dog_bank, tmp_path):
    from PIL import Image

    rec = generate(dog_bank, ["<dog> in the snow"], tmp_path, GenerateConfig(seed=9, steps=2))[0]
    info = Image.open(rec["path"]).text
    assert info["cns:prompt"] == "<dog> in the snow" and info["cns:text"] == "<dog> dog in the snow"
    assert info["cns:seed"] == "9" and info["cns:revision"] == "1" and info["cns:concepts"] == "dog"


def test_learn_then_forget_gives_the_images_from_before(dog_bank, hat_photos, tmp_path):
    path = tmp_path / "b.cnsbank"
    shutil.copytree(dog_bank, path)
    cfg = GenerateConfig(seed=1, steps=3, n=2)
    before = [_pixels(r["path"]) for r in generate(path, ["<dog> at night"], tmp_path / "before", cfg)]
    learn(path, "hat", hat_photos, config=LearnConfig(**FAST))
    assert cns("--bank", str(path), "forget", "hat").exit_code == 0
    after = [_pixels(r["path"]) for r in generate(path, ["<dog> at night"], tmp_path / "after", cfg)]
    assert all(np.array_equal(x, y) for x, y in zip(before, after))


def test_forgetting_every_concept_restores_the_base_exactly(dog_hat_bank, base_pipe, tmp_path):
    path = tmp_path / "b.cnsbank"
    shutil.copytree(dog_hat_bank, path)
    for name in ("dog", "hat"):
        assert cns("--bank", str(path), "forget", name).exit_code == 0
    bank = Bank.open(path)
    pipe = build_pipeline(bank, bank.head())
    for model in ("unet", "text_encoder", "vae"):
        got, want = getattr(pipe, model).state_dict(), getattr(base_pipe, model).state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got), model
    assert len(pipe.tokenizer) == len(base_pipe.tokenizer)


def test_inspect_neurons_after_two_concepts(dog_hat_bank):
    r = cns("--bank", str(dog_hat_bank), "inspect", "--neurons", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    by = {c["name"]: c for c in doc["concepts"]}
    assert set(by) == {"dog", "hat"}
    assert by["dog"]["overlap"]["hat"] == by["hat"]["overlap"]["dog"]
    assert doc["capacity"]["columns_left"] == 32 - 8
    assert doc["totals"]["bytes"] == sum(c["bytes"] for c in doc["concepts"])


def test_dry_run_prints_the_plan_and_writes_nothing(dog_bank, hat_photos):
    before = files_digest(dog_bank)
    r = cns("--bank", str(dog_bank), "learn", "hat", str(hat_photos), "--dry-run", "--json", "--score-steps", "2")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["neurons"] == sum(plan["neurons_per_layer"].values()) > 0
    assert len(plan["images"]) == 4 and plan["bytes_to_store"] > 0
    assert plan["parameters_trained"] == {"coefficients": plan["neurons"] * 4, "token": 32, "total": plan["neurons"] * 4 + 32}
    p = plan["protection"]  # what decides whether the rows can move
    assert p["max_drift"] == LearnConfig.max_drift and set(p["sets"]) == {"bos", "calibration", "padding", "neighbours", "earlier"}
    assert all(len(v["gram_eigenvalues"]) == 4 and 0 < v["energy_min"] <= v["energy_max"] for v in p["sets"].values())
    assert 0 < p["selectivity"]["slice"] <= p["selectivity"]["best"]
    human = cns("--bank", str(dog_bank), "learn", "hat", str(hat_photos), "--dry-run", "--score-steps", "2")
    assert "protection   max drift 0.1 (RMS relative change ≤ 31.6%)" in human.stdout
    assert "selectivity  κ" in human.stdout and "earlier" in human.stdout
    assert files_digest(dog_bank) == before


def test_a_learn_computes_the_layer_energies_once_and_inspect_shows_what_the_rows_did(dog_bank, hat_photos, tmp_path,
                                                                                      monkeypatch):
    """The plan's diagnostics and training share E_{l,g} (one WᵀW per layer); the concept records the attained
    drift, and `cns inspect --neurons` prints it."""
    from cns_cli.method import protect

    calls = []
    real = protect.layer_energies
    monkeypatch.setattr(protect, "layer_energies", lambda *a: calls.append(1) or real(*a))
    path = tmp_path / "b.cnsbank"
    shutil.copytree(dog_bank, path)
    learn(path, "hat", hat_photos, config=LearnConfig(steps=4, score_steps=2))
    assert len(calls) == 1
    stats = Bank.open(path).head().concepts["hat"].stats
    assert 0 < stats["drift_earlier"] <= LearnConfig.max_drift and stats["largest_coefficient"] > 0
    r = cns("--bank", str(path), "inspect", "--neurons")
    assert r.exit_code == 0 and f"hat: largest coefficient {stats['largest_coefficient']:.3g}, drift" in r.stdout


def test_replace_relearns_a_concept_in_place(dog_hat_bank, dog_photos, tmp_path):
    path = tmp_path / "b.cnsbank"
    shutil.copytree(dog_hat_bank, path)
    old = Bank.open(path).head().concepts
    learn(path, "dog", dog_photos, replace=True, config=LearnConfig(**FAST, seed=7))
    rev = Bank.open(path).head()
    assert rev.concepts["hat"] == old["hat"]  # the other concept is untouched
    assert rev.concepts["dog"].learned_in == rev.number and rev.concepts["dog"].delta != old["dog"].delta
    assert rev.concepts["dog"].training["seed"] == 7
    # the replaced concept may reuse its own freed slice, never hat's
    hat, dog = rev.concepts["hat"].slice, rev.concepts["dog"].slice
    assert hat.start >= dog.start + dog.rank or dog.start >= hat.start + hat.rank


def test_frozen_token_trains_rows_only(dog_bank, hat_photos, tmp_path, base_pipe):
    """--lr-token 0: the token keeps its class-word start (and training skips the text encoder)."""
    from cns_cli.model.tokens import class_word_vector

    path = tmp_path / "b.cnsbank"
    shutil.copytree(dog_bank, path)
    learn(path, "hat", hat_photos, config=LearnConfig(**FAST, lr_token=0.0))
    bank = Bank.open(path)
    hat = bank.head().concepts["hat"]
    start = class_word_vector(base_pipe.tokenizer, base_pipe.text_encoder, "hat").numpy()
    assert (bank.read_object(hat.embedding)["embedding"][0] == start).all()
    assert any(abs(v).max() > 0 for k, v in bank.read_object(hat.delta).items() if k.endswith(".coef"))


def test_a_base_model_may_bring_its_own_calibration_prompts(tiny_base, dog_photos, dog_bank, tmp_path):
    """A base folder with cns_calibration_prompts.txt (prompts in its own domain) is scanned with those
    prompts: the general-neuron cache names that set, and the rows it finds follow the prompts."""
    from cns_cli.prompts import MODEL_CALIBRATION_FILE, calibration_id

    own = tmp_path / "tiny-own"
    shutil.copytree(tiny_base, own)
    prompts = [f"a {c} {o} on the {s}" for c in ("red", "blue") for o in ("dog", "hat", "cat", "car")
               for s in ("beach", "snow")]
    (own / MODEL_CALIBRATION_FILE).write_text("# the model's domain\n" + "\n".join(prompts) + "\n")
    path = tmp_path / "own.cnsbank"
    out = learn(path, "dog", dog_photos, base=str(own), config=LearnConfig(**FAST))
    assert out.plan["calibration"] == calibration_id(own) and out.plan["calibration"].startswith("model-v1:")
    bank = Bank.open(path)
    meta = bank.read_object_metadata(bank.head().caches.general_neurons)
    assert meta["calibration"] == calibration_id(own)
    builtin = Bank.open(dog_bank)
    assert Bank.open(dog_bank).read_object_metadata(builtin.head().caches.general_neurons)["calibration"].startswith("builtin-v1:")
    general_own = bank.read_object(bank.head().caches.general_neurons)
    general_builtin = builtin.read_object(builtin.head().caches.general_neurons)
    assert any(not np.array_equal(general_own[k], general_builtin[k]) for k in general_own)

    (own / MODEL_CALIBRATION_FILE).write_text("too few\n")
    r = cns("--bank", str(tmp_path / "few.cnsbank"), "learn", "dog", str(dog_photos), "--base", str(own))
    assert r.exit_code == 2 and "at least 16" in r.stderr and "Traceback" not in r.stderr


def _same_models(pipe, other) -> bool:
    """unet, text encoder and VAE weights bit for bit, and the same tokenizer size."""
    for model in ("unet", "text_encoder", "vae"):
        got, want = getattr(pipe, model).state_dict(), getattr(other, model).state_dict()
        if got.keys() != want.keys() or not all(torch.equal(got[k], want[k]) for k in got):
            return False
    return len(pipe.tokenizer) == len(other.tokenizer)


def test_a_multi_vector_concept_generates_and_is_forgotten_exactly(vectors_bank_readonly, base_pipe, tmp_path):
    """<dog> with 3 vectors (and <hat> with 1): generated through the same pipeline call as any concept, and
    forgetting it leaves exactly <hat>'s model, then, with <hat> forgotten too, exactly the base; applying and
    removing it in-process does the same."""
    from cns_cli.model.bank_apply import apply_concepts
    from cns_cli.model.personalised import load_personalised

    rec = generate(vectors_bank_readonly, ["<dog> wearing a <hat>"], tmp_path / "img", GenerateConfig(seed=2, steps=3))[0]
    assert rec["text"] == "<dog> dog wearing a <hat> hat"  # the pipeline's encode_prompt expands <dog> (once)
    plain = base_pipe(rec["text"], num_inference_steps=3, generator=torch.Generator().manual_seed(2)).images[0]
    assert np.abs(_pixels(rec["path"]) - np.asarray(plain, dtype=np.int16)).max() > 0
    path = tmp_path / "b.cnsbank"
    shutil.copytree(vectors_bank_readonly, path)
    bank = Bank.open(path)
    both = bank.head()
    assert cns("--bank", str(path), "forget", "dog").exit_code == 0
    assert _same_models(build_pipeline(bank, bank.head()), load_personalised(bank, both, ["hat"]))
    assert cns("--bank", str(path), "forget", "hat").exit_code == 0
    empty = build_pipeline(bank, bank.head())
    assert _same_models(empty, base_pipe)
    with apply_concepts(empty, bank, both) as applied:
        assert len(applied.token_ids) == 3 + 1 and not _same_models(empty, base_pipe)
    assert _same_models(empty, base_pipe)
