"""`cns learn` data-parallel (learning/parallel.py, model/share.py) without a launcher: the arithmetic that makes N
ranks learn what one process learns with their global batch. The real launcher runs are in
tests/test_distributed_learn.py (slow)."""

from __future__ import annotations


import pytest
import torch

from cns_cli.model.share import BatchShare
from tests.clitools import GROUP_STARTED, cns, fresh_python, one_line_error


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_the_ranks_shares_cover_every_batch_once_and_weigh_it_whole(size):
    for n in range(size, 3 * size + 2):
        parts = [BatchShare(r, size).rows(n) for r in range(size)]
        covered = [i for p in parts for i in range(n)[p]]
        assert covered == list(range(n))  # contiguous, in rank order, each row once
        assert all(p.stop > p.start for p in parts)  # n >= size: no rank idles
        assert sum(BatchShare(r, size).weight(n) for r in range(size)) == pytest.approx(1.0, abs=1e-12)
    assert [r for r in range(4) if BatchShare(r, 4).leads()] == [0]  # the penalty term is added once


@pytest.fixture(scope="module")
def unet_batch(tiny_base):
    from cns_cli.model.loading import kv_layers, load_pipeline, resolve_base

    pipe = load_pipeline(resolve_base(tiny_base))
    torch.manual_seed(0)
    c = pipe.unet.config
    latents = torch.randn(3, c.in_channels, c.sample_size, c.sample_size)
    states = torch.randn(3, 77, c.cross_attention_dim)
    weights = [layer.weight for layer in kv_layers(pipe.unet).values()]
    return pipe, latents, states, weights


def _loss_and_grads(pipe, latents, states, weights, rows=None, weight=1.0):
    from cns_cli.model.train import diffusion_loss

    gen = torch.Generator().manual_seed(7)  # every rank draws from the same seed
    for w in weights:
        w.requires_grad_(True)
    try:
        part = states if rows is None else states[rows]
        loss = diffusion_loss(pipe.unet, pipe.scheduler, latents, part, gen, None, rows) * weight
        return loss.detach(), torch.autograd.grad(loss, weights), gen.initial_seed(), torch.rand(1, generator=gen)
    finally:
        for w in weights:
            w.requires_grad_(False)


def test_the_ranks_weighted_losses_and_gradients_add_up_to_the_global_batchs(unet_batch):
    """3 images on 2 ranks (2 + 1): each rank draws the whole batch's timesteps and noise, takes its rows, weighs its
    mean loss by its share; the sums are the one-process loss and gradient, and the generators stay in step."""
    pipe, latents, states, weights = unet_batch
    full, full_grads, _, after = _loss_and_grads(pipe, latents, states, weights)
    parts = [_loss_and_grads(pipe, latents, states, weights, s.rows(3), s.weight(3))
             for s in (BatchShare(0, 2), BatchShare(1, 2))]
    assert [s.rows(3) for s in (BatchShare(0, 2), BatchShare(1, 2))] == [slice(0, 2), slice(2, 3)]
    assert float(parts[0][0] + parts[1][0]) == pytest.approx(float(full), rel=1e-6)
    for k, g in enumerate(full_grads):
        assert torch.allclose(parts[0][1][k] + parts[1][1][k], g, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(p[3], after) for p in parts)  # the same draws as one process: the next batch agrees
    assert not torch.allclose(parts[0][1][0], full_grads[0])  # a rank alone does not have the whole gradient


def test_the_general_scan_split_over_ranks_counts_every_prompt_once(unet_batch, monkeypatch):
    """Each rank scores its slice of the calibration prompts; the summed hit counts give the one-process masks."""
    from cns_cli.method.select import general_from_hits
    from cns_cli.model.text import general_neuron_masks

    pipe = unet_batch[0]
    torch.manual_seed(1)
    states = torch.randn(5, 77, pipe.unet.config.cross_attention_dim)
    one = general_neuron_masks(pipe.unet, states, 0.1, 0.5)
    sent = []
    monkeypatch.setattr(BatchShare, "sum_", lambda self, ts, like: sent.append([t.clone() for t in ts]) or ts)
    for r in (0, 1):
        general_neuron_masks(pipe.unet, states, 0.1, 0.5, BatchShare(r, 2))
    names = list(one)
    summed = {n: sent[0][i] + sent[1][i] for i, n in enumerate(names)}
    assert [float(sent[r][0].sum()) / float(sent[0][0].sum() + sent[1][0].sum()) for r in (0, 1)] == [3 / 5, 2 / 5]
    assert all(torch.equal(general_from_hits(summed, 5, 0.5)[n], one[n]) for n in names)
    assert any(one[n].any() for n in names)


def test_a_global_batch_smaller_than_the_ranks_is_refused(monkeypatch):
    from cns_cli.errors import UsageError
    from cns_cli.learn import _check_batch_for_ranks

    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(UsageError, match=r"--batch-size 2 is smaller than the 4 processes.*--batch-size 4 or more"):
        _check_batch_for_ranks(2)
    _check_batch_for_ranks(4)
    monkeypatch.delenv("WORLD_SIZE")
    _check_batch_for_ranks(1)


@pytest.mark.parametrize("value", ["0", "-3", "inf", "nan"])
def test_dist_timeout_must_be_a_positive_number_of_seconds(tmp_path, value):
    r = cns("--bank", tmp_path / "b.cnsbank", "learn", "dog", tmp_path, "--dist-timeout", value)
    assert "--dist-timeout must be a positive number of seconds" in one_line_error(r)
    assert not (tmp_path / "b.cnsbank").exists()


def test_a_one_process_learn_joins_no_process_group_and_passes_no_share(tiny_base, dog_photos, tmp_path):
    """One process learns exactly as before: no process group, no PartialState, no BatchShare in the session."""
    code = ("import json\n"
            "from cns_cli.learn import LearnConfig, learn\n"
            "from cns_cli.learning import plan\n"
            "seen = []\n"
            "real = plan.open_session\n"
            "def spy(*a):\n"
            "    s = real(*a)\n"
            "    seen.append(s.share)\n"
            "    return s\n"
            "plan.open_session = spy\n"
            f"out = learn({str(tmp_path / 'b.cnsbank')!r}, 'dog', {str(dog_photos)!r}, class_word='dog', "
            f"base={tiny_base!r}, config=LearnConfig(steps=2, score_steps=1))\n"
            + GROUP_STARTED + "print(json.dumps([out.revision, seen, *started]))")
    assert fresh_python(code) == [1, [None], False, False]
