"""tools/train_demo_model.py: the script runs every phase end to end (a few steps) and its output is a diffusers
pipeline that cns can load and personalise, within the size budget for committed weights, for either demo world;
an interrupted run resumed with --resume ends exactly where the uninterrupted run ends; checkpoints hold no
pickle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cns_cli.model.loading import describe_base, load_pipeline, resolve_base

pytestmark = pytest.mark.slow  # runs benchmarks, the demo or a trainer end to end (docs/development.md: the quick subset)

ROOT = Path(__file__).resolve().parents[2]


def test_quick_training_run_gives_a_loadable_pipeline(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "train_demo_model.py"), str(out), "--quick"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)  # from anywhere, as documented
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads((out / "pipeline" / "training.json").read_text())
    assert info["bytes"] <= 25_000_000  # committed as package data: ≤ 25 MB
    assert info["latent_scale"] > 0
    from cns_cli.prompts import calibration_id, calibration_prompts

    own = calibration_prompts(out / "pipeline")  # the model's own calibration set, in its vocabulary
    assert len(own) == 280 and len(set(own)) == 280 and calibration_id(out / "pipeline").startswith("model-v1:")
    assert sum(" and " in p for p in own) > 20  # two-object captions too
    pipe = load_pipeline(resolve_base(str(out / "pipeline")))
    pointer = describe_base(resolve_base(str(out / "pipeline")), pipe)
    assert pointer.text_dim == 128 and len(pointer.kv_layers) == 20
    # every caption word is a single known token sequence, and the tokenizer is the real one (not the 2-token fallback)
    assert len(pipe.tokenizer) > 500
    image = pipe("a red dog on the beach", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3)
    # one checkpoint folder (the last), in safetensors + JSON only
    (ck,) = [p for p in (out / "checkpoints").iterdir() if p.is_dir()]
    assert ck.name == "unet-000002" and json.loads((out / "checkpoints" / "progress.json").read_text())["checkpoint"] == ck.name
    assert sorted(p.name for p in ck.iterdir()) == ["state.json", "state.safetensors", "text_encoder.safetensors",
                                                     "unet.safetensors", "vae.safetensors"]


class Interrupted(Exception):
    pass


def _run(out: Path, *extra: str, stop_after: str | None = None, monkeypatch=None) -> None:
    """One in-process run of the script with --quick settings (2 VAE, 2 UNet and 2 decoder steps, a checkpoint after each),
    stopped like Ctrl-C right after the checkpoint whose log line starts with `stop_after`."""
    import tools.train_demo_model as T

    # the fp16 pipeline copies (OUT/latest, OUT/pipeline) are the other test's; here only the folder is needed
    monkeypatch.setattr(T, "save_pipeline", lambda pipe, path, world=1: path.mkdir(parents=True, exist_ok=True) or 0)
    run_stopping(T.main, [str(out), "--quick", *extra], stop_after, monkeypatch)


def run_stopping(main, argv: list[str], stop_after: str | None, monkeypatch) -> None:
    """`main(argv)` (a tool that logs through `train_demo_model._log`), stopped like Ctrl-C right after the log
    line that starts with `stop_after` (None: run to the end)."""
    import tools.train_demo_model as T

    log = getattr(T._log, "unwrapped", T._log)  # an earlier run's stop must not carry over to this one

    def stopping_log(where, msg):
        log(where, msg)
        if stop_after and msg.startswith(stop_after):
            raise Interrupted(msg)

    stopping_log.unwrapped = log
    monkeypatch.setattr(T, "_log", stopping_log)
    if stop_after:
        with pytest.raises(Interrupted):
            main(argv)
    else:
        main(argv)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {f"{p.stem}/{k}": v for p in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(p)).items()}


@pytest.mark.parametrize("world", [1, 2])
def test_resume_continues_exactly_where_an_interrupted_run_stopped(tmp_path, monkeypatch, world):
    import torch

    w = ("--world", str(world))
    _run(tmp_path / "whole", *w, monkeypatch=monkeypatch)
    # interrupted in the VAE phase, resumed, interrupted in the decoder phase, resumed, interrupted in the UNet
    # phase twice, resumed again
    _run(tmp_path / "parts", *w, stop_after="vae step 1/2", monkeypatch=monkeypatch)
    _run(tmp_path / "parts", *w, "--resume", stop_after="decoder step 1/2", monkeypatch=monkeypatch)
    _run(tmp_path / "parts", *w, "--resume", stop_after="unet step 1/2", monkeypatch=monkeypatch)
    cache = tmp_path / "parts" / "checkpoints" / "latents.safetensors"
    stamp = cache.stat().st_mtime_ns
    _run(tmp_path / "parts", *w, "--resume", stop_after="unet step 2/2", monkeypatch=monkeypatch)
    _run(tmp_path / "parts", *w, "--resume", monkeypatch=monkeypatch)
    assert cache.stat().st_mtime_ns == stamp  # resuming in the UNet phase reuses the encoded latents

    whole, parts = (json.loads((tmp_path / k / "pipeline" / "training.json").read_text()) for k in ("whole", "parts"))
    assert parts["resumed"] and not whole["resumed"] and parts["world"] == whole["world"] == world
    for key in ("final_vae_loss", "final_unet_loss", "final_decoder_loss", "latent_scale"):  # follow every batch
        assert parts[key] == whole[key], key
    a, b = (_weights(tmp_path / k / "checkpoints" / "unet-000002") for k in ("whole", "parts"))
    assert a.keys() == b.keys() and any(k.startswith("state/optimizer.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # weights, Adam moments and step counts, RNG states: bit for bit


def test_a_model_continued_from_an_earlier_one_carries_that_model_s_record(tmp_path, monkeypatch):
    """`--init EARLIER`: the new training.json names EARLIER and holds its whole record (decoder refinements
    included) as it was when its weights were taken, so a model continued across runs says every run that made
    it, even when EARLIER's folder was replaced (by the new model, say) before an interrupted run was resumed."""
    import tools.train_demo_model as T

    w = ("--quick", "--world", "2")
    run_stopping(T.main, [str(tmp_path / "first"), *w], None, monkeypatch)
    earlier = tmp_path / "first" / "pipeline"
    record = {**json.loads((earlier / "training.json").read_text()), "decoder_refinements": [{"steps": 7}]}
    (earlier / "training.json").write_text(json.dumps(record))  # as `refine_decoder.py --apply` leaves it
    second = [str(tmp_path / "second"), *w, "--init", str(earlier)]
    run_stopping(T.main, second, "unet step 1/2", monkeypatch)
    (earlier / "training.json").write_text(json.dumps({"world": 2, "replaced": True}))
    run_stopping(T.main, [*second, "--resume"], None, monkeypatch)
    info = json.loads((tmp_path / "second" / "pipeline" / "training.json").read_text())
    assert info["init"] == str(earlier) and info["init_training"] == record
    assert record["init_training"] is None  # a model trained from scratch has no earlier record


