"""cns: continual personalization of text-to-image diffusion models (Concept Neuron Selection)."""

from .about import DEFAULT_BASE, __version__

# The Python API (cns_cli/api.py), imported on first use so that `import cns_cli` stays free of torch.
_API = ("apply_bank", "expand_prompt", "generate_regions", "load_pipeline", "remove_bank")
__all__ = ["DEFAULT_BASE", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'cns_cli' has no attribute {name!r}")
