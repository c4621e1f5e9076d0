"""Concept tokens with k vectors (issue 33, design d): `<name>` is the k tokens `<name>`, `<name>_1`, …, as in
diffusers' textual inversion, and cns's own text encoding reads a prompt exactly as the pipelines' encode_prompt
does (which expands `<name>` itself), so a prompt is expanded once, wherever it is encoded."""

from __future__ import annotations

import pytest
import torch

from cns_cli.bank.names import vector_tokens
from cns_cli.errors import BankFormatError, ModelError
from cns_cli.model.loading import load_pipeline, resolve_base
from cns_cli.model.text import TextConditioner, text_pairs
from cns_cli.model.tiny import tiny_tokenizer
from cns_cli.model.tokens import TrainableToken, add_tokens_everywhere, expand_vectors

PROMPTS = ["a photo of <dog> dog", "<dog> dog wearing a <hat> hat", "<dog> and <dog> on the beach", "<cap> <dog>",
           "a red ball", "<dog>_1 alone", "<dog>dog"]


def test_vector_tokens_follow_the_diffusers_convention():
    assert vector_tokens("<dog>", 1) == ["<dog>"]
    assert vector_tokens("<dog>", 3) == ["<dog>", "<dog>_1", "<dog>_2"]


@pytest.fixture
def tokenizer():
    """The tiny CLIP tokenizer with a 3-vector <dog>, a 1-vector <hat> and a 2-vector <cap>."""
    tok = tiny_tokenizer()
    tok.add_tokens([*vector_tokens("<dog>", 3), "<hat>", *vector_tokens("<cap>", 2)])
    return tok


def test_expand_vectors_is_what_diffusers_pipelines_do(tokenizer):
    from diffusers.loaders import TextualInversionLoaderMixin

    diffusers = TextualInversionLoaderMixin()  # the mixin's maybe_convert_prompt uses nothing of the pipeline
    for prompt in PROMPTS:
        assert expand_vectors(prompt, tokenizer) == diffusers.maybe_convert_prompt(prompt, tokenizer), prompt
    assert expand_vectors(PROMPTS[1], tokenizer) == "<dog> <dog>_1 <dog>_2 dog wearing a <hat> hat"
    assert expand_vectors("<cap> <dog>", tokenizer) == "<cap> <cap>_1 <dog> <dog>_1 <dog>_2"


def test_expand_vectors_leaves_one_vector_tokens_and_plain_prompts_alone():
    tok = tiny_tokenizer()
    assert expand_vectors("a <dog> dog", tok) == "a <dog> dog"  # no added token at all
    tok.add_tokens(["<dog>", "<hat>"])
    for prompt in PROMPTS:
        assert expand_vectors(prompt, tok) == prompt


def test_every_vector_is_one_token_of_the_expanded_prompt(tokenizer):
    ids = tokenizer(expand_vectors("a photo of <dog> dog", tokenizer)).input_ids
    dog = tokenizer.convert_tokens_to_ids(vector_tokens("<dog>", 3))
    assert [i for i in ids if i in dog] == dog  # each of the 3 once, in row order


@pytest.fixture(scope="module", params=["tiny_base", "tiny_sdxl"])
def multi_pipe(request):
    """The family's tiny pipeline with a 3-vector <dog> and a 1-vector <hat> added through cns (random vectors)."""
    pipe = load_pipeline(resolve_base(request.getfixturevalue(request.param)))
    g = torch.Generator().manual_seed(0)
    widths = [enc.get_input_embeddings().weight.shape[1] for _, enc in text_pairs(pipe)]
    add_tokens_everywhere(text_pairs(pipe), [("<dog>", [torch.randn(3, w, generator=g) for w in widths]),
                                             ("<hat>", [torch.randn(1, w, generator=g) for w in widths])])
    return pipe


def test_cns_text_states_are_the_pipelines_for_a_multi_vector_token(multi_pipe):
    """What cns trains and scores with (TextConditioner) is what the diffusers pipeline conditions on when it is
    handed the same text: expanded once, by each of them, in every text encoder (SDXL: two, and the pooled text)."""
    texts = ["a photo of <dog> dog", "<dog> dog wearing a <hat> hat"]
    with torch.no_grad():
        got = TextConditioner(multi_pipe, 32)(texts)
        ref = multi_pipe.encode_prompt(prompt=texts, device="cpu", num_images_per_prompt=1,
                                       do_classifier_free_guidance=False)
        once = TextConditioner(multi_pipe, 32)([expand_vectors(t, multi_pipe.tokenizer) for t in texts])
    assert torch.equal(got.states, ref[0])
    if got.added is not None:
        assert torch.equal(got.added["text_embeds"], ref[2])
    assert not torch.equal(once.states, got.states)  # expanding twice would read other text: the test can fail


def test_trainable_token_trains_its_k_rows_and_nothing_else():
    base = torch.nn.Embedding(10, 4)
    base.weight.requires_grad_(False)
    init = torch.arange(12, dtype=torch.float32).view(3, 4)
    token = TrainableToken(base, [7, 8, 9], init)
    ids = torch.tensor([[1, 7, 8, 9, 2, 7]])
    out = token(ids)
    assert torch.equal(out[0, [1, 2, 3, 5]], init[[0, 1, 2, 0]]) and torch.equal(out[0, [0, 4]], base.weight[[1, 2]])
    (out * torch.arange(24, dtype=torch.float32).view(1, 6, 4)).sum().backward()
    assert [n for n, p in token.named_parameters() if p.requires_grad] == ["vectors"]
    assert token.vectors.grad.shape == (3, 4) and (token.vectors.grad != 0).all(dim=1).all()
    with pytest.raises(ValueError, match=r"3 token ids need a \(3, e\) init"):
        TrainableToken(base, [7, 8, 9], init[:2])


def test_adding_tokens_refuses_before_changing_anything():
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_tokenizer()
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                       num_attention_heads=2))
    size = len(tok)
    with pytest.raises(BankFormatError, match="same k"):
        add_tokens_everywhere([(tok, enc)], [("<dog>", [torch.zeros(3)])])
    tok.add_tokens(["<dog>_3"])
    with pytest.raises(ModelError, match="already has the token <dog>_3, which would be read as part of <dog>"):
        add_tokens_everywhere([(tok, enc)], [("<dog>", [torch.zeros(3, 8)])])
    tok.add_tokens(["<cat>_1"])
    with pytest.raises(ModelError, match="already has the token <cat>_1; rename"):
        add_tokens_everywhere([(tok, enc)], [("<cat>", [torch.zeros(2, 8)])])
    assert len(tok) == size + 2
    ids = add_tokens_everywhere([(tok, enc)], [("<hat>", [torch.ones(2, 8)])])
    assert ids == [tok.convert_tokens_to_ids(["<hat>", "<hat>_1"])] == [[size + 2, size + 3]]
