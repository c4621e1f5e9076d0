"""Do cns's kohya LoRAs and embeddings load in ComfyUI's own code, at the real shapes of SD 1.5, SD 2.x and SDXL?
A developer check (issue 34; not a test: CI has no ComfyUI). ComfyUI is GPL: it is imported from a checkout given by
--comfyui, never copied here. Two processes, since ComfyUI's environment need not have cns's transformers 5:

    python tools/check_comfyui.py prepare OUT                                        # cns's venv
    COMFY/bin/python tools/check_comfyui.py check OUT --comfyui PATH [--result FILE]  # ComfyUI's venv

`prepare` (imports cns) builds, per family, the diffusers UNet of the real model (SD 1.5, SD 2.1 768-v and SDXL base
1.0 unet/config.json values) on the meta device, so that it costs nothing, with only its cross-attention K/V weights
made real (random); a bank on it whose two concepts, dog (rank 4, 1 token vector) and hat (rank 2, 3 vectors, its
own basis), own rows in every K/V layer; cns's exports of that bank (kohya per concept and --merged, embeddings, the
diffusers format); and the K/V weights `cns generate` runs with: the base's, with dog, with dog and hat
(model/kv.apply_deltas, what apply_bank adds).

`check` (imports ComfyUI, never cns) lets ComfyUI detect the model from the UNet's shapes (model_detection), build it
on the meta device with the same K/V weights (the rest is never touched), then load each LoRA as ComfyUI's
LoraLoaderModelOnly node does (comfy.sd.load_lora_for_models: its key mapping, comfy.lora.load_lora) and patch every
weight it maps with ComfyUI's weight patcher (ModelPatcher.patch_weight_to_device). It reports, per LoRA: keys in
the file, the "lora key not loaded" / "NOT LOADED" warnings, the layers patched against the layers cns changed, the
largest absolute difference of ComfyUI's patched weights from cns's and the largest relative error of ComfyUI's delta (patched − base) against cns's; per embedding, through ComfyUI's own
tokenizer (`embedding:NAME` in a prompt): the vectors it inserts per text encoder against the bank's. Exit 1 on any
key not loaded, any layer not patched, a relative delta error over 1e-5 or an embedding not read exactly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes cns_cli importable (`prepare` only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_SD_BLOCKS = dict(down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, block_out_channels=(320, 640, 1280, 1280))
# The hub's unet/config.json of each model (stable-diffusion-v1-5, stable-diffusion-2-1, stable-diffusion-xl-base-1.0)
UNETS = {
    "sd1": dict(sample_size=64, layers_per_block=2, cross_attention_dim=768, attention_head_dim=8, **_SD_BLOCKS),
    "sd2": dict(sample_size=96, layers_per_block=2, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                use_linear_projection=True, upcast_attention=True, **_SD_BLOCKS),
    "sdxl": dict(sample_size=128, layers_per_block=2, cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
                 block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816),
}
EMBEDDING_WIDTHS = {"sd1": [768], "sd2": [1024], "sdxl": [768, 1280]}  # each text encoder's token width
CONCEPTS = (("dog", 4, 1, False), ("hat", 2, 3, True))  # (name, rank, token vectors, own basis)
ROWS_PER_LAYER = 8
SCENARIOS = {"dog": (["kohya/lora/dog.safetensors"], "kv_cns_dog"),
             "dog+hat chained": (["kohya/lora/dog.safetensors", "kohya/lora/hat.safetensors"], "kv_cns_all"),
             "merged": (["merged/lora/cns-merged.safetensors"], "kv_cns_all"),
             "diffusers format": (["diffusers/dog/pytorch_lora_weights.safetensors"], None)}


# -- prepare: cns's side ------------------------------------------------------------------------------------------


def _unet(family: str, seed: int):
    """The real-size UNet on the meta device, its K/V weights real: N(0, 0.02²), seeded."""
    import torch
    from diffusers import UNet2DConditionModel

    from cns_cli.model.loading import kv_layers

    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNETS[family])
    g = torch.Generator().manual_seed(seed)
    for layer in kv_layers(unet).values():
        layer.weight = torch.nn.Parameter(torch.randn(layer.weight.shape, generator=g) * 0.02, requires_grad=False)
    return unet


def _bank(path: Path, family: str, unet, seed: int):
    """A bank on this UNet through cns's public bank API, each concept owning ROWS_PER_LAYER rows of every layer."""
    import numpy as np

    from cns_cli.bank import Bank, BaseModelPointer, Basis, Concept, Operation
    from cns_cli.bank.delta import encode_delta
    from cns_cli.bank.layout import embedding_names
    from cns_cli.bank.models import Fingerprint, Neurons, Slice
    from cns_cli.model.loading import fingerprint, kv_layers

    layers = {name: m.out_features for name, m in kv_layers(unet).items()}
    d = UNETS[family]["cross_attention_dim"]
    pointer = BaseModelPointer(kind="local-dir", location=f"/meta/{family}", fingerprint=Fingerprint(digest=fingerprint(unet)),
                               text_dim=d, kv_layers=layers, vocab_size=49408, family=family,
                               embedding_dims=EMBEDDING_WIDTHS[family])
    bank = Bank.create(path, pointer, argv=["tools/check_comfyui.py"])
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)  # (d, d) orthogonal: the shared basis
    start = 0
    for name, rank, k, own in CONCEPTS:
        delta = {layer: (np.sort(rng.choice(rows, ROWS_PER_LAYER, replace=False)).astype(np.int32),
                         (rng.standard_normal((ROWS_PER_LAYER, rank)) * 0.05).astype(np.float32)) for layer, rows in layers.items()}
        basis = np.linalg.qr(rng.standard_normal((d, rank)))[0].astype(np.float32) if own else None  # (d, r)
        emb = {key: rng.standard_normal((k, w)).astype(np.float32) * 0.01
               for key, w in zip(embedding_names(len(EMBEDDING_WIDTHS[family])), EMBEDDING_WIDTHS[family])}
        with bank.transaction() as tx:
            basis_ref = tx.parent.basis or Basis(object=tx.put({"Q": q}, "basis"), dim=d, seed=seed)
            concept = Concept(token=f"<{name}>", class_word=name, learned_in=tx.number,
                              slice=Slice(start=None if own else start, rank=rank),
                              neurons=Neurons(total=ROWS_PER_LAYER * len(layers), per_layer={l: ROWS_PER_LAYER for l in layers}),
                              delta=tx.put(encode_delta(delta, basis), "delta", {"concept": name}),
                              embedding=tx.put(emb, "embedding", {"token": f"<{name}>"}),
                              training={"steps": 0, "synthetic": True}, stats={})
            tx.commit(Operation(kind="learn", concept=name, argv=["tools/check_comfyui.py"]),
                      concepts={**tx.parent.concepts, name: concept}, basis=basis_ref)
        start += 0 if own else rank
    return bank


