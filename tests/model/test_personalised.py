"""One way to build a personalised pipeline (load_personalised), and concepts that come out again exactly
(apply_concepts(...).remove()): the base's weights, embedding table and tokenizer are bit-identical after a
remove, and applying after a remove gives the images of a freshly built pipeline, bit for bit on the CPU.

The bank holds made-up concepts (random rows and coefficients, large enough to change the images) on the tiny
random base, written with the delta codec; a and b share rows in every layer they both touch."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from cns_cli.bank import Bank, Basis, Concept, Operation
from cns_cli.bank.delta import encode_delta, read_delta
from cns_cli.bank.models import Neurons, Slice
from cns_cli.errors import IntegrityError, ModelError, ModelMismatchError
from cns_cli.generate import build_pipeline
from cns_cli.method.basis import orthogonal_basis
from cns_cli.model import loading
from cns_cli.model.bank_apply import apply_bank, apply_concepts
from cns_cli.model.loading import describe_base, kv_layers, load_pipeline, resolve_base
from cns_cli.model.personalised import load_personalised

RANK = 2
PROMPT = "a photo of <a> and <b>"


def add_concept(bank: Bank, name: str, seed: int, start: int) -> None:
    """Commit one `learn` of a made-up concept: 6 rows of every K/V layer (rows 0-2 in all of them, so two
    concepts always overlap), coefficients ~ N(0, 0.5²), a random token vector."""
    rng = np.random.default_rng(seed)
    with bank.transaction() as tx:
        parent = tx.parent
        basis = parent.basis or Basis(object=tx.put({"Q": orthogonal_basis(parent.base.text_dim)}, "basis"),
                                      dim=parent.base.text_dim, seed=0)
        parts = {}
        for layer, size in parent.base.kv_layers.items():
            rows = np.union1d([0, 1, 2], rng.choice(np.arange(3, size), size=3, replace=False))
            parts[layer] = (rows, 0.5 * rng.standard_normal((rows.size, RANK)))
        delta = tx.put(encode_delta(parts), "delta", {"concept": name})
        emb = tx.put({"embedding": rng.standard_normal((1, parent.base.text_dim)).astype(np.float32)}, "embedding")
        per_layer = {layer: len(rows) for layer, (rows, _) in parts.items()}
        concept = Concept(token=f"<{name}>", class_word="thing", learned_in=tx.number, slice=Slice(start=start, rank=RANK),
                          neurons=Neurons(total=sum(per_layer.values()), per_layer=per_layer), delta=delta,
                          embedding=emb, training={"fake": True}, stats={})
        tx.commit(Operation(kind="learn", concept=name, argv=["test"]), concepts=dict(parent.concepts) | {name: concept},
                  basis=basis)


@pytest.fixture(scope="module")
def base_pipe(tiny_base):
    return load_pipeline(resolve_base(tiny_base))


@pytest.fixture(scope="module")
def bank_a(tiny_base, base_pipe, tmp_path_factory) -> Bank:
    """A bank holding concept a only."""
    bank = Bank.create(tmp_path_factory.mktemp("pers") / "a.cnsbank", describe_base(resolve_base(tiny_base), base_pipe))
    add_concept(bank, "a", seed=1, start=0)
    return bank


@pytest.fixture(scope="module")
def bank(bank_a, tmp_path_factory) -> Bank:
    """a and b."""
    path = tmp_path_factory.mktemp("pers") / "ab.cnsbank"
    shutil.copytree(bank_a.root, path)
    bank = Bank.open(path)
    add_concept(bank, "b", seed=2, start=RANK)
    return bank


def assert_is_base(pipe, base) -> None:
    for module in ("unet", "text_encoder"):
        now, ref = getattr(pipe, module).state_dict(), getattr(base, module).state_dict()
        assert now.keys() == ref.keys()
        different = [k for k in ref if not torch.equal(now[k], ref[k])]
        assert not different, f"{module}: {different[:3]}"
    assert len(pipe.tokenizer) == len(base.tokenizer)
    assert pipe.tokenizer(PROMPT).input_ids == base.tokenizer(PROMPT).input_ids
    assert pipe.text_encoder.config.vocab_size == base.text_encoder.config.vocab_size


def assert_same_weights(pipe, other) -> None:
    for module in ("unet", "text_encoder"):
        now, ref = getattr(pipe, module).state_dict(), getattr(other, module).state_dict()
        assert now.keys() == ref.keys() and all(torch.equal(now[k], ref[k]) for k in ref), module
    assert len(pipe.tokenizer) == len(other.tokenizer)
    assert pipe.tokenizer(PROMPT).input_ids == other.tokenizer(PROMPT).input_ids


def images(pipe, prompt: str = PROMPT) -> np.ndarray:
    return pipe(prompt, num_inference_steps=3, guidance_scale=5.0, generator=torch.Generator().manual_seed(3),
                output_type="np").images


def test_the_concepts_overlap_and_change_the_weights(bank, base_pipe):
    rev = bank.head()
    a, b = (read_delta(bank, rev.concepts[n]) for n in ("a", "b"))
    assert all(np.intersect1d(a[layer].rows, b[layer].rows).size for layer in a)
    pipe = load_personalised(bank, rev)
    changed = [n for n, layer in kv_layers(pipe.unet).items()
               if not torch.equal(layer.weight, kv_layers(base_pipe.unet)[n].weight)]
    assert changed == list(kv_layers(pipe.unet))
    assert len(pipe.tokenizer) == len(base_pipe.tokenizer) + 2


def test_remove_restores_the_base_bit_for_bit(bank, base_pipe, tiny_base):
    pipe = load_personalised(bank, bank.head(), [])  # the bare, fingerprint-checked base
    assert_is_base(pipe, base_pipe)
    applied = apply_concepts(pipe, bank, bank.head(), ["b", "a"])
    assert applied.names == ["a", "b"] and applied.active  # token order: by revision, then name
    assert applied.token_ids == [len(base_pipe.tokenizer), len(base_pipe.tokenizer) + 1]
    assert_same_weights(pipe, load_personalised(bank, bank.head()))  # the same as applying for good
    applied.remove()
    assert not applied.active
    assert_is_base(pipe, base_pipe)
    applied.remove()  # a second remove does nothing
    assert_is_base(pipe, base_pipe)


def test_apply_after_remove_gives_a_fresh_pipelines_images(bank, base_pipe):
    rev = bank.head()
    pipe = load_personalised(bank, rev, [])
    with apply_concepts(pipe, bank, rev):
        both = images(pipe)
    only_a = apply_concepts(pipe, bank, rev, ["a"])
    fresh = load_personalised(bank, rev, ["a"])
    assert_same_weights(pipe, fresh)
    got, want = images(pipe), images(fresh)
    assert np.array_equal(got, want)
    assert not np.array_equal(got, both) and not np.array_equal(got, images(base_pipe))  # not vacuous
    only_a.remove()
    assert_is_base(pipe, base_pipe)


def test_applications_nest_and_come_out_latest_first(bank, base_pipe):
    rev = bank.head()
    pipe = load_personalised(bank, rev, [])
    first = apply_concepts(pipe, bank, rev, ["a"])
    second = apply_concepts(pipe, bank, rev, ["b"])
    assert second.token_ids == [len(base_pipe.tokenizer) + 1]
    with pytest.raises(RuntimeError, match="remove those first"):
        first.remove()
    assert first.active
    second.remove()
    assert_same_weights(pipe, load_personalised(bank, rev, ["a"]))
    first.remove()
    assert_is_base(pipe, base_pipe)


def test_a_failed_apply_leaves_the_pipeline_as_it_was(bank, base_pipe):
    rev = bank.head()
    pipe = load_personalised(bank, rev, [])
    outer = apply_concepts(pipe, bank, rev, ["a"])
    with pytest.raises(ModelError, match="already has the token <a>"):  # fails after the UNet rows were added
        apply_concepts(pipe, bank, rev, ["a", "b"])
    assert_same_weights(pipe, load_personalised(bank, rev, ["a"]))
    outer.remove()  # the failed one left nothing on the stack
    assert_is_base(pipe, base_pipe)


def test_applying_no_concepts_is_a_no_op_handle(bank, base_pipe):
    pipe = load_personalised(bank, bank.head(), [])
    with apply_concepts(pipe, bank, bank.head(), []) as applied:
        assert applied.names == [] and applied.token_ids == []
        assert_is_base(pipe, base_pipe)
    assert_is_base(pipe, base_pipe)


def test_generate_and_load_personalised_build_the_same_pipeline(bank):
    rev = bank.head()
    assert_same_weights(build_pipeline(bank, rev), load_personalised(bank, rev))
    manual = load_pipeline(loading.spec_of(rev.base))
    apply_bank(manual, bank, rev)
    assert_same_weights(load_personalised(bank, rev), manual)


def test_load_personalised_names_a_damaged_concept_before_loading(bank, tmp_path, monkeypatch):
    path = tmp_path / "damaged.cnsbank"
    shutil.copytree(bank.root, path)
    damaged = Bank.open(path)
    damaged.object_path(damaged.head().concepts["b"].delta).unlink()
    monkeypatch.setattr(loading, "load_pipeline", lambda spec: pytest.fail("loaded the model before checking"))
    with pytest.raises(IntegrityError, match="concept b are damaged"):
        load_personalised(damaged, damaged.head())
    with pytest.raises(IntegrityError, match="concept b are damaged.*my advice"):
        load_personalised(damaged, damaged.head(), ["b"], fix="my advice")


def test_load_personalised_refuses_another_base(bank, tmp_path):
    from cns_cli.model.tiny import save_tiny_pipeline

    other = save_tiny_pipeline(tmp_path / "other", seed=1)
    rev = bank.head()
    moved = rev.base.model_copy(update={"location": str(other)})
    with pytest.raises(ModelMismatchError, match="not the one this bank was built on"):
        load_personalised(bank, rev.model_copy(update={"base": moved}))


def test_the_bench_reuses_one_base_and_matches_a_fresh_pipeline(bank_a, base_pipe, tmp_path, tiny_base):
    """cns bench's BankMethod.pipeline(): after each learn, the previous concepts come out and HEAD's go in."""
    from cns_cli.bench.methods import METHODS, BankMethod, Budget

    path = tmp_path / "bench.cnsbank"
    shutil.copytree(bank_a.root, path)
    method = BankMethod(METHODS["cns"], Budget(base=tiny_base, steps=1, seed=0, text_dim=32), path)
    first = method.pipeline()
    assert_same_weights(first, build_pipeline(Bank.open(path), Bank.open(path).head()))
    add_concept(Bank.open(path), "b", seed=2, start=RANK)
    second = method.pipeline()
    assert second is first
    assert_same_weights(second, build_pipeline(Bank.open(path), Bank.open(path).head()))
    method._applied.remove()
    assert_is_base(second, base_pipe)


def test_a_multi_vector_concept_needs_a_pipeline_that_expands_it(vectors_bank_readonly, tiny_base):
    """A 3-vector token read as one token would be silently wrong: a pipeline without diffusers' textual-inversion
    prompt conversion is refused, before anything in it changes."""
    from types import SimpleNamespace

    pipe = load_pipeline(resolve_base(tiny_base))
    bare = SimpleNamespace(unet=pipe.unet, tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder)
    bank = Bank.open(vectors_bank_readonly)
    before = {n: m.weight.clone() for n, m in kv_layers(pipe.unet).items()}
    for apply in (apply_bank, apply_concepts):
        with pytest.raises(ModelError, match="<dog> is a multi-vector token, and a SimpleNamespace does not expand"):
            apply(bare, bank, bank.head())
    assert len(pipe.tokenizer) == len(load_pipeline(resolve_base(tiny_base)).tokenizer)
    assert all(torch.equal(before[n], m.weight) for n, m in kv_layers(pipe.unet).items())
    assert apply_bank(bare, bank, bank.head(), ["hat"]) == ["hat"]  # a one-vector concept needs no expansion
