"""The method as pure tensor functions (CNS steps 1-6, see format/SPEC.md "Method"): no model, no I/O,
no CLI. Choices that the paper does not publish are marked INFERRED in the docstrings."""
