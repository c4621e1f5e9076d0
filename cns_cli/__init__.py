"""cns: continual personalization of text-to-image diffusion models (Concept Neuron Selection)."""

__version__ = "0.1.0"
