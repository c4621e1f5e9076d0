"""Train the demo base model: a real diffusers StableDiffusionPipeline (AutoencoderKL, CLIPTextModel with
its own BPE vocabulary, UNet2DConditionModel) on the procedural world of `cns_cli.demo.world`, at 64 px.

Reproducible: every random choice comes from `--seed`; the data is rendered, never downloaded
(`pairs.training_set`: single-object world renders of the training combinations, a fifth of them two-object
images "a red dog and a blue hat on grass"; held-out scene × class × colour triples are never shown).
`--world 2` trains on world 2 (marks: "a brown dog with white spots and a red collar") with its own, SD-like
proportions: a 64-wide text encoder and UNet channels 64 / 128 / 160, at least as wide as the text everywhere
(world 1's model: text 128 against 40 / 80 / 160). The pipeline's training.json records the world. Phases:
  1. VAE: reconstruction (MSE + L1) with a small KL term, on random 32 px crops of the renders. The VAE has
     no attention block, so it is fully convolutional and crops teach it exactly what full images need —
     at a seventh of the cost of 64 px batches on a CPU (1.2 s vs 8.5 s per batch-64 step, measured);
  2. with `--decoder-steps N` (world 2): the VAE's decoder trained further on the frozen encoder's latent means,
     which the UNet will learn to draw, so the pixels they decode to get sharper (SD's ft-MSE decoders did the
     same for a finished UNet; here it runs before the UNet, so OUT/vae is the VAE that ships);
  3. the latent scale: 1 / std of the VAE's latents (what SD's 0.18215 is for its VAE), then the latents
     of the whole pool, encoded once (the VAE is frozen from here on);
  4. UNet + text encoder from scratch: noise-prediction MSE on (latent, caption) pairs, with 10 % empty
     captions so that classifier-free guidance works. The tokenizer pads to 32 tokens, not CLIP's 77: the
     longest caption is 12, and cross-attention over 32 keys makes a step 18 % cheaper.
Every `--checkpoint-every` steps the run is checkpointed in OUT/checkpoints (`tools/checkpoint.py`: the weights,
the optimiser's state, the step and every RNG state, in safetensors + JSON), so `--resume` continues an
interrupted run exactly where it stopped: the same batches, noise and optimiser moments as a run that was never
interrupted. Every UNet checkpoint also writes OUT/latest (a loadable fp16 pipeline) so a run can be looked at
while it trains. The finished pipeline is saved with `save_pretrained` in float16 (≤ 25 MB) as OUT/pipeline, with
a `training.json` holding the settings, the final losses and the time taken per phase. When the VAE (and decoder)
phases end, its weights are rounded to the float16 they ship in and saved as OUT/vae (with `vae.json`: how it was made, its sha256);
`--vae EARLIER/vae` starts another run's UNet phase from it, so the phases can run in different sessions and the
result is the run that trained both (the UNet always trains on the shipped VAE's latents).

    python tools/train_demo_model.py OUT [--vae-steps N] [--unet-steps N] [--device auto] [--resume]
    python tools/train_demo_model.py OUT --world 2 --unet-steps 3200  # world 2 (see tools/README.md)
    python tools/train_demo_model.py OUT --init EARLIER/latest    # start from an earlier demo pipeline
    python tools/train_demo_model.py OUT --world 2 --vae EARLIER/vae  # the UNet phase on an earlier run's VAE
    python tools/train_demo_model.py OUT --quick                  # a smoke run of every phase, seconds

Cost on the project's 2-core CPU machine (measured in the run that made the bundled model, 2026-11-26, fp32;
bf16 autocast is far slower on a CPU without native bf16): VAE ≈1.4 s per batch-64 step at 32 px, encoding
the 40,000-image pool ≈6-8 min, UNet + text encoder ≈2.5 s per batch-64 step (1.8 s with nothing else on
the CPU) — the defaults take ≈2 h. A first run stopped at UNet step 1300 (≈83 k samples) drew scene and colour
but not object shapes (class accuracy 0.25). The bundled model continued from it (`--init run1/latest
--unet-steps 2200 --unet-lr 5e-4`, after the tokenizer fix; 1.8 h): 224 k samples in all, class accuracy
0.87 / 0.86 (seen / held-out). Budget ≥ 200 k samples for a model from scratch. On a GPU use `--device cuda`.
World 2 (`--world 2 --unet-steps 3200`: 205 k samples): rendering its 40,000-image pool ≈ 5 min, VAE ≈ 0.8 s per
step on a quiet machine, a UNet step ≈ 1.4x world 1's, so ≈ 3-4 h on a quiet machine (2026-12-02).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python tools/train_demo_model.py`: the repository root makes cns_cli and tools importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import checkpoint  # noqa: E402

IMAGE = 64
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 128), layers_per_block=1,
           norm_num_groups=16, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
           sample_size=IMAGE, mid_block_add_attention=False)
TOKENS = 32  # the tokenizer's model_max_length and the text encoder's positions (captions are ≤ 12 tokens)
# Cross-attention at every level: coarse levels carry layout words ("at the left"), the finest one the
# details a personal concept needs (and cns can only change cross-attention K/V).
UNET = dict(sample_size=IMAGE // 4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(40, 80, 160),
            down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=128, attention_head_dim=8, norm_num_groups=8)
TEXT = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=TOKENS)
# World 2: proportions like SD's (text 768 against UNet 320 / 640 / 1280), the UNet at least as wide as the text at
# every level and wider at 7 of its 10 cross-attention layers; one more text layer for binding marks to objects.
# 23.3 MB in fp16 with the VAE (the budget is 25 MB). A batch-64 UNet + text step cost 1.4x world 1's when measured
# side by side on the 2-core CPU (8.0 s against 5.7 s with other jobs running): the 16x16 level is 2.6x the work
# (64² / 40²), the narrower text encoder and cross-attention give some back.
# Its VAE has 8 latent channels (SD 1.x: 4, SD 3: 16): a 4x4-pixel latent cell has to carry marks 2-3 pixels
# wide. 4 lost stripy's stripes and globe's spots; 8 does better but still loses them on small objects
# (docs/demo-world.md, World 2): not final.
VAE_V2 = {**VAE, "latent_channels": 8}
UNET_V2 = {**UNET, "in_channels": 8, "out_channels": 8, "block_out_channels": (64, 128, 160), "cross_attention_dim": 64}
TEXT_V2 = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=TOKENS)
ARCH = {1: (VAE, UNET, TEXT), 2: (VAE_V2, UNET_V2, TEXT_V2)}  # world -> (VAE, UNet, text encoder) configs


@dataclass
class Settings:
    seed: int = 0
    world: int = 1  # the demo world to train on (cns_cli.demo.stage.WORLDS); also picks the architecture (ARCH)
    vae_steps: int = 2000
    vae_batch: int = 64
    vae_crop: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 1600
    unet_batch: int = 64
    unet_lr: float = 8e-4
    caption_dropout: float = 0.1
    # the decoder phase (after the VAE's, before the UNet's; 0 = none, as for world 1's bundled model): the VAE
    # decoder trained further on the frozen encoder's latent means
    decoder_steps: int = 0
    decoder_lr: float = 3e-4
    pool: int = 40_000  # renders drawn once and reused (rendering on the fly would cost ~10 % of a step)
    checkpoint_every: int = 100


QUICK = dict(vae_steps=2, vae_batch=2, unet_steps=2, unet_batch=2, decoder_steps=2, pool=16, checkpoint_every=1)


def demo_tokenizer(world: int = 1):
    from cns_cli.demo.pairs import PAIR_WORDS
    from cns_cli.demo.world import vocabulary
    from cns_cli.model.tiny import word_tokenizer

    return word_tokenizer(sorted({*vocabulary(world), *PAIR_WORDS}), model_max_length=TOKENS)


def build_untrained(seed: int, world: int = 1):
    """The demo pipeline of `world` with random weights (the shapes are the model's; training fills them in)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae_config, unet_config, text_config = ARCH[world]
    tokenizer = demo_tokenizer(world)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                                **text_config))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=AutoencoderKL(**vae_config), text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=UNet2DConditionModel(**unet_config), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def _to_tensor(images_uint8, device):
    import torch

    x = torch.from_numpy(images_uint8).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _log(out: Path, msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(out / "training.log", "a") as f:
        f.write(line + "\n")


def _cosine(step: int, total: int, lr: float, warmup: int = 50) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _modules(pipe) -> dict:
    return {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder}


def _loss(value) -> float:
    return float("nan") if value is None else float(value)


def _resume_point(resume: checkpoint.Checkpoint | None, opt, phase: str, gen, device: str) -> tuple[int, float]:
    """(first step, running loss) of a phase: (0, nan) from scratch, else the checkpoint's, with the optimiser's
    state and the phase's batch generator restored from it."""
    if resume is None:
        return 0, float("nan")
    resume.restore(opt, {phase: gen}, device)
    return resume.step, _loss(resume.info["loss_avg"])


def _save(out: Path, phase: str, step: int, pipe, s: Settings, loss_avg: float, vae_loss: float | None = None,
          optimizer=None, gen=None, device: str = "cpu") -> None:
    """One checkpoint of the run (every module's weights, so each checkpoint resumes on its own)."""
    info = {"phase": phase, "step": step, "loss_avg": loss_avg, "vae_loss": vae_loss, "settings": asdict(s)}
    checkpoint.save(out / "checkpoints", f"{phase}-{step:06d}", info, _modules(pipe), optimizer,
                    {phase: gen} if gen is not None else None, device)


def _crop_batch(pool, s: Settings, gen, device: str):
    """`s.vae_batch` random pool images, one random `s.vae_crop` px crop shared by the batch, as [B, 3, crop, crop]
    in [-1, 1] (the VAE and decoder phases' batches; `gen` draws the images, then the crop)."""
    import torch

    idx = torch.randint(0, len(pool), (s.vae_batch,), generator=gen).numpy()
    y0, x0 = torch.randint(0, IMAGE - s.vae_crop + 1, (2,), generator=gen).tolist()
    return _to_tensor(pool[idx, y0 : y0 + s.vae_crop, x0 : x0 + s.vae_crop], device)


def train_vae(pipe, pool, s: Settings, device: str, out: Path, resume: checkpoint.Checkpoint | None = None,
              amp=None) -> float:
    """The VAE phase from step 0, or from `resume` (a VAE-phase checkpoint): its optimiser state, batch
    generator and RNG states continue where they stopped."""
    import contextlib

    import torch
    import torch.nn.functional as F

    vae = pipe.vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(s.seed + 1)
    start, loss_avg = _resume_point(resume, opt, "vae", gen, device)
    for step in range(start, s.vae_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine(step, s.vae_steps, s.vae_lr)
        x = _crop_batch(pool, s, gen, device)
        with (amp or contextlib.nullcontext)():
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(generator=None)).sample.float()  # torch's global RNG, checkpointed too
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + s.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_avg = float(loss.detach()) if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * float(loss.detach())
        if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.vae_steps:
            _save(out, "vae", step + 1, pipe, s, loss_avg, optimizer=opt, gen=gen, device=device)
            _log(out, f"vae step {step + 1}/{s.vae_steps} loss {loss_avg:.5f}")
    return loss_avg


def train_decoder(pipe, pool, s: Settings, device: str, out: Path, resume: checkpoint.Checkpoint | None = None,
                  amp=None, vae_loss: float | None = None) -> float:
    """The decoder phase: the VAE's decoder (and post-quant conv) trained further, reconstruction loss only, on the
    latent means of the frozen encoder: the latents the UNet learns to draw do not change, only how they are
    turned into pixels (as SD's ft-MSE VAE decoders were fine-tuned for an already trained UNet). A decoder step
    costs about half a VAE step (no encoder gradients). From step 0, or from `resume` (a decoder-phase
    checkpoint)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    vae = pipe.vae.to(device).train()
    vae.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=s.decoder_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(s.seed + 3)
    start, loss_avg = _resume_point(resume, opt, "decoder", gen, device)
    for step in range(start, s.decoder_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine(step, s.decoder_steps, s.decoder_lr)
        x = _crop_batch(pool, s, gen, device)
        with (amp or contextlib.nullcontext)():
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mean  # what the UNet's latents are: means, never samples
            rec = vae.decode(z).sample.float()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_avg = float(loss.detach()) if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * float(loss.detach())
        if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.decoder_steps:
            _save(out, "decoder", step + 1, pipe, s, loss_avg, vae_loss, optimizer=opt, gen=gen, device=device)
            _log(out, f"decoder step {step + 1}/{s.decoder_steps} loss {loss_avg:.5f}")
    vae.requires_grad_(True)
    return loss_avg


def encode_pool(pipe, pool, device: str, batch: int = 256):
    """The latent means of every pool image, float32 [N, C, 16, 16] on the CPU (unscaled), in the standard memory
    layout: the encoder may hand them out channels-last, and the UNet's kernels then sum in another order than on
    the same latents read back from the cache (so a resumed run would differ from an uninterrupted one in the
    last bits)."""
    import torch

    vae = pipe.vae.to(device).eval()
    with torch.no_grad():
        parts = [vae.encode(_to_tensor(pool[i : i + batch], device)).latent_dist.mean.float().cpu()
                 for i in range(0, len(pool), batch)]
    return torch.cat(parts).contiguous()


def _weights_sha256(module, prefixes: tuple[str, ...] = ("",)) -> str:
    """sha256 of `module`'s weights whose names start with one of `prefixes` (default: all)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        if not k.startswith(prefixes):
            continue
        h.update(k.encode() + b"\0" + v.detach().to("cpu").float().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_latents(pipe, pool, s: Settings, device: str, folder: Path):
    """The pool's latents, from `folder/latents.safetensors` when it was made by these exact encoder weights for the
    same pool (seed, size), else encoded and saved there — so `--resume` into the UNet phase does not spend
    minutes re-encoding."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    # the latents depend on the encoder and the quant conv only (the decoder phase changes neither)
    key = {"encoder_sha256": _weights_sha256(pipe.vae, ("encoder.", "quant_conv.")), "pool": str(s.pool),
           "seed": str(s.seed)}
    path = folder / "latents.safetensors"
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            if f.metadata() == key:
                return f.get_tensor("latents")
    latents = encode_pool(pipe, pool, device)
    save_file({"latents": latents.contiguous()}, str(path), metadata=key)
    return latents


def round_to_fp16(module) -> None:
    """Round `module`'s weights to the float16 values it ships with, in place (kept float32). Done to the VAE
    when its phase ends, so the UNet trains on the latents of exactly the shipped VAE, and a run whose VAE came
    from OUT/vae (`--vae`, stored in fp16) is the same run as one that trained it."""
    import torch

    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())


VAE_RECORD = "vae.json"


def save_vae(vae, path: Path, record: dict) -> None:
    """OUT/vae: the trained VAE (fp16 `save_pretrained`) and `vae.json` (how it was made, its weights' sha256),
    what `--vae` starts a later run's UNet phase from."""
    import copy

    import torch

    copy.deepcopy(vae).to("cpu", torch.float16).save_pretrained(path, safe_serialization=True)
    (path / VAE_RECORD).write_text(json.dumps({**record, "vae_weights_sha256": _weights_sha256(vae)}, indent=2) + "\n")


def world_digest(world: int, n: int = 64) -> str:
    """sha256 of the first `n` training renders and captions of `world` (seed 0): which version of the world a VAE
    was trained on, so a VAE from before a change to the renderer is refused rather than silently reused."""
    import hashlib

    from cns_cli.demo.pairs import training_set

    images, captions = training_set(n, seed=0, world=world)
    return hashlib.sha256(images.tobytes() + "\n".join(captions).encode()).hexdigest()


def load_vae(pipe, path: Path, world: int) -> dict:
    """Put the VAE saved in `path` (`save_vae`) into `pipe`; its record. SystemExit when it is not a VAE of
    `world`'s architecture or its weights are not the ones its record describes."""
    from diffusers import AutoencoderKL

    record_path = Path(path) / VAE_RECORD
    if not record_path.is_file():
        raise SystemExit(f"--vae {path}: no {VAE_RECORD}; pass the OUT/vae folder a run of this script wrote")
    record = json.loads(record_path.read_text())
    expected = ARCH[world][0]
    vae = AutoencoderKL.from_pretrained(path)
    wrong = [k for k, v in expected.items() if (tuple(c) if isinstance(c := vae.config[k], list) else c) != v]
    if record.get("world") != world or wrong:
        raise SystemExit(f"--vae {path}: a VAE of world {record.get('world')} ({', '.join(wrong) or 'same shape'}"
                         f" differs); this run trains world {world}")
    pipe.vae.load_state_dict(vae.float().state_dict())
    if _weights_sha256(pipe.vae) != record["vae_weights_sha256"]:
        raise SystemExit(f"--vae {path}: its weights are not the ones {VAE_RECORD} records (damaged or edited)")
    if record.get("world_digest") != world_digest(world):
        raise SystemExit(f"--vae {path}: trained on renders of an earlier version of world {world}; train a new VAE"
                         " (run without --vae)")
    return record


def latent_scale(latents) -> float:
    return float(1.0 / latents[:4096].std())


def train_unet(pipe, latents, captions, s: Settings, device: str, out: Path,
               resume: checkpoint.Checkpoint | None = None, vae_loss: float | None = None, amp=None) -> float:
    """UNet and text encoder together, on (latent, caption) pairs; 10 % empty captions for CFG. `latents`:
    the pool's unscaled latent means [N, C, 16, 16]. From step 0, or from `resume` (a UNet-phase checkpoint)."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    unet, te = pipe.unet.to(device).train(), pipe.text_encoder.to(device).train()
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=s.unet_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(s.seed + 2)
    scale = pipe.vae.config.scaling_factor
    start, loss_avg = _resume_point(resume, opt, "unet", gen, device)
    for step in range(start, s.unet_steps):
        for g in opt.param_groups:
            g["lr"] = _cosine(step, s.unet_steps, s.unet_lr)
        idx = torch.randint(0, len(latents), (s.unet_batch,), generator=gen).numpy()
        drop = torch.rand(s.unet_batch, generator=gen) < s.caption_dropout
        texts = ["" if d else captions[i] for i, d in zip(idx, drop.tolist())]
        amp_ctx = amp or contextlib.nullcontext
        lat = latents[idx].to(device) * scale
        ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (s.unet_batch,), generator=gen).to(device)
        noise = torch.randn(lat.shape, generator=gen).to(device)
        with amp_ctx():
            states = te(ids.to(device))[0]
            pred = unet(noise_sched.add_noise(lat, noise, t), t, encoder_hidden_states=states).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_avg = float(loss.detach()) if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * float(loss.detach())
        if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.unet_steps:
            _save(out, "unet", step + 1, pipe, s, loss_avg, vae_loss, optimizer=opt, gen=gen, device=device)
            save_pipeline(pipe, out / "latest", s.world)
            _log(out, f"unet step {step + 1}/{s.unet_steps} loss {loss_avg:.5f}")
    return loss_avg


CALIBRATION_SEED = 5_000


def calibration_captions(n: int = 280, seed: int = CALIBRATION_SEED, world: int = 1) -> list[str]:
    """`n` distinct captions of the demo world `world` (any combination, a fifth of them pairs): the demo model's
    own calibration set for `cns learn` (`prompts.MODEL_CALIBRATION_FILE`) — the bundled everyday English prompts
    are byte soup to its 600-token vocabulary."""
    import numpy as np

    from cns_cli.demo.pairs import PAIR_SHARE, pair_caption, sample_pair
    from cns_cli.demo.world import caption, sample_specs

    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        if rng.random() < PAIR_SHARE:
            out[pair_caption(*sample_pair(rng, world), rng)] = None
        else:
            out[caption(sample_specs(1, rng, held_out=None, world=world)[0], rng)] = None
    return list(out)


def save_pipeline(pipe, path: Path, world: int = 1) -> int:
    """Save an fp16 copy of `pipe` (left untouched, still training) with `save_pretrained`, plus its calibration
    prompts (captions of `world`) and a training.json naming the world (the final one adds the run's record);
    returns the folder's bytes."""
    import copy

    import torch

    from cns_cli.prompts import MODEL_CALIBRATION_FILE

    copy.deepcopy(pipe).to("cpu", torch.float16).save_pretrained(path, safe_serialization=True)
    (path / MODEL_CALIBRATION_FILE).write_text("# captions of the demo world (tools/train_demo_model.py, calibration_captions)\n"
                                               + "\n".join(calibration_captions(world=world)) + "\n")
    (path / "training.json").write_text(json.dumps({"world": world}, indent=2) + "\n")
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python tools/train_demo_model.py", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    for f in Settings.__dataclass_fields__.values():
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto: bf16 autocast on a GPU, fp32 on CPU; bf16 also works on CPU")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints exactly where the run stopped")
    start = ap.add_mutually_exclusive_group()  # both say where the VAE comes from
    start.add_argument("--init", type=Path, help="start from this earlier demo pipeline folder (VAE phase skipped; see warm_start.py)")
    start.add_argument("--vae", type=Path, help="take the VAE from this OUT/vae of an earlier run (VAE phase skipped)")
    ap.add_argument("--quick", action="store_true", help="a few steps of every phase, tiny batches (smoke test)")
    return ap.parse_args(argv)


INIT_RECORD = "init-training.json"  # in OUT: the --init model's training.json as it was when its weights were taken


def _keep_init_record(init: Path, out: Path) -> None:
    """Copy `init/training.json` (how the earlier model was made, refinements included) into OUT when its weights
    are taken, so the final record describes those weights even if `init` is replaced before the run ends."""
    record = init / "training.json"
    doc = json.loads(record.read_text()) if record.is_file() else None
    (out / INIT_RECORD).write_text(json.dumps(doc, indent=2) + "\n")


def _init_record(out: Path):
    """The record `_keep_init_record` kept for this run (None: no --init, or an earlier model without one)."""
    path = out / INIT_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from cns_cli.demo.pairs import training_set
    from cns_cli.model.loading import quiet_libraries
    from cns_cli.model.runtime import autocast, resolve_device, resolve_precision

    quiet_libraries()
    s = Settings(**{k: getattr(args, k) for k in Settings.__dataclass_fields__})
    if args.quick:
        s = Settings(seed=s.seed, world=s.world, **QUICK)
    if s.world not in ARCH:
        raise SystemExit(f"--world {s.world}: the demo worlds are {', '.join(map(str, ARCH))}")
    times: dict[str, float] = {}
    device = resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)
    amp = lambda: autocast(device, dtype)  # noqa: E731 - a fresh context per pass; weights stay fp32
    out = args.out
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(s.seed)
    pipe = build_untrained(s.seed, s.world)
    given = load_vae(pipe, args.vae, s.world) if args.vae else None  # checked before minutes of rendering
    _log(out, f"rendering a pool of {s.pool} training images of world {s.world} (seed {s.seed})")
    pool, captions = training_set(s.pool, seed=s.seed, world=s.world)
    times["render"] = time.time() - t0
    ck = checkpoint.load(out / "checkpoints") if args.resume else None
    resumed = ck is not None
    if ck is not None:
        if (was := ck.info["settings"].get("world", 1)) != s.world:
            raise SystemExit(f"{out}: that run trains world {was}; resume it with --world {was}")
        ck.load_modules(_modules(pipe))
        changed = {k: (v, asdict(s)[k]) for k, v in ck.info["settings"].items() if asdict(s).get(k) != v}
        _log(out, f"resuming at {ck.info['phase']} step {ck.step}"
             + (f"; settings changed since (checkpoint, now): {changed}" if changed else ""))
        given = None  # the checkpoint holds the VAE the run trains on
    elif given is not None:  # a VAE trained by an earlier run: straight to the UNet phase, UNet and text from scratch
        _log(out, f"VAE from {args.vae} (trained {given['vae_steps']} steps, loss {given['final_vae_loss']:.5f})")
    elif args.init:  # the earlier model's VAE is kept: go straight to the UNet phase
        from tools.warm_start import warm_start

        embedding_rows = warm_start(pipe, args.init)
        _keep_init_record(args.init, out)
        _log(out, f"warm start from {args.init}: token embeddings {embedding_rows}")
        _save(out, "unet", 0, pipe, s, float("nan"))  # a fresh optimiser: what --resume of it starts with too
        ck = checkpoint.load(out / "checkpoints")
    phase = ck.info["phase"] if ck is not None else None
    vae_done = ck is not None and (phase != "vae" or ck.step >= s.vae_steps)
    t = time.time()
    if given is not None:
        vae_loss = given["final_vae_loss"]
    elif vae_done:
        vae_loss = ck.info["vae_loss"] if phase != "vae" else ck.info["loss_avg"]
    else:
        vae_loss = train_vae(pipe, pool, s, device, out, resume=ck, amp=amp)
    if phase in (None, "vae"):  # later checkpoints hold a rounded encoder (and a decoder trained after rounding)
        round_to_fp16(pipe.vae)
    times["vae"] = time.time() - t
    t = time.time()
    decoder_loss = given.get("final_decoder_loss") if given is not None else None
    if s.decoder_steps and given is None and not args.init and phase in (None, "vae", "decoder"):
        decoder_loss = train_decoder(pipe, pool, s, device, out, resume=ck if phase == "decoder" else None, amp=amp,
                                     vae_loss=vae_loss)
        round_to_fp16(pipe.vae)
    times["decoder"] = time.time() - t
    if not (out / "vae" / VAE_RECORD).is_file():
        made_here = {"world": s.world, "seed": s.seed, "pool": s.pool, "vae_steps": s.vae_steps, "vae_batch": s.vae_batch,
                     "vae_crop": s.vae_crop, "vae_lr": s.vae_lr, "kl_weight": s.kl_weight,
                     "decoder_steps": s.decoder_steps, "decoder_lr": s.decoder_lr, "world_digest": world_digest(s.world),
                     "final_vae_loss": vae_loss, "final_decoder_loss": decoder_loss,
                     "from": str(args.init) if args.init else "trained by this run"}
        save_vae(pipe.vae, out / "vae", given or made_here)
    elif decoder_loss is None and given is None:  # resumed in the UNet phase: the record has the decoder's loss
        decoder_loss = json.loads((out / "vae" / VAE_RECORD).read_text()).get("final_decoder_loss")
    t = time.time()
    latents = cached_latents(pipe, pool, s, device, out / "checkpoints")
    pipe.vae.register_to_config(scaling_factor=latent_scale(latents))
    times["encode"] = time.time() - t
    _log(out, f"encoded {len(latents)} latents in {times['encode']:.0f} s; scale {pipe.vae.config.scaling_factor:.4f}")
    t = time.time()
    unet_ck = ck if phase == "unet" and ck.step > 0 else None
    unet_loss = train_unet(pipe, latents, captions, s, device, out, resume=unet_ck, vae_loss=vae_loss, amp=amp)
    times["unet"] = time.time() - t
    final = out / "pipeline"
    size = save_pipeline(pipe, final, s.world)
    info = {"world": s.world, "settings": asdict(s), "device": device, "precision": args.precision, "torch": torch.__version__,
            "seconds": round(time.time() - t0, 1), "phase_seconds": {k: round(v, 1) for k, v in times.items()},
            "resumed": resumed, "init": str(args.init) if args.init else None,
            "init_training": _init_record(out),  # the earlier model's own record: every run that made it
            "vae": str(args.vae) if args.vae else None, "final_vae_loss": vae_loss,
            "final_unet_loss": unet_loss, "final_decoder_loss": decoder_loss,
            "latent_scale": pipe.vae.config.scaling_factor, "bytes": size}
    (final / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    _log(out, f"saved {final} ({info['bytes'] / 1e6:.1f} MB) in {info['seconds']:.0f} s")


if __name__ == "__main__":
    main()
