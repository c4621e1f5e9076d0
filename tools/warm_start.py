"""Start demo-model training from an earlier demo pipeline (`python tools/train_demo_model.py OUT --init DIR`).

The VAE, the UNet and every text-encoder weight except the token embeddings are copied as they are (the
shapes are the training script's). Token embeddings are matched by token *string*, not id, so a changed
vocabulary keeps what the earlier model learned: a token both vocabularies have keeps its row; a new whole-word
token starts from the mean of the rows of the pieces the old tokenizer split that word into ("cat" was
"c" + "at</w>"); anything else keeps its fresh random row. Used for the bundled model, whose first run had a
tokenizer that split five words (see train_demo_model.py's docstring).
"""

from __future__ import annotations

from pathlib import Path


def warm_start(pipe, init: Path) -> dict[str, int]:
    """Load `init` (a saved demo pipeline folder) into `pipe` in place; returns how the embedding rows were
    filled: {"same_token": n, "from_pieces": n, "fresh": n}."""
    import torch
    from diffusers import StableDiffusionPipeline

    old = StableDiffusionPipeline.from_pretrained(init, torch_dtype=torch.float32, safety_checker=None,
                                                  requires_safety_checker=False)
    if len(old.tokenizer) < 100:
        raise SystemExit(f"{init}: its tokenizer has {len(old.tokenizer)} tokens — not a demo pipeline folder")
    pipe.vae.load_state_dict(old.vae.state_dict())
    pipe.vae.register_to_config(scaling_factor=old.vae.config.scaling_factor)
    pipe.unet.load_state_dict(old.unet.state_dict())
    key = next(k for k in old.text_encoder.state_dict() if k.endswith("embeddings.token_embedding.weight"))
    state = {k: v for k, v in old.text_encoder.state_dict().items() if k != key}
    missing, unexpected = pipe.text_encoder.load_state_dict(state, strict=False)
    assert missing == [key] and not unexpected, (missing, unexpected)

    old_rows, old_vocab = old.text_encoder.get_input_embeddings().weight.detach(), old.tokenizer.get_vocab()
    rows = pipe.text_encoder.get_input_embeddings().weight
    counts = {"same_token": 0, "from_pieces": 0, "fresh": 0}
    with torch.no_grad():
        for token, i in pipe.tokenizer.get_vocab().items():
            # a whole word: the rows the old tokenizer actually used for it (its vocabulary may list the word
            # as a token that its merge order never produced, an untrained row)
            pieces = old.tokenizer(token[:-4], add_special_tokens=False).input_ids if token.endswith("</w>") else []
            if len(pieces) > 1:
                rows[i] = old_rows[pieces].mean(0)
                counts["from_pieces"] += 1
            elif token in old_vocab:
                rows[i] = old_rows[old_vocab[token]]
                counts["same_token"] += 1
            else:
                counts["fresh"] += 1
    return counts
