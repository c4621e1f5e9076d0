"""No connection to the Hugging Face Hub (issue 35): a single-file checkpoint without --config, or a hub base that is
not cached, ends in one line naming the fix, at once, instead of an internal error or half a minute of retries.
The network is never used: the hub probe and the library calls that would download are replaced."""

from __future__ import annotations

import pytest

from cns_cli.model import loading
from tests.clitools import cns, one_line_error

REFUSED = "ConnectError: [Errno 111] Connection refused"


@pytest.fixture(scope="module")
def single_file(tiny_base, tmp_path_factory):
    from tools.ldm_checkpoint import save_single_file

    pipe = loading.load_pipeline(loading.resolve_base(tiny_base))
    return save_single_file(pipe, tmp_path_factory.mktemp("single") / "model.safetensors")


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE unset for cns's own check (huggingface_hub read it at import, so it stays offline itself)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _connect_error():
    import httpx2

    return httpx2.ConnectError("[Errno 111] Connection refused")


def test_single_file_without_config_and_no_hub_names_config_at_once(single_file, online, monkeypatch, tmp_path):
    import diffusers

    def no_download(*a, **k):
        raise AssertionError("a download was tried after the hub was found unreachable")

    monkeypatch.setattr(loading, "hub_unreachable", lambda: REFUSED)
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_single_file", no_download)
    line = one_line_error(cns("--bank", tmp_path / "b.cnsbank", "init", "--base", single_file))
    assert "single-file checkpoint" in line and "pass --config DIR" in line and "Connection refused" in line, line
    assert not (tmp_path / "b.cnsbank").exists()


def test_single_file_download_that_loses_the_connection_names_config(single_file, online, monkeypatch, tmp_path):
    """The hub answered the first look, then the config download failed: diffusers wraps httpx's ConnectError in
    its own error ("Got: ConnectError"), which used to surface as "cannot load the base model" or exit 101."""
    import diffusers

    def lost_connection(*a, **k):
        raise OSError("Got: ConnectError: [Errno 111] Connection refused") from _connect_error()

    monkeypatch.setattr(loading, "hub_unreachable", lambda: None)
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_single_file", lost_connection)
    line = one_line_error(cns("--bank", tmp_path / "b.cnsbank", "init", "--base", single_file))
    assert "single-file checkpoint" in line and "pass --config DIR" in line, line


def test_uncached_hub_base_without_a_connection_is_one_line_and_no_download(online, monkeypatch, hub_cache, tmp_path):
    """The default base on a machine without a connection: one line, no retries (no download is even tried)."""
    import diffusers

    tried = []
    monkeypatch.setattr(loading, "hub_unreachable", lambda: REFUSED)
    monkeypatch.setattr(diffusers.DiffusionPipeline, "load_config", lambda *a, **k: tried.append(a) or {})
    r = cns("--bank", tmp_path / "b.cnsbank", "init")
    line = one_line_error(r)
    assert r.stderr.strip().splitlines() == [line]
    assert "Hugging Face Hub cannot be reached" in line and "Connection refused" in line and "--base" in line
    assert tried == []


def test_hub_probe_reports_a_connection_failure_and_nothing_else(monkeypatch):
    import huggingface_hub.utils

    class Session:
        def __init__(self, error):
            self.error = error

        def head(self, url, timeout):
            if self.error:
                raise self.error
            return object()

    for error, expected in ((_connect_error(), "ConnectError: [Errno 111] Connection refused"), (None, None),
                            (ValueError("a bad answer"), None)):
        loading.hub_unreachable.cache_clear()
        monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda e=error: Session(e))
        assert loading.hub_unreachable() == expected
    loading.hub_unreachable.cache_clear()
