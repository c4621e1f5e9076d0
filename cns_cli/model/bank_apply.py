"""Putting a bank revision into a loaded pipeline: W = W0 + Σ_t ΔW_t and every concept token. Fusion-free:
the deltas are simply added; nothing is optimised or merged at load time. A token goes into every text encoder
of the pipeline with that encoder's stored vectors (SDXL: text_encoder and text_encoder_2, each through its own
tokenizer); a k-vector token as its k tokens `<name>`, `<name>_1`, …, which the pipeline's encode_prompt reads
`<name>` as (tokens.py).

`apply_bank` applies for good (what `cns generate` does); `apply_concepts` returns a handle whose `remove()`
takes the concepts out again exactly, like an adapter. model/personalised.py loads a base and applies in one
call."""

from __future__ import annotations

import contextlib

import copy

import torch

from ..bank import Bank, Revision
from ..bank.delta import basis_of, decode_delta
from ..bank.integrity import require_intact
from ..errors import BankFormatError, ModelError
from ..bank.layout import embedding_names
from .kv import ConceptTensors, SavedRows, apply_deltas, restore_rows
from .text import text_pairs
from .tokens import add_tokens_everywhere, token_embedding


def ordered(rev: Revision, names: list[str] | None = None) -> list[str]:
    """Concepts in the order their tokens are added: by the revision that learned them, then by name."""
    names = list(rev.concepts) if names is None else names
    return sorted(names, key=lambda n: (rev.concepts[n].learned_in, n))


def basis_matrix(bank: Bank, rev: Revision) -> torch.Tensor:
    return torch.from_numpy(bank.read_object(rev.basis.object)["Q"])


def concept_tensors(bank: Bank, rev: Revision, name: str, q: torch.Tensor) -> ConceptTensors:
    c = rev.concepts[name]
    tensors = bank.read_object(c.delta)
    layers = decode_delta(tensors, c.neurons.per_layer)
    return ConceptTensors(
        rows={layer: torch.from_numpy(d.rows).long() for layer, d in layers.items()},
        coef={layer: torch.from_numpy(d.coef) for layer, d in layers.items()},
        basis_slice=torch.as_tensor(basis_of(tensors, c, q.numpy())),
    )


def concept_embeddings(bank: Bank, rev: Revision, name: str) -> list[torch.Tensor]:
    """The concept's token vectors in each text encoder of the base, in pipeline order: [(k, e_1)] or, SDXL, two
    (k ≥ 1: a k-vector token is added as k tokens, tokens.add_tokens_everywhere)."""
    tensors = bank.read_object(rev.concepts[name].embedding)
    out = []
    for key in embedding_names(len(rev.base.embedding_widths)):
        if key not in tensors:
            raise BankFormatError(f"concept {name!r} has no {key!r} tensor in its embedding object; run `cns verify`")
        emb = torch.from_numpy(tensors[key])
        if emb.ndim != 2 or emb.shape[0] < 1:
            raise BankFormatError(f"concept {name!r} has an embedding of shape {list(emb.shape)}, not [k, width]; "
                                  "run `cns verify`")
        out.append(emb)
    return out


def _check_expands(pipe, tokens: list[tuple[str, list[torch.Tensor]]]) -> None:
    """A k-vector token (k > 1) works only in a pipeline that reads `<name>` as its k tokens: diffusers'
    TextualInversionLoaderMixin pipelines (every SD 1.x / 2.x / XL text-to-image one) do, in encode_prompt."""
    multi = [t for t, vecs in tokens if vecs[0].shape[0] > 1]
    if multi:
        from diffusers.loaders import TextualInversionLoaderMixin

        if not isinstance(pipe, TextualInversionLoaderMixin):
            raise ModelError(f"{multi[0]} is a multi-vector token, and a {type(pipe).__name__} does not expand those "
                             "in prompts; use a diffusers Stable Diffusion pipeline")