def test_a_unet_phase_on_an_earlier_run_s_vae_is_the_run_that_trained_both(tmp_path, monkeypatch):
    """OUT/vae (fp16, with its record) lets the phases run in different sessions: `--vae` skips the VAE phase and
    the UNet phase then trains exactly as in the run that made the VAE (it trains on the fp16 VAE's latents in
    both). A VAE of another world, of an earlier version of its world's renders, or whose weights are not the recorded ones,
    is refused."""
    import torch

    import tools.train_demo_model as T

    w = ("--world", "2")
    _run(tmp_path / "whole", *w, monkeypatch=monkeypatch)
    vae = tmp_path / "whole" / "vae"
    record = json.loads((vae / "vae.json").read_text())
    assert record["world"] == 2 and record["vae_steps"] == record["decoder_steps"] == 2
    assert record["from"] == "trained by this run" and record["final_decoder_loss"] > 0
    _run(tmp_path / "split", *w, "--vae", str(vae), monkeypatch=monkeypatch)
    assert "VAE from" in (tmp_path / "split" / "training.log").read_text()
    assert not list((tmp_path / "split" / "checkpoints").glob("vae-*"))  # no VAE step was taken
    assert not list((tmp_path / "split" / "checkpoints").glob("decoder-*"))  # nor a decoder step
    whole, split = (json.loads((tmp_path / k / "pipeline" / "training.json").read_text()) for k in ("whole", "split"))
    for key in ("final_vae_loss", "final_decoder_loss", "final_unet_loss", "latent_scale"):
        assert split[key] == whole[key], key
    a, b = (_weights(tmp_path / k / "checkpoints" / "unet-000002") for k in ("whole", "split"))
    assert a.keys() == b.keys()
    for k in a.keys() - {"state/rng.torch"}:  # torch's global RNG: the VAE phase drew from it, the UNet phase never
        assert torch.equal(a[k], b[k]), k  # does (its noise comes from its own generator, restored on resume)
    assert json.loads((tmp_path / "split" / "vae" / "vae.json").read_text()) == record  # the record travels on

    with pytest.raises(SystemExit, match="world 2"):
        _run(tmp_path / "w1", "--vae", str(vae), monkeypatch=monkeypatch)  # a world-1 run
    assert not (tmp_path / "w1" / "training.log").exists()  # refused before the pool is rendered
    with pytest.raises(SystemExit):  # --init and --vae both name the VAE: argparse refuses the pair
        T.parse_args([str(tmp_path / "x"), "--vae", str(vae), "--init", str(vae)])
    (vae / "vae.json").write_text(json.dumps({**record, "world_digest": "0" * 64}))  # renders of an older world 2
    with pytest.raises(SystemExit, match="earlier version of world 2"):
        _run(tmp_path / "stale", *w, "--vae", str(vae), monkeypatch=monkeypatch)
    (vae / "vae.json").write_text(json.dumps(record))
    weights = vae / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(SystemExit, match="not the ones"):
        _run(tmp_path / "edited", *w, "--vae", str(vae), monkeypatch=monkeypatch)


