"""What each benchmark method changes in the model: the point of the comparison is which weights move."""

from __future__ import annotations

import pytest
import torch

from cns_cli.bench.methods import Budget, make_method
from cns_cli.bench.trainer import ConceptData
from cns_cli.demo.individuals import render_photos
from cns_cli.model.loading import kv_layers, load_pipeline, resolve_base

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def concept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-photos") / "rex"
    render_photos("rex", folder, n=3, seed=0, captions=True)
    return ConceptData("rex", "dog", folder)


def _changed(tiny_base, unet) -> set[str]:
    base = load_pipeline(resolve_base(tiny_base)).unet.state_dict()
    now = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k}
    assert set(now) == set(base)
    return {k for k, v in now.items() if not torch.equal(v, base[k])}


def _budget(tiny_base) -> Budget:
    return Budget(base=tiny_base, steps=3, seed=0, text_dim=32, device="cpu")


def test_textual_inversion_leaves_the_unet_alone_and_adds_one_vector(tiny_base, concept):
    m = make_method("ti", _budget(tiny_base), None)
    rec = m.learn(concept)
    assert _changed(tiny_base, m.pipeline().unet) == set()
    assert rec["params_trained"] == rec["weights_changed"] == 32 and rec["bytes_total"] == 4 * 32
    assert "<rex>" in m.pipeline().tokenizer.get_vocab()


def test_kv_finetune_moves_every_cross_attention_kv_weight_and_nothing_else(tiny_base, concept):
    m = make_method("kv-finetune", _budget(tiny_base), None)
    rec = m.learn(concept)
    kv = {f"{name}.weight" for name in kv_layers(m.pipeline().unet)}
    assert _changed(tiny_base, m.pipeline().unet) == kv
    n = sum(layer.weight.numel() for layer in kv_layers(m.pipeline().unet).values())
    assert rec["params_trained"] == n + 32 and rec["bytes_total"] == 4 * (n + 32)


def test_lora_merge_sums_per_concept_adapters_into_the_attention_weights(tiny_base, concept, tmp_path):
    m = make_method("lora-merge", _budget(tiny_base), None)
    m.learn(concept)
    changed = _changed(tiny_base, m.pipeline().unet)
    assert changed and all(k.endswith((".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight")) for k in changed)
    assert not any("lora" in k for k in m.pipeline().unet.state_dict())  # merged: a plain UNet, no adapter
    # the second concept is trained on the base again, and its delta is added on top of the first one's
    first = {k: v.clone() for k, v in m.pipeline().unet.state_dict().items()}
    other = tmp_path / "fedora"
    render_photos("fedora", other, n=3, seed=0, captions=True)
    rec = m.learn(ConceptData("fedora", "hat", other))
    assert rec["bytes_total"] == 4 * (2 * m.adapter_values + 2 * 32)
    assert not torch.equal(first[next(iter(sorted(changed)))], m.pipeline().unet.state_dict()[next(iter(sorted(changed)))])


def test_lora_seq_keeps_one_adapter_and_never_touches_the_base_weights(tiny_base, concept, tmp_path):
    m = make_method("lora-seq", _budget(tiny_base), None)
    m.learn(concept)
    unet = m.pipeline().unet
    assert _changed(tiny_base, unet) == set()
    lora = {k: v.clone() for k, v in unet.state_dict().items() if "lora_" in k}
    assert lora
    other = tmp_path / "fedora"
    render_photos("fedora", other, n=3, seed=0, captions=True)
    rec = m.learn(ConceptData("fedora", "hat", other))
    now = {k: v for k, v in unet.state_dict().items() if "lora_" in k}
    assert now.keys() == lora.keys() and any(not torch.equal(now[k], lora[k]) for k in now)  # the same adapter, trained on
    assert rec["bytes_total"] == 4 * (sum(v.numel() for v in now.values()) + 2 * 32)


@pytest.mark.parametrize("key", ["lora-seq", "lora-merge"])
def test_a_lora_baseline_starts_from_the_same_adapter_in_every_run(tiny_base, key):
    """peft draws the adapter's initial A from torch's global RNG: the bench seeds it, whatever ran before."""
    def initial_adapter():
        torch.rand(7)  # whatever used the global RNG before must not matter
        _, params = make_method(key, _budget(tiny_base), None).trainable_unet()
        return [p.detach().clone() for p in params]

    first, second = initial_adapter(), initial_adapter()
    assert first and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert any(p.abs().sum() > 0 for p in first)  # A is random (B starts at zero)


@pytest.mark.parametrize("key", ["ti", "kv-finetune", "lora-seq", "lora-merge"])
def test_every_baseline_learns_a_k_vector_token_with_bench_vectors(tiny_base, concept, key):
    """`cns bench --vectors 2`: the in-memory baselines add <rex> and <rex>_1, train both rows from the class word,
    and count them; every other row of the embedding table stays the base's."""
    from dataclasses import replace

    from cns_cli.model.tokens import class_word_vector

    base = load_pipeline(resolve_base(tiny_base))
    m = make_method(key, replace(_budget(tiny_base), vectors=2), None)
    rec = m.learn(concept)
    pipe = m.pipeline()
    ids = pipe.tokenizer.convert_tokens_to_ids(["<rex>", "<rex>_1"])
    n = len(base.tokenizer)
    assert ids == [n, n + 1] and len(pipe.tokenizer) == n + 2
    w, w0 = pipe.text_encoder.get_input_embeddings().weight, base.text_encoder.get_input_embeddings().weight
    assert torch.equal(w[:n], w0)
    start = class_word_vector(base.tokenizer, base.text_encoder, "dog")
    assert not torch.equal(w[n], start) and not torch.equal(w[n + 1], start) and not torch.equal(w[n], w[n + 1])
    assert rec["weights_changed"] == m.weights_changed() + 2 * 32 and rec["bytes_total"] == 4 * (m.stored_values() + 2 * 32)
    if key == "ti":
        assert rec["params_trained"] == 2 * 32


def test_cns_methods_pass_bench_vectors_to_cns_learn(tiny_base, concept, tmp_path):
    from dataclasses import replace

    from cns_cli.bank import Bank

    m = make_method("cns", replace(_budget(tiny_base), vectors=2), tmp_path)
    rec = m.learn(concept)
    bank = Bank.open(tmp_path / "cns.cnsbank")
    c = bank.head().concepts["rex"]
    assert c.training["vectors"] == 2 and bank.read_object(c.embedding)["embedding"].shape == (2, 32)
    assert "<rex>_1" in m.pipeline().tokenizer.get_vocab()
    assert rec["weights_changed"] == c.neurons.total * 32 + 2 * 32