def _kv(unet) -> dict:
    from cns_cli.model.loading import kv_layers

    return {f"{name}.weight": m.weight.detach().clone() for name, m in kv_layers(unet).items()}


def prepare(out: Path, families: list[str]) -> None:
    import torch
    from safetensors.torch import save_file

    from cns_cli.bank import Bank
    from cns_cli.export import export
    from cns_cli.model.bank_apply import basis_matrix, concept_tensors
    from cns_cli.model.kv import apply_deltas

    for i, family in enumerate(families):
        folder = out / family
        folder.mkdir(parents=True, exist_ok=True)
        unet = _unet(family, seed=i)
        bank_path = folder / "b.cnsbank"
        _bank(bank_path, family, unet, seed=i)
        (folder / "unet_shapes.json").write_text(json.dumps({k: list(v.shape) for k, v in unet.state_dict().items()}))
        save_file(_kv(unet), str(folder / "kv_base.safetensors"))
        bank = Bank.open(bank_path)
        rev = bank.head()
        q = basis_matrix(bank, rev)
        for names, file in ((["dog"], "kv_cns_dog"), (["dog", "hat"], "kv_cns_all")):
            u = _unet(family, seed=i)  # the same base K/V weights again
            apply_deltas(u, [concept_tensors(bank, rev, n, q) for n in names])  # what `cns generate` adds
            save_file(_kv(u), str(folder / f"{file}.safetensors"))
        export(bank_path, folder / "kohya", "kohya")
        export(bank_path, folder / "merged", "kohya", merged=True)
        export(bank_path, folder / "diffusers", "diffusers")
        emb = {f"{n}.{key}": torch.from_numpy(v) for n in ("dog", "hat")
               for key, v in bank.read_object(rev.concepts[n].embedding).items()}
        save_file(emb, str(folder / "embeddings_bank.safetensors"))
        print(f"{family}: {len(_kv(unet))} K/V layers, exports in {folder}", file=sys.stderr)