def test_the_decoder_phase_changes_only_the_decoder_and_ships_in_out_vae(tmp_path, monkeypatch):
    """Between the VAE and UNet phases only the VAE's decoder and post-quant conv train: the encoder (rounded to
    fp16 when the VAE phase ends), the UNet and the text encoder are bit for bit what the VAE phase left; the
    decoder has moved. OUT/vae, what `--vae` hands to a later run, is the VAE after the decoder phase."""
    import torch
    from safetensors.torch import load_file

    _run(tmp_path / "vae", "--world", "2", stop_after="vae step 2/2", monkeypatch=monkeypatch)
    _run(tmp_path / "whole", "--world", "2", stop_after="decoder step 2/2", monkeypatch=monkeypatch)
    before = _weights(tmp_path / "vae" / "checkpoints" / "vae-000002")  # a run keeps its last checkpoint only
    after = _weights(tmp_path / "whole" / "checkpoints" / "decoder-000002")
    _run(tmp_path / "whole", "--world", "2", "--resume", monkeypatch=monkeypatch)
    trained = {k for k in before if k.startswith(("vae/decoder.", "vae/post_quant_conv."))}
    assert len(trained) > 50 and any(k.startswith("vae/encoder.") for k in before)
    for k in before:
        if k.startswith("vae/"):
            assert torch.equal(after[k], before[k].half().float()) == (k not in trained), k
        elif k.startswith(("unet/", "text_encoder/")):
            assert torch.equal(after[k], before[k]), k
    shipped = load_file(str(tmp_path / "whole" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(shipped[k].float(), after[f"vae/{k}"].half().float()) for k in shipped)
    info = json.loads((tmp_path / "whole" / "pipeline" / "training.json").read_text())
    assert info["settings"]["decoder_steps"] == 2 and info["final_decoder_loss"] > 0


def test_resume_of_a_run_from_an_older_version_says_to_start_again(tmp_path, monkeypatch):
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "progress.json").write_text('{"phase": "unet", "step": 100}')
    with pytest.raises(SystemExit, match="without --resume"):
        _run(tmp_path / "old", "--resume", monkeypatch=monkeypatch)


def test_a_run_resumes_only_in_its_own_world(tmp_path, monkeypatch):
    _run(tmp_path / "w2", "--world", "2", stop_after="vae step 1/2", monkeypatch=monkeypatch)
    with pytest.raises(SystemExit, match="--world 2"):
        _run(tmp_path / "w2", "--resume", monkeypatch=monkeypatch)


def test_a_world_2_pipeline_has_sd_like_proportions_and_reads_every_caption(tmp_path):
    """World 2's model: a 64-wide text encoder against UNet channels 64 / 128 / 160, 8 latent channels, within the 25 MB budget, its
    training.json naming the world, and a tokenizer with one token per caption word, every caption within 32."""
    from cns_cli.demo.pairs import PAIR_WORDS, training_set
    from cns_cli.demo.world import model_world, vocabulary

    out = tmp_path / "demo2"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "train_demo_model.py"), str(out), "--quick", "--world",
                        "2"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads((out / "pipeline" / "training.json").read_text())
    assert info["bytes"] <= 25_000_000 and info["world"] == 2 and model_world(out / "pipeline") == 2
    assert model_world(out / "latest") == 2  # the pipeline looked at while it trains says so too
    pipe = load_pipeline(resolve_base(str(out / "pipeline")))
    pointer = describe_base(resolve_base(str(out / "pipeline")), pipe)
    assert pointer.text_dim == 64 and len(pointer.kv_layers) == 20
    assert tuple(pipe.unet.config.block_out_channels) == (64, 128, 160)
    assert pipe.vae.config.latent_channels == pipe.unet.config.in_channels == pipe.unet.config.out_channels == 8
    for word in (*vocabulary(2), *PAIR_WORDS):
        ids = pipe.tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1 and pipe.tokenizer.decode(ids).strip() == word, (word, ids)
    _, captions = training_set(400, seed=0, world=2)
    assert max(len(pipe.tokenizer(c).input_ids) for c in captions) <= pipe.tokenizer.model_max_length == 32
    image = pipe("a brown dog with white spots and a red collar on grass", num_inference_steps=2, output_type="np")
    assert image.images[0].shape == (64, 64, 3)