def apply_bank(pipe, bank: Bank, rev: Revision, names: list[str] | None = None, *, check: bool = True) -> list[str]:
    """Apply the given concepts of `rev` (default: all) to `pipe` in place, for good; returns them in token
    order. Every object needed is checked first (unless `check` is False: the caller just did): a damaged one
    fails here, naming its concept and the fix, with `pipe` untouched. To take concepts out again, use
    `apply_concepts`."""
    names = ordered(rev, names)
    if not names:
        return []
    if check:
        require_intact(bank, rev, names)
    q = basis_matrix(bank, rev)
    tokens = [(rev.concepts[n].token, concept_embeddings(bank, rev, n)) for n in names]
    _check_expands(pipe, tokens)
    apply_deltas(pipe.unet, [concept_tensors(bank, rev, n, q) for n in names])
    add_tokens_everywhere(text_pairs(pipe), tokens)
    return names


class _TextStates:
    """_TextState of every (tokenizer, text encoder) of a pipeline."""

    def __init__(self, pipe):
        self.states = [(tok, enc, _TextState(tok, enc)) for tok, enc in text_pairs(pipe)]

    def note_added(self) -> None:
        """Remember the tokens just added (every tokenizer's tokens past its saved length), to check on removal."""
        for tok, _, state in self.states:
            state.added = tok.convert_ids_to_tokens(list(range(state.length, len(tok))))

    def check(self) -> None:
        """Refuse (ModelError) unless each tokenizer still ends with exactly the tokens added, so that restoring
        it takes out those and nothing else."""
        for tok, _, state in self.states:
            now = tok.convert_ids_to_tokens(list(range(state.length, len(tok))))
            if now[: len(state.added)] != state.added:
                raise ModelError(f"the tokenizer no longer holds the bank's tokens {' '.join(state.added[:3])} where "
                                 "apply_bank put them (they were unloaded or replaced since); the concepts cannot be "
                                 "taken out exactly: load the base again")
            later = now[len(state.added) :]
            if later:
                raise ModelError(f"the tokenizer got tokens after the bank's ({' '.join(later[:3])}, e.g. from "
                                 f"load_textual_inversion); unload them first (pipe.unload_textual_inversion("
                                 f"{later[:3]!r})), then remove the bank")

    def restore(self) -> None:
        for tok, enc, state in self.states:
            state.restore(tok, enc)


class _TextState:
    """What adding tokens changes in the tokenizer and text encoder, saved so that it can be put back exactly."""

    def __init__(self, tokenizer, text_encoder):
        self.length = len(tokenizer)
        self.tokenizer = copy.deepcopy(tokenizer.__dict__)  # add_tokens changes only the tokenizer's own state
        weight = token_embedding(text_encoder).weight
        self.rows = weight.shape[0]
        self.tail = weight[self.length :].detach().clone()  # rows a new token id could reuse (none for SD)
        self.vocab_size = text_encoder.config.vocab_size
        self.added: list[str] = []  # the tokens added after this state was saved (_TextStates.note_added)

    @torch.no_grad()
    def restore(self, tokenizer, text_encoder) -> None:
        tokenizer.__dict__.clear()
        tokenizer.__dict__.update(self.tokenizer)
        if len(tokenizer) != self.length:
            raise ModelError(f"the tokenizer has {len(tokenizer)} tokens after removing the concepts, not its {self.length}")
        if token_embedding(text_encoder).weight.shape[0] != self.rows:
            text_encoder.resize_token_embeddings(self.rows)  # keeps rows [0, rows) as they are: an exact copy
        weight = token_embedding(text_encoder).weight
        weight[self.length :] = self.tail.to(weight.device, weight.dtype)
        text_encoder.config.vocab_size = self.vocab_size