# -- check: ComfyUI's side (never imports cns) ------------------------------------------------------------------------


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _comfy_model(folder: Path, base: dict):
    """ComfyUI's model of these UNet shapes, detected and built by ComfyUI on the meta device; its K/V weights (and the
    1-d tensors, which detection may read) real. Returns (model config name, ModelPatcher, diffusers->ComfyUI names)."""
    import torch

    import comfy.model_detection
    import comfy.model_patcher
    import comfy.utils

    shapes = json.loads((folder / "unet_shapes.json").read_text())
    sd = {k: base[k] if k in base else torch.zeros(s) if len(s) == 1 else torch.empty(s, device="meta") for k, s in shapes.items()}
    config = comfy.model_detection.model_config_from_diffusers_unet(sd)
    if config is None:
        raise SystemExit(f"{folder.name}: ComfyUI does not recognise these UNet shapes")
    names = comfy.utils.unet_to_diffusers(config.unet_config)  # diffusers key -> ComfyUI (SGM) key, ComfyUI's own map
    assert set(names) >= set(shapes), f"{folder.name}: keys ComfyUI cannot place: {sorted(set(shapes) - set(names))[:3]}"
    sgm = {names[k]: v for k, v in sd.items()}
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model(sgm, "", device="meta")
    for k in base:
        comfy.utils.set_attr_param(model.diffusion_model, names[k], base[k].clone())
    cpu = torch.device("cpu")
    return type(config).__name__, comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu), names


def _lora(folder: Path, files: list[str], want_file: str | None, base: dict) -> dict:
    import torch
    from safetensors.torch import load_file

    import comfy.sd
    import comfy.utils

    config_name, patcher, names = _comfy_model(folder, base)
    warn = _Warnings()
    logging.getLogger().addHandler(warn)
    keys = 0
    try:
        for f in files:
            lora = comfy.utils.load_torch_file(str(folder / f), safe_load=True)
            keys += len(lora)
            patcher, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0.0)  # LoraLoaderModelOnly
    finally:
        logging.getLogger().removeHandler(warn)
    to_diffusers = {f"diffusion_model.{v}": k for k, v in names.items()}
    patched = sorted(patcher.patches)
    for key in patched:
        patcher.patch_weight_to_device(key, device_to=torch.device("cpu"))  # ComfyUI's weight patcher
    not_loaded = [w for w in warn.lines if "not loaded" in w.lower()]  # "lora key not loaded: …", "NOT LOADED …"
    doc = {"model_detected": config_name, "lora_keys": keys, "keys_not_loaded": len(not_loaded),
           "not_loaded_first": not_loaded[:2], "other_warnings": [w for w in warn.lines if w not in not_loaded][:5],
           "layers_patched": len(patched), "layers_in_model": len(base)}
    if want_file is None:
        return doc
    want = load_file(str(folder / f"{want_file}.safetensors"))
    changed = {k for k in want if not torch.equal(want[k], base[k])}
    got = {to_diffusers[k]: comfy.utils.get_attr(patcher.model, k).detach() for k in patched}
    abs_diff, rel = 0.0, 0.0
    for k, w in got.items():
        abs_diff = max(abs_diff, (w - want[k]).abs().max().item())
        ours, theirs = want[k] - base[k], w - base[k]  # (out, d): cns's delta and ComfyUI's
        rel = max(rel, ((theirs - ours).abs().max() / ours.abs().max()).item())
    doc.update({"layers_cns_changed": len(changed), "patched_equals_changed": set(got) == changed,
                "max_abs_diff_vs_cns": abs_diff, "max_rel_delta_error": rel})
    return doc


