"""cns: continual personalization of text-to-image diffusion models (Concept Neuron Selection)."""

__version__ = "0.1.0"
# The base model of a new bank when --base is not given.
DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"