class AppliedConcepts:
    """Concepts that `apply_concepts` put into a pipeline; `remove()` takes them out exactly: every K/V row they
    touched gets back the weights it had (saved before the change, so bit-identical, not W + ΔW - ΔW), their
    tokens leave the tokenizer and the text encoder's embedding table shrinks back to its size before. A row
    changed since (a LoRA fused meanwhile) gets W - ΔW instead, which keeps that change, as PEFT's unmerge does
    (kv.restore_rows); an unfused LoRA's wrapped layers are seen through (loading.kv_layers).

    Applications nest like a stack: remove the latest first (a later one may have changed the same rows).
    Also a context manager: `with apply_concepts(pipe, bank, rev, ["dog"]): ...` removes them on exit.
    Exactness holds while the pipeline stays on the device and dtype it had when they were applied.
    `token_ids` are the ids in the (first) tokenizer, each concept's k in row order (one per concept when every
    token has one vector); `token_ids_per_encoder` those in each tokenizer (SDXL: two)."""

    def __init__(self, pipe, names: list[str], token_ids: list[list[int]], saved: SavedRows, text: _TextStates):
        self.pipe, self.names = pipe, names
        self.token_ids_per_encoder = token_ids
        self.token_ids = token_ids[0] if token_ids else []
        self._saved, self._text = saved, text
        self.active = True

    def remove(self) -> None:
        """Restore the pipeline to what it was before these concepts were applied. A second call does nothing."""
        if not self.active:
            return
        stack = _stack(self.pipe)
        if not stack or stack[-1] is not self:
            raise RuntimeError("concepts applied later to this pipeline are still in it; remove those first")
        self._text.check()  # every refusal before anything changes (restore_rows checks its layers first too)
        restore_rows(self.pipe.unet, self._saved)
        self._text.restore()
        stack.pop()
        self.active = False
        self._saved, self._text = {}, None

    def __enter__(self) -> AppliedConcepts:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"AppliedConcepts({self.names}, {'active' if self.active else 'removed'})"


def _stack(pipe) -> list[AppliedConcepts]:
    return vars(pipe).setdefault("_cns_applied", [])


def applied_to(pipe) -> list[AppliedConcepts]:
    """The concepts applied to `pipe` with `apply_concepts` and not yet removed, oldest first (the live stack)."""
    return _stack(pipe)


def apply_concepts(pipe, bank: Bank, rev: Revision, names: list[str] | None = None, *,
                   check: bool = True, scales: dict[str, float] | None = None) -> AppliedConcepts:
    """Like `apply_bank` (the same weights, the same token ids, bit for bit), but returns a handle whose
    `remove()` restores the pipeline exactly, so a bench, demo or in-process forget need not reload the
    base. If anything fails half-way, what was already changed is put back before the error propagates.
    `scales` (name -> s) adds s·ΔW for those concepts instead of ΔW (their tokens are added unscaled, as a
    LoRA weight in A1111 scales the LoRA and not an embedding); a concept without a scale gets exactly ΔW."""
    names = ordered(rev, names)
    if check and names:
        require_intact(bank, rev, names)
    stack = _stack(pipe)
    saved: SavedRows = {}
    text = _TextStates(pipe)
    if names:
        q = basis_matrix(bank, rev)
        tensors = [_scaled(concept_tensors(bank, rev, n, q), (scales or {}).get(n, 1.0)) for n in names]
        tokens = [(rev.concepts[n].token, concept_embeddings(bank, rev, n)) for n in names]
        _check_expands(pipe, tokens)
        try:
            apply_deltas(pipe.unet, tensors, saved)
            token_ids = add_tokens_everywhere(text_pairs(pipe), tokens)
            text.note_added()
        except BaseException:
            restore_rows(pipe.unet, saved)
            text.restore()
            raise
    else:
        token_ids = []
    applied = AppliedConcepts(pipe, names, token_ids, saved, text)
    stack.append(applied)
    return applied


def _scaled(t: ConceptTensors, scale: float) -> ConceptTensors:
    """s·ΔW = Sᵀ (s·A) Bᵀ: the coefficients scaled (in float32); scale 1 leaves the tensors as they are."""
    if scale == 1.0:
        return t
    return ConceptTensors(rows=t.rows, coef={k: v * scale for k, v in t.coef.items()}, basis_slice=t.basis_slice)


@contextlib.contextmanager
def at_strengths(pipe, bank: Bank, rev: Revision, strengths: dict[str, float]):
    """Inside the block, concept n of `rev` (already applied to `pipe` at strength 1) acts at strength
    strengths[n]: (s - 1)·ΔW_n is added on top, within float rounding of W0 + s·ΔW_n; on exit every touched row
    gets back its exact weights (saved, not subtracted)."""
    q = basis_matrix(bank, rev)
    tensors = [_scaled(concept_tensors(bank, rev, n, q), s - 1.0) for n, s in strengths.items() if s != 1.0]
    saved: SavedRows = {}
    try:
        apply_deltas(pipe.unet, tensors, saved)
        yield
    finally:
        restore_rows(pipe.unet, saved)