def _embeddings(folder: Path, family: str) -> dict:
    """`embedding:NAME` through ComfyUI's tokenizer of the family: the vectors it puts in each text encoder."""
    import torch
    from safetensors.torch import load_file

    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.text_encoders.sd2_clip

    tokenizer_cls = {"sd1": comfy.sd1_clip.SD1Tokenizer, "sd2": comfy.text_encoders.sd2_clip.SD2Tokenizer,
                     "sdxl": comfy.sdxl_clip.SDXLTokenizer}[family]
    encoders = {"sd1": {"l": "embedding"}, "sd2": {"h": "embedding"}, "sdxl": {"l": "embedding", "g": "embedding_2"}}[family]
    bank = load_file(str(folder / "embeddings_bank.safetensors"))
    out = {}
    for name in ("dog", "hat"):
        warn = _Warnings()
        logging.getLogger().addHandler(warn)
        try:
            tokens = tokenizer_cls(embedding_directory=str(folder / "kohya" / "embeddings")).tokenize_with_weights(
                f"a photo of embedding:{name} {name}")
        finally:
            logging.getLogger().removeHandler(warn)
        for enc, key in encoders.items():
            vecs = [t for batch in tokens[enc] for t, *_ in batch if isinstance(t, torch.Tensor)]
            got = torch.stack(vecs) if vecs else torch.empty(0)
            want = bank[f"{name}.{key}"]
            out[f"{name}/{enc}"] = {"vectors": list(got.shape), "bank": list(want.shape), "warnings": warn.lines,
                                    "equal": got.shape == want.shape and torch.equal(got.float(), want)}
    return out


