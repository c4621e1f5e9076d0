"""Shared fixtures. Nothing here touches the network: HF_HUB_OFFLINE is forced before any HF import."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.pop("CNS_BANK", None)
os.environ.pop("CNS_DEBUG", None)

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> str:
    """A random tiny SD pipeline saved with save_pretrained; loaded by tests through the real loading code."""
    from cns_cli.model.tiny import save_tiny_pipeline

    return str(save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe", seed=0))
