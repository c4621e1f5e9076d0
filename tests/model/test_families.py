"""Model families below the CLI (issue 16): the tiny SD 2.x-v and SDXL builders, single-file checkpoints and their
config folders, family detection, the text states each family's UNet reads, the v-prediction target, and
applying / removing a bank on an SDXL pipeline (tokens in both encoders, removal bit for bit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cns_cli.errors import ModelError
from cns_cli.model import family as families
from tools.ldm_checkpoint import config_folder, save_single_file
from cns_cli.model.loading import describe_base, detect_family, kv_layers, load_pipeline, resolve_base
from cns_cli.model.text import TextConditioner, text_pairs

FAMILIES = {"sd1": "tiny_base", "sd2": "tiny_sd2v", "sdxl": "tiny_sdxl"}


@pytest.fixture(scope="module")
def folders(request) -> dict[str, str]:
    return {fam: request.getfixturevalue(name) for fam, name in FAMILIES.items()}


@pytest.fixture(scope="module")
def pipes(folders) -> dict:
    return {fam: load_pipeline(resolve_base(path)) for fam, path in folders.items()}


@pytest.fixture(scope="module")
def single_files(pipes, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("single")
    return {fam: save_single_file(pipe, out / f"{fam}.safetensors") for fam, pipe in pipes.items()}


def weights(pipe) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v for part in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, part, None)
            is not None for k, v in getattr(pipe, part).state_dict().items()}


def test_tiny_builders_have_the_shapes_of_their_family(pipes):
    sd2, xl = pipes["sd2"], pipes["sdxl"]
    assert sd2.scheduler.config.prediction_type == "v_prediction" and sd2.text_encoder.config.hidden_act == "gelu"
    assert {m.in_features for m in kv_layers(sd2.unet).values()} == {64}
    assert type(xl).__name__ == "StableDiffusionXLPipeline" and len(kv_layers(xl.unet)) == 24
    assert {m.in_features for m in kv_layers(xl.unet).values()} == {32 + 64}
    widths = [enc.get_input_embeddings().weight.shape[1] for _, enc in text_pairs(xl)]
    assert widths == [32, 64]  # different widths: single-file loading tells the encoders apart by width
    assert type(xl.text_encoder_2).__name__ == "CLIPTextModelWithProjection" and xl.unet.config.addition_embed_type == "text_time"
    assert xl.tokenizer_2.pad_token == "!" != xl.tokenizer.pad_token


@pytest.mark.parametrize("fam", FAMILIES)
def test_family_is_detected_from_folder_checkpoint_and_pipeline(fam, folders, pipes, single_files):
    assert families.family_of_folder(Path(folders[fam])) == fam
    assert families.family_of_checkpoint(single_files[fam]) == fam
    assert families.family_of_pipeline(pipes[fam]) == fam


@pytest.mark.parametrize("fam", FAMILIES)
def test_single_file_with_a_weightless_config_folder_loads_the_same_weights(fam, pipes, single_files, folders, tmp_path):
    spec = resolve_base(str(single_files[fam]), config_folder(folders[fam], tmp_path / "cfg"))
    loaded = load_pipeline(spec)
    assert type(loaded) is type(pipes[fam])
    a, b = weights(pipes[fam]), weights(loaded)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pointer = describe_base(spec, loaded)
    assert (pointer.kind, pointer.family, pointer.config) == ("single-file", fam, str((tmp_path / "cfg").resolve()))
    assert pointer.fingerprint == describe_base(resolve_base(folders[fam]), pipes[fam]).fingerprint


def test_base_pointer_records_family_prediction_and_encoder_widths(pipes, folders):
    xl = describe_base(resolve_base(folders["sdxl"]), pipes["sdxl"])
    assert (xl.family, xl.prediction_type, xl.embedding_dims, xl.text_dim, xl.config) == ("sdxl", "epsilon", [32, 64], 96, None)
    sd2 = describe_base(resolve_base(folders["sd2"]), pipes["sd2"])
    assert (sd2.family, sd2.prediction_type, sd2.embedding_dims, sd2.text_dim) == ("sd2", "v_prediction", [64], 64)
    assert describe_base(resolve_base(folders["sd1"]), pipes["sd1"]).family == "sd1"


def test_single_file_without_config_offline_says_to_pass_config(single_files):
    with pytest.raises(ModelError, match=r"pass --config DIR, a diffusers folder of an SDXL model"):
        detect_family(resolve_base(str(single_files["sdxl"])))


def test_config_folder_of_another_family_is_refused(single_files, folders):
    spec = resolve_base(str(single_files["sdxl"]), folders["sd2"])
    with pytest.raises(ModelError, match="is an SD 2.x model but .* is an SDXL checkpoint"):
        detect_family(spec)
    with pytest.raises(ModelError, match="is an SD 1.x model but .* is an SD 2.x checkpoint"):
        detect_family(resolve_base(str(single_files["sd2"]), folders["sd1"]))


def _folder(tmp_path: Path, index: dict, unet: dict | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    if unet is not None:
        (tmp_path / "unet").mkdir()
        (tmp_path / "unet" / "config.json").write_text(json.dumps(unet))
    return tmp_path


@pytest.mark.parametrize("cls, words", [("StableDiffusion3Pipeline", "is SD 3"), ("FluxPipeline", "is Flux"),
                                        ("StableDiffusionXLImg2ImgPipeline", "SDXL refiner"),
                                        ("SomethingNewPipeline", "is a SomethingNewPipeline")])
def test_unsupported_pipelines_are_refused_before_loading(cls, words, tmp_path):
    with pytest.raises(ModelError, match=words) as e:
        detect_family(resolve_base(str(_folder(tmp_path / "m", {"_class_name": cls}))))
    assert "cns works on SD 1.x, SD 2.x and SDXL" in str(e.value) and "\n" not in str(e.value)


def test_unet_without_cross_attention_is_refused(tmp_path):
    unet = {"down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"], "mid_block_type": "UNetMidBlock2D"}
    folder = _folder(tmp_path / "m", {"_class_name": "StableDiffusionPipeline"}, unet)
    with pytest.raises(ModelError, match="a UNet without cross-attention"):
        detect_family(resolve_base(str(folder)))


@pytest.mark.parametrize("keys, words", [
    (["model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight"], "SD 3"),
    (["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"], "Flux"),
    (["model.diffusion_model.input_blocks.0.0.weight"], "UNet without cross-attention"),
    (["first_stage_model.encoder.conv_in.weight"], "not a Stable Diffusion checkpoint"),
])
def test_unsupported_checkpoints_are_refused_from_their_tensor_names(keys, words, tmp_path):
    from safetensors.numpy import save_file
    import numpy as np

    path = tmp_path / "m.safetensors"
    save_file({k: np.zeros((1, 4, 1, 1), np.float32) for k in keys}, str(path))
    with pytest.raises(ModelError, match=words):
        families.family_of_checkpoint(path)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="not a readable .safetensors"):
        families.family_of_checkpoint(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("fam", ["sd2", "sdxl"])
def test_text_states_are_those_of_the_family_pipeline(fam, pipes):
    """SD 2.x: text_encoder(ids)[0]; SDXL: both encoders' penultimate states concatenated, pooled text of the
    second, time ids (H, W, 0, 0, H, W): exactly what the pipeline's encode_prompt and _get_add_time_ids give."""
    pipe, texts = pipes[fam], ["a photo of a dog", "a red car on the beach"]
    with torch.no_grad():
        got = TextConditioner(pipe, 32)(texts)
        ref = pipe.encode_prompt(texts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert torch.equal(got.states, ref[0])
    if fam == "sd2":
        assert got.added is None
        return
    assert torch.equal(got.added["text_embeds"], ref[2])
    ids = pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), dtype=torch.float32, text_encoder_projection_dim=64)
    assert torch.equal(got.added["time_ids"], ids.expand(2, -1))


def test_v_prediction_trains_against_the_velocity():
    from diffusers import DDPMScheduler

    from cns_cli.model.train import diffusion_loss

    sched = DDPMScheduler(prediction_type="v_prediction")
    lat = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (2,), generator=g)
    noise = torch.randn(lat.shape, generator=g)
    velocity = sched.get_velocity(lat, noise, t)

    class Oracle(torch.nn.Module):  # predicts the velocity exactly: the v loss is 0, an epsilon loss would not be
        def forward(self, x, t, encoder_hidden_states):
            return type("Out", (), {"sample": velocity})

    assert diffusion_loss(Oracle(), sched, lat, None, torch.Generator().manual_seed(5)).item() == 0.0
    eps = DDPMScheduler(prediction_type="epsilon")
    assert diffusion_loss(Oracle(), eps, lat, None, torch.Generator().manual_seed(5)).item() > 0.1


def test_model_facts_of_a_single_file_come_from_its_config_folder(single_files, folders):
    from cns_cli.checks import model_facts

    spec = resolve_base(str(single_files["sdxl"]), folders["sdxl"])
    assert model_facts(spec) == model_facts(resolve_base(folders["sdxl"])) and model_facts(spec).native == 32
