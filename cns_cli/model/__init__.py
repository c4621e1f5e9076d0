"""diffusers/transformers glue: loading a base, its K/V layers, tokens, and applying bank deltas."""
