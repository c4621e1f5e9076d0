"""Facts about this cns that modules inside the package import (a leaf: it imports nothing, so no module that
needs the version has to import the package root, which re-exports the API)."""

__version__ = "0.1.0"
# The base model of a new bank when --base is not given.
DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
