"""What `cns generate` writes and refuses, from a new user's reports: files are never overwritten (names carry a
hash of every pixel setting, a taken name gets -2, writes are exclusive and never half-done), the A1111
`parameters` chunk is one other tools can read, and bad numbers, paths and sizes are one line and exit 2 before
any model is loaded."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from cns_cli import checks
from cns_cli import generate as gen
from cns_cli.checks import ModelFacts, model_facts
from cns_cli.errors import CnsError, UsageError
from cns_cli.learn import LearnConfig, learn
from cns_cli.model import loading
from cns_cli.model.loading import BaseSpec, resolve_base

from tests.clitools import cns, one_line_error

PROMPT = "<dog> on a beach"
NAME = re.compile(r"r1-000-dog-on-a-beach-s(\d+)-([0-9a-f]{8})(-\d+)?\.png")


@pytest.fixture(scope="module")
def bank(dog_bank_readonly) -> Path:
    return dog_bank_readonly


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- 1. files are never overwritten ------------------------------------------------------------------------------


def test_a_changed_setting_never_overwrites_an_earlier_image(bank, tmp_path):
    """The report: the same prompt with --guidance 2 replaced the first image; a second identical run did too."""
    out = tmp_path / "ow"
    r1 = cns("--bank", bank, "generate", PROMPT, "--steps", "2", "--out", out)
    assert r1.exit_code == 0, r1.stderr
    first = Path(r1.stdout.strip())
    original = first.read_bytes()
    assert NAME.fullmatch(first.name) and first.name.endswith(".png") and "-s0-" in first.name

    r2 = cns("--bank", bank, "generate", PROMPT, "--steps", "2", "--guidance", "2", "--out", out)
    assert r2.exit_code == 0, r2.stderr
    second = Path(r2.stdout.strip())
    assert second != first and NAME.fullmatch(second.name).group(3) is None  # a different hash, not a suffix
    assert first.read_bytes() == original

    r3 = cns("--bank", bank, "generate", PROMPT, "--steps", "2", "--out", out, "--json")  # the same settings again
    assert r3.exit_code == 0, r3.stderr
    rec = json.loads(r3.stdout)
    third = Path(rec["path"])  # the record names the file really written
    assert third.name == f"{first.stem}-2.png" and third.read_bytes() == original == first.read_bytes()
    assert sorted(files_in(out)) == sorted(p.name for p in (first, second, third))  # no temp file left behind


def test_two_banks_at_the_same_revision_number_do_not_collide(bank, tiny_base, dog_photos, tmp_path):
    other = tmp_path / "other.cnsbank"
    learn(other, "dog", dog_photos, class_word="dog", base=tiny_base, config=LearnConfig(steps=8, score_steps=2, seed=1))
    out = tmp_path / "out"
    a = gen.generate(bank, [PROMPT], out, gen.GenerateConfig(steps=2))[0]
    b = gen.generate(other, [PROMPT], out, gen.GenerateConfig(steps=2))[0]
    assert a["revision"] == b["revision"] == 1
    ma, mb = NAME.fullmatch(Path(a["path"]).name), NAME.fullmatch(Path(b["path"]).name)
    assert ma.group(2) != mb.group(2) and ma.group(3) is None and mb.group(3) is None


def _record(**kw) -> dict:
    rec = {"text": "<dog> dog on a beach", "seed": 7, "steps": 30, "guidance": 7.5, "width": 512, "height": 512,
           "device": "cpu", "precision": "fp32"}
    rec.update(kw)
    return rec


IDENTITY = {"fingerprint": "a" * 64, "basis": "b" * 64,
            "concepts": {"dog": {"token": "<dog>", "delta": "c" * 64, "embedding": "d" * 64, "slice": [0, 4]}},
            "scheduler": {"class": "DDIMScheduler", "config": {"num_train_timesteps": 1000}}}


def test_every_setting_that_changes_pixels_changes_the_hash():
    base = gen.settings_hash(_record(), IDENTITY)
    assert re.fullmatch(r"[0-9a-f]{8}", base)
    variants = [_record(text="<dog> dog on a beach, night"), _record(seed=8), _record(steps=31), _record(guidance=2.0),
                _record(width=576), _record(height=576), _record(device="cuda"), _record(precision="bf16"),
                _record(regions={"layout": "auto", "strength": 1.0, "context": "dog on a beach", "regions": []})]
    hashes = [gen.settings_hash(r, IDENTITY) for r in variants]
    for key, value in (("fingerprint", "e" * 64), ("basis", "f" * 64)):
        hashes.append(gen.settings_hash(_record(), {**IDENTITY, key: value}))
    for field in ("delta", "embedding"):
        dog = {**IDENTITY["concepts"]["dog"], field: "0" * 64}
        hashes.append(gen.settings_hash(_record(), {**IDENTITY, "concepts": {"dog": dog}}))
    hashes.append(gen.settings_hash(_record(), {**IDENTITY, "scheduler": {"class": "EulerDiscreteScheduler",
                                                                          "config": {"num_train_timesteps": 1000}}}))
    assert len(set(hashes + [base])) == len(hashes) + 1
    assert gen.settings_hash(_record(guidance=7), IDENTITY) == gen.settings_hash(_record(guidance=7.0), IDENTITY)
    assert gen.settings_hash(_record(prompt="other words", revision=9), IDENTITY) == base  # not pixel settings


def test_a_name_taken_by_a_concurrent_writer_is_never_overwritten(tmp_path, monkeypatch):
    real_link = os.link

    def racing_link(src, dst):
        if not Path(dst).exists() and Path(dst).name == "img.png":
            Path(dst).write_bytes(b"theirs")  # another process wins the name between our check and our link
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    path = gen.write_new_file(tmp_path, "img", ".png", b"ours")
    assert path.name == "img-2.png"
    assert files_in(tmp_path) == {"img.png": b"theirs", "img-2.png": b"ours"}


def test_without_hard_links_a_name_is_still_claimed_exclusively(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "img.png").write_bytes(b"old")
    assert gen.write_new_file(tmp_path, "img", ".png", b"new").name == "img-2.png"
    assert gen.write_new_file(tmp_path, "img", ".png", b"newer").name == "img-3.png"
    assert files_in(tmp_path) == {"img.png": b"old", "img-2.png": b"new", "img-3.png": b"newer"}


@pytest.mark.parametrize("where", ["fsync", "link"])
def test_an_interrupted_write_leaves_nothing_under_a_final_name(tmp_path, monkeypatch, where):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        gen.write_new_file(tmp_path, "img", ".png", b"x" * 100_000)
    monkeypatch.undo()
    assert files_in(tmp_path) == {}  # neither a partial img.png nor the temp file


def test_disk_full_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(CnsError, match="disk full"):
        gen.write_new_file(tmp_path, "img", ".png", b"x")
    monkeypatch.undo()
    assert files_in(tmp_path) == {}


# -- 2. A1111 metadata other tools can read -------------------------------------------------------------------------


def test_a1111_parsers_read_a_cns_png(bank, tiny_base, tmp_path):
    """The report: sd-parsers (a third-party reader of A1111 metadata) found nothing in cns PNGs."""
    from sd_parsers import ParserManager

    r = cns("--bank", bank, "generate", PROMPT, "--seed", "7", "--steps", "3", "--guidance", "6.5", "--out", tmp_path,
            "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["sampler"] == "DDIM" and rec["model"] == Path(tiny_base).name
    info = ParserManager().parse(rec["path"])
    assert info is not None, "sd-parsers could not read the PNG"
    (sampler,) = info.samplers
    assert [str(p) for p in info.prompts] == ["<dog> dog on a beach"] and not info.negative_prompts
    assert sampler.name == "DDIM" and sampler.model.name == Path(tiny_base).name
    assert (sampler.parameters["seed"], sampler.parameters["steps"], sampler.parameters["cfg_scale"]) == ("7", "3", "6.5")
    chunks = Image.open(rec["path"]).text
    assert chunks["parameters"].split("\n") == [
        "<dog> dog on a beach",
        f"Steps: 3, Sampler: DDIM, CFG scale: 6.5, Seed: 7, Size: 32x32, Model: {Path(tiny_base).name}, cns revision: 1"]
    assert chunks["cns:seed"] == "7" and chunks["cns:text"] == "<dog> dog on a beach"  # cns's own chunks stay


SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}


@pytest.mark.parametrize("cls, extra, want", [
    ("PNDMScheduler", {}, ("PLMS", None)),  # SD 1.5's own scheduler: PNDM with skip_prk_steps is PLMS
    ("PNDMScheduler", {"skip_prk_steps": False}, ("PNDM", None)),  # with Runge-Kutta warm-up: no A1111 name
    ("DDIMScheduler", {}, ("DDIM", None)),
    ("DDPMScheduler", {}, ("DDPM", None)),
    ("EulerDiscreteScheduler", {}, ("Euler", None)),
    ("EulerAncestralDiscreteScheduler", {}, ("Euler a", None)),
    ("HeunDiscreteScheduler", {}, ("Heun", None)),
    ("KDPM2DiscreteScheduler", {}, ("DPM2", None)),
    ("KDPM2AncestralDiscreteScheduler", {}, ("DPM2 a", None)),
    ("UniPCMultistepScheduler", {}, ("UniPC", None)),
    ("DPMSolverMultistepScheduler", {}, ("DPM++ 2M", None)),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, ("DPM++ 2M", "Karras")),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, ("DPM++ 2M SDE", None)),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
     ("DPMSolverMultistepScheduler", None)),  # DPM-Solver (not ++) multistep: A1111 has none
])
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # diffusers' own, on numpy 2
def test_sampler_names_are_a1111s(cls, extra, want):
    import diffusers

    scheduler = getattr(diffusers, cls).from_config({**SD15_SCHEDULER, **extra})  # as a user would swap it in
    assert gen.sampler_name(type(scheduler).__name__, scheduler.config) == want


def test_sampler_names_without_diffusers_objects():
    assert gen.sampler_name("LMSDiscreteScheduler", {}) == ("LMS", None)
    assert gen.sampler_name("FlowMatchEulerDiscreteScheduler", {}) == ("FlowMatchEulerDiscreteScheduler", None)


def test_model_names_and_quoting():
    from types import SimpleNamespace as NS

    assert gen.model_name(NS(kind="builtin", location="demo")) == "demo"
    assert gen.model_name(NS(kind="local-dir", location="/models/my-sd15")) == "my-sd15"
    assert gen.model_name(NS(kind="single-file", location="/models/v1-5-pruned.safetensors")) == "v1-5-pruned"
    assert gen.model_name(NS(kind="hub", location="stable-diffusion-v1-5/stable-diffusion-v1-5")) == \
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    rec = {"text": "a, b", "steps": 2, "sampler": "DDIM", "guidance": 7.5, "seed": 1, "width": 8, "height": 8,
           "model": "C:/models, new", "revision": 3, "schedule": "Karras"}
    assert gen.a1111_infotext(rec) == ('a, b\nSteps: 2, Sampler: DDIM, Schedule type: Karras, CFG scale: 7.5, Seed: 1, '
                                       'Size: 8x8, Model: "C:/models, new", cns revision: 3')


# -- 3. bad input: exit 2, one line, before any model load ----------------------------------------------------------


@pytest.mark.parametrize("flags, words", [
    (["--seed", str(2**64)], "--seed must be below 2^64"),
    (["--seed", str(2**64 - 1), "-n", "2"], "past 2^64 - 1"),
    (["--steps", "1000"], "--steps 1000 is more than this model can sample with (at most 999"),
    (["--steps", "5000"], "at most 999"),
    (["--width", "256", "--height", "256"], "native 32x32"),
    (["--width", "4096"], "or add --force"),
])
def test_bad_numbers_are_refused_before_the_model_loads(bank, tmp_path, no_model_load, flags, words):
    out = tmp_path / "out"
    assert words in one_line_error(cns("--bank", bank, "generate", PROMPT, "--out", out, *flags))
    assert not out.exists()  # nothing created either


def test_out_that_is_a_file_is_refused_before_the_model_loads(bank, tmp_path, no_model_load):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"keep me")
    assert "is a file, not a folder" in one_line_error(cns("--bank", bank, "generate", PROMPT, "--out", taken))
    assert "is a file, not a folder" in one_line_error(cns("--bank", bank, "generate", PROMPT, "--out", taken / "sub"))
    assert taken.read_bytes() == b"keep me"


def test_out_under_a_read_only_folder_is_refused_before_the_model_loads(bank, tmp_path, no_model_load, monkeypatch):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real = os.access

    def access(path, mode, *a, **k):  # as on a read-only file system (root passes permission checks, not EROFS)
        return False if Path(path) == read_only and mode & os.W_OK else real(path, mode, *a, **k)

    monkeypatch.setattr(checks.os, "access", access)
    msg = one_line_error(cns("--bank", bank, "generate", PROMPT, "--out", read_only / "a" / "b"))
    assert "is not writable" in msg and str(read_only) in msg
    assert not (read_only / "a").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to any folder")
def test_out_under_a_folder_without_write_permission(bank, tmp_path, no_model_load):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert "is not writable" in one_line_error(cns("--bank", bank, "generate", PROMPT, "--out", locked / "out"))
    finally:
        locked.chmod(0o755)


def test_limits_not_readable_before_the_load_are_checked_right_after_it(bank, tmp_path, monkeypatch):
    """A hub id not in the cache or a single .safetensors file: the scheduler and size are known only once loaded."""
    loads = []
    real = loading.load_pipeline
    monkeypatch.setattr(loading, "load_pipeline", lambda spec: loads.append(spec) or real(spec))
    monkeypatch.setattr(gen, "model_facts", lambda spec: ModelFacts())
    out = tmp_path / "out"
    assert "at most 999" in one_line_error(cns("--bank", bank, "generate", PROMPT, "--steps", "1000", "--out", out))
    assert "native 32x32" in one_line_error(cns("--bank", bank, "generate", PROMPT, "--width", "256", "--height", "256",
                                                        "--out", out))
    assert len(loads) == 2 and not out.exists()


def test_model_facts_come_from_the_config_files(tiny_base, tmp_path, hub_cache):
    tiny = ModelFacts(max_steps=999, train_steps=1000, native=32)  # DDIM, 1000 timesteps, steps_offset 1
    assert model_facts(resolve_base(tiny_base)) == tiny
    assert model_facts(resolve_base("demo")) == ModelFacts(999, 1000, 64)
    assert model_facts(BaseSpec("single-file", str(tmp_path / "m.safetensors"))) == ModelFacts()  # known after load
    hub_cache(tiny_base, "someone/tiny")
    assert model_facts(BaseSpec("hub", "someone/tiny")) == tiny
    assert model_facts(BaseSpec("hub", "someone/tiny", "0123abcd")) == tiny
    assert model_facts(BaseSpec("hub", "someone/absent")) == ModelFacts()  # not cached: checked after the load
    assert model_facts(BaseSpec("hub", "someone/tiny", "v2")) == ModelFacts()


def test_scheduler_limits_follow_the_spacing():
    assert checks.facts_from_configs({"num_train_timesteps": 1000, "steps_offset": 1}, None, None).max_steps == 999
    trailing = {"num_train_timesteps": 1000, "steps_offset": 1, "timestep_spacing": "trailing"}
    assert checks.facts_from_configs(trailing, None, None).max_steps == 1000
    assert checks.facts_from_configs({"num_train_timesteps": 1000}, None, None).max_steps == 1000
    assert checks.facts_from_configs(None, {"sample_size": 64}, {"block_out_channels": [1, 2, 3, 4]}).native == 512


# -- 4. runaway sizes ---------------------------------------------------------------------------------------------


def test_size_limits():
    facts = ModelFacts(native=64)
    assert checks.check_size(None, None, facts) is None and checks.check_size(128, 128, facts) is None  # 4x: fine
    assert "native 64x64" in checks.check_size(192, 128, facts)  # 6x: a warning
    assert "16x the pixels" in checks.check_size(256, 256, facts)  # exactly 16x: still only a warning
    with pytest.raises(UsageError, match="native 64x64.*--force"):
        checks.check_size(264, 256, facts)
    assert "native 64x64" in checks.check_size(4096, 4096, facts, force=True)
    assert checks.check_size(4096, 4096, ModelFacts()) is None  # unknown yet: checked after the load


def test_large_sizes_warn_and_force_allows_more(bank, tmp_path):
    r = cns("--bank", bank, "generate", PROMPT, "--steps", "1", "--width", "96", "--height", "96", "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    assert "warning" in r.stderr and "9x the pixels" in r.stderr and "native 32x32" in r.stderr
    assert Image.open(r.stdout.strip()).size == (96, 96)
    r = cns("--bank", bank, "generate", PROMPT, "--steps", "1", "--width", "160", "--height", "160", "--force",
            "--out", tmp_path)
    assert r.exit_code == 0, r.stderr
    assert Image.open(r.stdout.strip()).size == (160, 160) and "25x the pixels" in r.stderr