def _diffusers_folder(pipe_dir: Path) -> dict:
    """ComfyUI's diffusers loader (comfy.diffusers_load.load_diffusers, its DiffusersLoader node) on an exported
    pipeline folder; then each part alone, compared with the folder's files through ComfyUI's own key conversions."""
    import torch
    from safetensors.torch import load_file

    import comfy.diffusers_convert
    import comfy.diffusers_load
    import comfy.sd
    import comfy.utils

    doc = {}
    warn = _Warnings()
    logging.getLogger().addHandler(warn)
    try:
        try:
            comfy.diffusers_load.load_diffusers(str(pipe_dir), output_vae=True, output_clip=True)
            doc["load_diffusers"] = "loaded"
        except Exception as e:  # the failure is the result
            doc["load_diffusers"] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
        unet_file = pipe_dir / "unet" / "diffusion_pytorch_model.safetensors"
        unet = comfy.sd.load_diffusion_model(str(unet_file))
        names = comfy.utils.unet_to_diffusers(unet.model.model_config.unet_config)
        theirs = unet.model.diffusion_model.state_dict()
        file = load_file(str(unet_file))
        doc["unet"] = {"model_detected": type(unet.model.model_config).__name__, "weights_in_file": len(file),
                       "placed": sum(names.get(k) in theirs for k in file),
                       "max_abs_diff_vs_file": max((theirs[names[k]].float() - v).abs().max().item() for k, v in file.items())}
        del unet, theirs
        file = load_file(str(pipe_dir / "vae" / "diffusion_pytorch_model.safetensors"))
        vae = comfy.sd.VAE(sd=dict(file))
        want = comfy.diffusers_convert.convert_vae_state_dict(dict(file))  # ComfyUI's own diffusers -> LDM names
        theirs = vae.first_stage_model.state_dict()
        doc["vae"] = {"weights_in_file": len(file), "placed": sum(k in theirs for k in want),
                      "max_abs_diff_vs_file": max((theirs[k].float() - v.reshape(theirs[k].shape)).abs().max().item()
                                                  for k, v in want.items() if k in theirs)}
        text = load_file(str(pipe_dir / "text_encoder" / "model.safetensors"))
        rows = text["text_model.embeddings.token_embedding.weight"].shape[0]
        try:
            comfy.sd.load_text_encoder_state_dicts([dict(text)])
            doc["text_encoder"] = {"vocabulary": rows, "load": "loaded"}
        except Exception as e:
            doc["text_encoder"] = {"vocabulary": rows, "load": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        # the same file without the concepts' token rows: does anything else stand in the way?
        base_rows = dict(text, **{"text_model.embeddings.token_embedding.weight": text["text_model.embeddings.token_embedding.weight"][:49408]})
        before = len(warn.lines)
        clip = comfy.sd.load_text_encoder_state_dicts([base_rows])
        theirs = clip.cond_stage_model.state_dict()
        doc["text_encoder"]["without_the_added_rows"] = {
            "clip_missing_warnings": [w for w in warn.lines[before:] if "clip missing" in w],
            "max_abs_diff_vs_file": max((theirs[f"clip_l.transformer.{k}"].float() - v).abs().max().item()
                                        for k, v in base_rows.items() if f"clip_l.transformer.{k}" in theirs),
            "placed": sum(f"clip_l.transformer.{k}" in theirs for k in base_rows), "weights_in_file": len(base_rows)}
    finally:
        logging.getLogger().removeHandler(warn)
    doc["warnings"] = [w for w in warn.lines if "missing" in w or "unexpected" in w][:5]
    return doc


def check(out: Path, comfyui: Path, result: Path | None, pipeline: Path | None = None) -> int:
    sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI's own argument parser: CPU only
    sys.path.insert(0, str(comfyui))
    import comfy.options

    comfy.options.enable_args_parsing()
    import torch
    from safetensors.torch import load_file

    version = {}
    exec((comfyui / "comfyui_version.py").read_text(), version)
    doc = {"comfyui": version["__version__"], "torch": torch.__version__, "families": {}}
    ok = True
    for folder in sorted(p for p in out.iterdir() if (p / "unet_shapes.json").exists()):
        base = load_file(str(folder / "kv_base.safetensors"))
        fam = {name: _lora(folder, files, want, base) for name, (files, want) in SCENARIOS.items()}
        fam["embeddings"] = _embeddings(folder, folder.name)
        for name, r in fam.items():
            if name == "embeddings":
                ok &= all(e["equal"] and not e["warnings"] for e in r.values())
            elif name != "diffusers format":
                ok &= not r["keys_not_loaded"] and r["patched_equals_changed"] and r["max_rel_delta_error"] <= 1e-5
        doc["families"][folder.name] = fam
        print(f"{folder.name}: done", file=sys.stderr)
    if pipeline:
        doc["pipeline_folder"] = _diffusers_folder(pipeline)  # recorded; its text encoder's grown vocabulary is refused
    doc["ok"] = ok
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    print(text)
    if result:
        result.write_text(text)
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="cns's venv: UNets on the meta device, banks, exports, cns's K/V weights")
    p.add_argument("out", type=Path)
    p.add_argument("--family", action="append", choices=sorted(UNETS), help="default: all three")
    c = sub.add_parser("check", help="ComfyUI's venv: load every LoRA and embedding with ComfyUI's code and compare")
    c.add_argument("out", type=Path)
    c.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout (its comfy/ package is imported)")
    c.add_argument("--result", type=Path, help="also write the JSON report here")
    c.add_argument("--pipeline", type=Path, help="also: an exported SD 1.x pipeline folder through ComfyUI's diffusers loader")
    args = ap.parse_args()
    if args.command == "prepare":
        prepare(args.out, args.family or list(UNETS))
    else:
        raise SystemExit(check(args.out, args.comfyui, args.result, args.pipeline))


if __name__ == "__main__":
    main()
