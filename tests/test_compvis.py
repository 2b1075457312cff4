"""Original CompVis checkpoints → ldm_hub, checked against the original code (tests/compvis_oracle.py).

For every model of the released LDM zoo: build the original modules with that model's YAML structure (scaled-down
channels by default, the real size in the slow tests) with every parameter random, save a Lightning-style .ckpt
in the original key layout, convert it through the public API, and require the converted UNet / encoder /
quantiser / decoder to give the original's outputs (fp32, ``assert_close(rtol=1e-4, atol=...)``; the max abs
diff reached is printed, run with ``-s``). The converted pipeline then samples 2 steps end to end. Also: the DDIM
and PLMS samplers step by step against ``DDIMSampler`` / ``PLMSSampler``, EMA vs raw weights, .safetensors
input, the unsafe-pickle refusal, YAML/checkpoint mismatches and key errors, and ``ldm-hub convert``.
"""

from __future__ import annotations

import datetime
import gc
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import compvis_oracle as oracle
import pytest
import torch
import yaml

from ldm_hub import AutoencoderKL, LDMPipeline, PLMSScheduler, VQModel
from ldm_hub.cli import main as cli_main
from ldm_hub.convert.common import ConversionError
from ldm_hub.loading import ModelFileError

RTOL = 1e-4
UNET_ATOL = 1e-4  # outputs are O(1) after 25+ random ResBlocks; reached ~6e-5 (oneDNN packed convs), ~5e-6 without
AUTOENCODER_ATOL = 3e-5  # reached ~1.4e-5
SAMPLER_ATOL = 1e-5  # plus rtol: x_t grows to O(60) at η = 1 (random ε_θ); reached 5e-5 there (float32 rounding)

# Every model of the list: a name missing from the oracle's ZOO fails test_every_zoo_model_is_tested.
ZOO_NAMES = [
    "txt2img-1p4B", "text2img256", "layout2img-openimages256", "semantic_synthesis256", "semantic_synthesis512",
    "bsr_sr", "inpainting_big", "cin256", "cin256-v2", "celebahq", "ffhq", "lsun-bedrooms", "lsun-churches",
    "kl-f4", "kl-f8", "kl-f16", "kl-f32", "vq-f4", "vq-f4-noattn", "vq-f8", "vq-f8-n256", "vq-f16",
]  # fmt: skip
# The conditioning mode each converted LDM must report (LDMPipeline.conditioning).
MODES = {
    "txt2img-1p4B": "text", "text2img256": "text", "layout2img-openimages256": "layout",
    "semantic_synthesis256": "semantic", "semantic_synthesis512": "semantic", "bsr_sr": "superres",
    "inpainting_big": "inpaint", "cin256": "class", "cin256-v2": "class", "celebahq": "unconditional",
    "ffhq": "unconditional", "lsun-bedrooms": "unconditional", "lsun-churches": "unconditional",
}  # fmt: skip
FULL_SIZE = ["bsr_sr", "lsun-churches", "layout2img-openimages256", "kl-f8", "vq-f4-noattn"]


def test_every_zoo_model_is_tested():
    assert sorted(oracle.ZOO) == sorted(ZOO_NAMES)
    assert sorted(MODES) == sorted(oracle.LDMS)


def _write_yaml(config, path: Path) -> Path:
    path.write_text(yaml.safe_dump({"model": config}, sort_keys=False))
    return path


def _report(name: str, diffs: dict[str, float]) -> None:
    print(f"\n{name}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


@torch.no_grad()
def _check_autoencoder(ours, theirs: oracle.OriginalFirstStage, diffs: dict, side: int = 64) -> None:
    """Encoder, quantiser and decoder outputs of the converted autoencoder against the original's."""
    x = oracle.image_input(side=side)
    if theirs.kl:
        posterior, expected = ours.encode(x).latent_dist, theirs.encode(x)
        torch.testing.assert_close(posterior.mean, expected.mean, rtol=RTOL, atol=AUTOENCODER_ATOL)
        torch.testing.assert_close(posterior.logvar, expected.logvar, rtol=RTOL, atol=AUTOENCODER_ATOL)
        diffs["encoder"] = max(oracle.max_abs(posterior.mean, expected.mean),
                               oracle.max_abs(posterior.logvar, expected.logvar))  # fmt: skip
        z = expected.mean
    else:
        z = theirs.encode(x)
        latents = ours.encode(x).latents
        torch.testing.assert_close(latents, z, rtol=RTOL, atol=AUTOENCODER_ATOL)
        diffs["encoder"] = oracle.max_abs(latents, z)
        z_q, loss, indices = ours.quantize(z)
        z_q_ref, loss_ref, (_, _, indices_ref) = theirs.quantize(z)
        assert torch.equal(indices.flatten(), indices_ref.flatten())
        torch.testing.assert_close(z_q, z_q_ref, rtol=0, atol=0)
        torch.testing.assert_close(loss, loss_ref, rtol=RTOL, atol=1e-7)
        diffs["quantiser"] = max(oracle.max_abs(z_q, z_q_ref), oracle.max_abs(loss, loss_ref))
    decoded, expected = ours.decode(z).sample, theirs.decode(z)
    torch.testing.assert_close(decoded, expected, rtol=RTOL, atol=AUTOENCODER_ATOL)
    diffs["decoder"] = oracle.max_abs(decoded, expected)


@torch.no_grad()
def _check_unet(unet, theirs, config, diffs: dict, key: str = "unet") -> None:
    inputs = oracle.unet_inputs(config)
    expected = theirs(**inputs)
    out = unet(inputs["x"], inputs["timesteps"], encoder_hidden_states=inputs.get("context")).sample
    torch.testing.assert_close(out, expected, rtol=RTOL, atol=UNET_ATOL)
    diffs[key] = oracle.max_abs(out, expected)


def _e2e_inputs(pipe: LDMPipeline) -> dict:
    """The smallest valid input of the pipeline's conditioning mode."""
    side = pipe.vae_scale_factor * pipe.unet_downsampling  # one 1×1 cell at the UNet's lowest level
    gen = torch.Generator().manual_seed(3)
    mode = pipe.conditioning
    if mode == "text":
        return {"prompt": "a red circle", "guidance_scale": 2.0, "height": side, "width": side}
    if mode == "layout":
        return {"layout": [{"label": 3, "box": [0.1, 0.2, 0.6, 0.9]}], "guidance_scale": 2.0,
                "height": side, "width": side}  # fmt: skip
    if mode == "class":
        return {"class_labels": [7], "height": side, "width": side}
    if mode == "semantic":
        classes = pipe.cond_encoder.config.num_classes
        return {"segmentation": torch.randint(0, classes, (1, side, side), generator=gen)}
    if mode == "superres":
        return {"image": torch.rand(1, 3, pipe.unet_downsampling, pipe.unet_downsampling, generator=gen) * 2 - 1}
    if mode == "inpaint":
        mask = torch.zeros(1, 1, side, side)
        mask[..., : side // 2] = 1
        return {"image": torch.rand(1, 3, side, side, generator=gen) * 2 - 1, "mask_image": mask}
    return {"height": side, "width": side}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_parity(name, tmp_path):
    """Convert a tiny version of each zoo model and match the original UNet / encoder / quantiser / decoder."""
    config = oracle.tiny(oracle.ZOO[name])
    original = oracle.OriginalModel(config)
    ckpt = original.write_checkpoint(tmp_path / "model.ckpt")
    yaml_path = _write_yaml(config, tmp_path / "config.yaml")
    diffs: dict[str, float] = {}
    if not original.is_ldm:
        cls = AutoencoderKL if original.first_stage.kl else VQModel
        vae = cls.from_single_file(ckpt, original_config=yaml_path)
        assert vae.config.scaling_factor == 1.0
        _check_autoencoder(vae, original.first_stage, diffs)
        _report(name, diffs)
        return

    pipe = LDMPipeline.from_single_file(ckpt, original_config=yaml_path)
    assert pipe.conditioning == MODES[name]
    assert pipe.vae.config.scaling_factor == pytest.approx(original.scaling_factor)
    _check_unet(pipe.unet, original.unet, config, diffs)
    _check_autoencoder(pipe.vae, original.first_stage, diffs)

    # the scheduler: the CompVis DDIM sampler on the checkpoint's schedule
    buffers = oracle.schedule_buffers(config["params"])
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod, buffers["alphas_cumprod"], rtol=1e-5, atol=1e-6)
    diffs["alphas_cumprod"] = oracle.max_abs(pipe.scheduler.alphas_cumprod, buffers["alphas_cumprod"])
    assert pipe.scheduler.config.trained_betas is None  # the YAML's schedule, written by name
    assert (pipe.scheduler.config.steps_offset, pipe.scheduler.config.set_alpha_to_one) == (1, False)
    _report(name, diffs)

    # end to end: 2 sampling steps through the converted pipeline, in every conditioning mode
    images = pipe(num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0),
                  **_e2e_inputs(pipe)).images  # fmt: skip
    assert images.ndim == 4 and images.shape[-1] == 3 and torch.isfinite(torch.from_numpy(images)).all()


# UNetModel settings no released model uses but the converter supports (tiny; GroupNorm needs 32-multiples).
_VARIANT_BASE = dict(
    image_size=8,
    in_channels=4,
    out_channels=4,
    model_channels=32,
    num_res_blocks=1,
    attention_resolutions=[1, 2],
    channel_mult=[1, 3],
)
UNET_VARIANTS = {
    # legacy SpatialTransformer with channels per head that do not divide the channels: 32 → 1 head of 32,
    # 96 → 4 heads of 24 (heads given per level)
    "legacy-uneven-head-channels": dict(_VARIANT_BASE, num_head_channels=20, use_spatial_transformer=True,
                                        context_dim=16),
    # the same without legacy: ch // 20 heads of 20 channels (an inner width below the channels)
    "uneven-head-channels": dict(_VARIANT_BASE, num_head_channels=20, use_spatial_transformer=True, context_dim=16,
                                 legacy=False),
    "new-attention-order": dict(_VARIANT_BASE, num_heads=4, use_new_attention_order=True),
    "attention-block-non-legacy": dict(_VARIANT_BASE, num_heads=2, legacy=False),
    "adm-class-labels": dict(_VARIANT_BASE, num_heads=2, num_classes=10, use_scale_shift_norm=True,
                             resblock_updown=True),
}  # fmt: skip


@pytest.mark.parametrize("name", UNET_VARIANTS)
def test_unet_variant_parity(name):
    from ldm_hub.convert.compvis import convert_unet

    params = UNET_VARIANTS[name]
    theirs = oracle.original_unet(params, seed=5)
    state_dict = {"model.diffusion_model." + k: v for k, v in theirs.state_dict().items()}
    ours = convert_unet(params, state_dict)
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([3, 700])
    context = torch.randn(2, 5, 16, generator=gen) if params.get("context_dim") else None
    labels = torch.tensor([1, 9]) if params.get("num_classes") else None
    with torch.no_grad():
        expected = theirs(x, t, context=context, y=labels)
        out = ours(x, t, encoder_hidden_states=context, class_labels=labels).sample
    torch.testing.assert_close(out, expected, rtol=RTOL, atol=UNET_ATOL)
    _report(name, {"unet": oracle.max_abs(out, expected)})


# ---------------------------------------------------------------------------------------------- samplers
SAMPLER_CASES = {
    "ddim-eta0-txt2img": ("txt2img-1p4B", "ddim", 0.0),
    "ddim-eta1-celebahq": ("celebahq", "ddim", 1.0),
    "plms-txt2img": ("txt2img-1p4B", "plms", 0.0),
}


@pytest.mark.parametrize("case", SAMPLER_CASES)
def test_sampler_parity_step_by_step(case, tmp_path):
    """Our DDIM / PLMS (as converted: the scheduler rebuilt from the checkpoint) against CompVis' DDIMSampler /
    PLMSSampler, both driving the original UNet: every UNet input (x_t, t) along the way and the final sample.
    η > 0 draws the same noise (CompVis from the global generator, ours from a generator with that seed)."""
    from ldm.models.diffusion.ddim import DDIMSampler
    from ldm.models.diffusion.plms import PLMSSampler

    name, sampler_name, eta = SAMPLER_CASES[case]
    config = oracle.tiny(oracle.ZOO[name])
    original = oracle.OriginalModel(config)
    pipe = LDMPipeline.from_single_file(original.write_checkpoint(tmp_path / "m.ckpt"), original_config=config)
    fake = oracle.FakeLatentDiffusion(original.unet, oracle.schedule_buffers(config["params"]))
    inputs = oracle.unet_inputs(config, batch=1)
    x_T, context, steps, seed = inputs["x"], inputs.get("context"), 5, 11

    sampler = (DDIMSampler if sampler_name == "ddim" else PLMSSampler)(fake)
    torch.manual_seed(seed)
    with torch.no_grad():
        expected, _ = sampler.sample(steps, 1, tuple(x_T.shape[1:]), conditioning=context, eta=eta, x_T=x_T,
                                     verbose=False)  # fmt: skip

    scheduler = pipe.scheduler if sampler_name == "ddim" else PLMSScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x, calls = x_T, []
    with torch.no_grad():
        for t in scheduler.timesteps:
            calls.append((x, t))
            eps = original.unet(x, t.reshape(1), context=context)
            kwargs = {"eta": eta, "generator": generator} if sampler_name == "ddim" else {}
            x = scheduler.step(eps, t, x, **kwargs).prev_sample

    assert len(calls) == len(fake.calls)
    worst = 0.0
    for (ours_x, ours_t), (their_x, their_t) in zip(calls, fake.calls):
        assert int(ours_t) == int(their_t[0])
        torch.testing.assert_close(ours_x, their_x, rtol=RTOL, atol=SAMPLER_ATOL)
        worst = max(worst, oracle.max_abs(ours_x, their_x))
    torch.testing.assert_close(x, expected, rtol=RTOL, atol=SAMPLER_ATOL)
    _report(case, {"x_t per step": worst, "sample": oracle.max_abs(x, expected), "max |x|": expected.abs().max()})


# ---------------------------------------------------------------------------------------------- EMA, formats
@pytest.fixture(scope="module")
def celebahq(tmp_path_factory):
    """A tiny EMA model (celebahq: legacy AttentionBlocks, channels per head) and its checkpoint."""
    config = oracle.tiny(oracle.ZOO["celebahq"])
    original = oracle.OriginalModel(config)
    path = original.write_checkpoint(tmp_path_factory.mktemp("celebahq") / "model.ckpt")
    return config, original, path


def test_ema_weights_by_default_raw_on_request(celebahq):
    config, original, path = celebahq
    diffs: dict[str, float] = {}
    _check_unet(LDMPipeline.from_single_file(path, original_config=config).unet, original.unet, config, diffs, "ema")
    raw = LDMPipeline.from_single_file(path, original_config=config, use_ema=False).unet
    _check_unet(raw, original.raw_unet, config, diffs, "raw")
    _report("celebahq EMA / --no-ema", diffs)


def test_use_ema_without_ema_weights_is_an_error(tmp_path):
    config = oracle.tiny(oracle.ZOO["cin256-v2"])  # use_ema: False, no model_ema.* in the checkpoint
    path = oracle.OriginalModel(config).write_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ConversionError, match=r"use_ema=True but the checkpoint has no EMA weights \(model_ema\.\*\)"):
        LDMPipeline.from_single_file(path, original_config=config, use_ema=True)


def test_safetensors_input(celebahq, tmp_path):
    from safetensors.torch import save_file

    config, original, _ = celebahq
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(path))
    diffs: dict[str, float] = {}
    _check_unet(LDMPipeline.from_single_file(path, original_config=config).unet, original.unet, config, diffs)
    save_file(oracle.OriginalModel(oracle.tiny(oracle.ZOO["vq-f8"])).state_dict(), str(tmp_path / "vq.safetensors"))
    vae = VQModel.from_single_file(tmp_path / "vq.safetensors", original_config=oracle.tiny(oracle.ZOO["vq-f8"]))
    assert vae.config.num_vq_embeddings == 16384
    _report("safetensors", diffs)


def test_first_stage_of_an_ldm_checkpoint(celebahq):
    """``VQModel.from_single_file`` on a full LDM checkpoint takes its first_stage_model.* (and the LDM's scale)."""
    config, original, path = celebahq
    diffs: dict[str, float] = {}
    _check_autoencoder(VQModel.from_single_file(path, original_config=config), original.first_stage, diffs)
    with pytest.raises(ValueError, match="is a VQModel; use VQModel.from_single_file"):
        AutoencoderKL.from_single_file(path, original_config=config)
    with pytest.raises(ConversionError, match="belongs to a full LDM checkpoint, but the YAML describes a standalone"):
        VQModel.from_single_file(path, original_config=oracle.tiny(oracle.ZOO["vq-f4"]))
    _report("celebahq first stage", diffs)


def test_trained_betas_when_the_checkpoint_schedule_differs(tmp_path):
    config = oracle.tiny(oracle.ZOO["bsr_sr"])
    path = oracle.OriginalModel(config).write_checkpoint(tmp_path / "m.ckpt")
    edited = oracle.tiny(oracle.ZOO["bsr_sr"])
    edited["params"]["linear_end"] = 0.02  # the YAML disagrees with the checkpoint's betas buffer
    scheduler = LDMPipeline.from_single_file(path, original_config=edited).scheduler
    assert scheduler.config.trained_betas is not None
    expected = oracle.schedule_buffers(config["params"])["alphas_cumprod"]
    torch.testing.assert_close(scheduler.alphas_cumprod, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- security
def _ckpt_with_callback(original: oracle.OriginalModel, path: Path) -> Path:
    """A checkpoint that also stores an object of a class no released file holds (the known Lightning contents
    load by default: tests/test_checkpoint_safety.py), which the safe loader refuses by name."""
    torch.save({"state_dict": original.state_dict(), "global_step": 1,
                "callbacks": {"ModelCheckpoint": datetime.timedelta(days=1)}}, path)  # fmt: skip
    return path


def test_unsafe_pickle_refused_unless_allowed(celebahq, tmp_path):
    config, original, _ = celebahq
    path = _ckpt_with_callback(original, tmp_path / "lightning.ckpt")
    with pytest.raises(ModelFileError) as info:
        LDMPipeline.from_single_file(path, original_config=config)
    message = str(info.value)
    for part in (
        "weights_only=True",
        "datetime.timedelta",
        "can run arbitrary code",
        "allow_unsafe_pickle=True",
        "--allow-unsafe-pickle",
    ):
        assert part in message, message
    pipe = LDMPipeline.from_single_file(path, original_config=config, allow_unsafe_pickle=True)
    diffs: dict[str, float] = {}
    _check_unet(pipe.unet, original.unet, config, diffs)


# ---------------------------------------------------------------------------------------------- bad input
def test_yaml_that_does_not_match_the_checkpoint_names_the_key(tmp_path):
    config = oracle.tiny(oracle.ZOO["cin256-v2"])
    path = oracle.OriginalModel(config).write_checkpoint(tmp_path / "m.ckpt")

    wrong_unet = oracle.tiny(oracle.ZOO["cin256-v2"])
    wrong_unet["params"]["unet_config"]["params"]["model_channels"] = 64
    with pytest.raises(
        ConversionError, match=r"shape mismatch for 'model\.diffusion_model\.input_blocks\.0\.0\.weight'"
    ):
        LDMPipeline.from_single_file(path, original_config=wrong_unet)

    wrong_codebook = oracle.tiny(oracle.ZOO["cin256-v2"])
    wrong_codebook["params"]["first_stage_config"]["params"]["n_embed"] = 16384
    with pytest.raises(ConversionError, match=r"'first_stage_model\.quantize\.embedding\.weight'"):
        LDMPipeline.from_single_file(path, original_config=wrong_codebook)

    wrong_depth = oracle.tiny(oracle.ZOO["cin256-v2"])
    wrong_depth["params"]["unet_config"]["params"]["transformer_depth"] = 2
    with pytest.raises(
        ConversionError, match=r"missing key 'model\.diffusion_model\.input_blocks\.4\.1\.transformer_blocks\.1"
    ):
        LDMPipeline.from_single_file(path, original_config=wrong_depth)

    scale_by_std = oracle.tiny(oracle.ZOO["cin256-v2"])
    scale_by_std["params"]["scale_by_std"] = True
    with pytest.raises(ConversionError, match=r"scale_by_std but the checkpoint has no 'scale_factor' key"):
        LDMPipeline.from_single_file(path, original_config=scale_by_std)

    with pytest.raises(ValueError, match=r"unet_config\.params: unknown field\(s\) \['num_res_block'\]"):
        bad = oracle.tiny(oracle.ZOO["cin256-v2"])
        bad["params"]["unet_config"]["params"]["num_res_block"] = 2
        LDMPipeline.from_single_file(path, original_config=bad)


def test_unknown_and_missing_keys_are_named(celebahq, tmp_path):
    config, original, _ = celebahq

    def convert(state_dict, **kwargs):
        torch.save({"state_dict": state_dict}, tmp_path / "edited.ckpt")
        return LDMPipeline.from_single_file(tmp_path / "edited.ckpt", original_config=config, **kwargs)

    sd = original.state_dict()
    del sd["first_stage_model.decoder.conv_out.bias"]
    with pytest.raises(ConversionError, match=r"missing key 'first_stage_model\.decoder\.conv_out\.bias'"):
        convert(sd)

    sd = original.state_dict()
    sd["model.diffusion_model.input_blocks.1.0.extra.weight"] = torch.zeros(3)  # in the raw copy, not the EMA one
    with pytest.raises(
        ConversionError, match=r"unexpected key.*model\.diffusion_model\.input_blocks\.1\.0\.extra\.weight"
    ):
        convert(sd)

    sd = original.state_dict()
    sd["optimizer_moment.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match=r"unexpected key.*'optimizer_moment\.weight'"):
        convert(sd)

    sd = original.state_dict()
    del sd["model_ema.diffusion_modelmiddle_block1qkvweight"]
    with pytest.raises(ConversionError, match=r"missing key 'model_ema\.diffusion_modelmiddle_block1qkvweight:q'"):
        convert(sd)

    ae = oracle.OriginalModel(oracle.tiny(oracle.ZOO["kl-f4"]))
    sd = ae.state_dict()
    sd["encoder.down.0.block.0.conv1.weight"] = sd["encoder.down.0.block.0.conv1.weight"][:, :2]
    torch.save({"state_dict": sd}, tmp_path / "ae.ckpt")
    with pytest.raises(ConversionError, match=r"shape mismatch for 'encoder\.down\.0\.block\.0\.conv1\.weight'"):
        AutoencoderKL.from_single_file(tmp_path / "ae.ckpt", original_config=ae.config)
    with pytest.raises(ValueError, match="is a AutoencoderKL; use AutoencoderKL.from_single_file"):
        VQModel.from_single_file(tmp_path / "ae.ckpt", original_config=ae.config)


# ---------------------------------------------------------------------------------------------- CLI
def _ldm_hub() -> list[str]:
    exe = shutil.which("ldm-hub", path=os.path.dirname(sys.executable))
    assert exe, "the ldm-hub console script is not installed next to this Python"
    return [exe]


def test_cli_convert_autoencoder_and_ldm(celebahq, tmp_path, capsys):
    """``ldm-hub convert``: an autoencoder-only checkpoint → a model folder, a full LDM → a pipeline folder that
    ``LDMPipeline.from_pretrained`` loads; ``--no-ema`` takes the raw weights. (In process, through the CLI's
    ``main``; ``test_cli_convert_help`` runs the console script.)"""
    ae_config = oracle.tiny(oracle.ZOO["vq-f4-noattn"])
    ae = oracle.OriginalModel(ae_config)
    ae_ckpt = ae.write_checkpoint(tmp_path / "vq.ckpt")
    ae_yaml = _write_yaml(ae_config, tmp_path / "vq.yaml")
    config, original, ckpt = celebahq
    ldm_yaml = _write_yaml(config, tmp_path / "celebahq.yaml")
    assert cli_main(["convert", str(ae_ckpt), "--original-config", str(ae_yaml), "--output",
                     str(tmp_path / "vq-out")]) == 0  # fmt: skip
    assert cli_main(["convert", str(ckpt), "--original-config", str(ldm_yaml), "--output", str(tmp_path / "ldm-out"),
                     "--no-ema"]) == 0  # fmt: skip
    assert "LDMPipeline folder (unconditional model)" in capsys.readouterr().out

    diffs: dict[str, float] = {}
    vae = VQModel.from_pretrained(tmp_path / "vq-out")
    assert vae.config.scaling_factor == 1.0 and vae.config.mid_block_attention is False
    _check_autoencoder(vae, ae.first_stage, diffs)
    pipe = LDMPipeline.from_pretrained(tmp_path / "ldm-out")
    _check_unet(pipe.unet, original.raw_unet, config, diffs)
    assert pipe.conditioning == "unconditional" and pipe.vae.config.scaling_factor == 1.0
    _report("cli", diffs)


def test_convert_single_file_takes_the_pipeline_class(celebahq, tmp_path):
    """The converter never imports the pipeline: a full LDM needs the caller's class, and is refused without."""
    from ldm_hub.convert.compvis import convert_single_file

    config, _, ckpt = celebahq
    ldm_yaml = _write_yaml(config, tmp_path / "celebahq.yaml")
    with pytest.raises(TypeError, match="pass the class that assembles it, pipeline_class=ldm_hub.LDMPipeline"):
        convert_single_file(ckpt, ldm_yaml, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    written = convert_single_file(ckpt, ldm_yaml, tmp_path / "out", pipeline_class=LDMPipeline)
    assert written == "LDMPipeline folder (unconditional model)"
    assert LDMPipeline.from_pretrained(tmp_path / "out").conditioning == "unconditional"


def test_cli_convert_refuses_unsafe_pickle(celebahq, tmp_path, capsys):
    config, original, _ = celebahq
    path = _ckpt_with_callback(original, tmp_path / "lightning.ckpt")
    yaml_path = _write_yaml(config, tmp_path / "c.yaml")
    args = ["convert", str(path), "--original-config", str(yaml_path), "--output", str(tmp_path / "out")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ldm-hub convert: error: refusing to load") and "--allow-unsafe-pickle" in err
    assert not (tmp_path / "out").exists()
    assert cli_main(args + ["--allow-unsafe-pickle"]) == 0
    assert (tmp_path / "out" / "model_index.json").is_file()


def test_cli_convert_help():
    parser_help = subprocess.run(
        _ldm_hub() + ["convert", "--help"], check=False, capture_output=True, text=True, timeout=120
    )
    assert parser_help.returncode == 0, parser_help.stderr
    for flag in ("--original-config", "--output", "--ema", "--no-ema", "--allow-unsafe-pickle", "--tokenizer-vocab"):
        assert flag in parser_help.stdout


# ---------------------------------------------------------------------------------------------- full size
@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_SIZE)
def test_zoo_parity_full_size(name, tmp_path):
    """The published sizes of a few zoo models (the old fused-qkv UNets, transformer depth 3, the real
    autoencoders): convert and match the original."""
    start = time.time()
    config = oracle.ZOO[name]
    original = oracle.OriginalModel(config, distinct_raw=False)
    ckpt = original.write_checkpoint(tmp_path / "model.ckpt")
    diffs: dict[str, float] = {}
    if original.is_ldm:
        pipe = LDMPipeline.from_single_file(ckpt, original_config=config)
        ckpt.unlink()
        assert pipe.conditioning == MODES[name]
        _check_unet(pipe.unet, original.unet, config, diffs)
        vae = pipe.vae
    else:
        vae = (AutoencoderKL if original.first_stage.kl else VQModel).from_single_file(ckpt, original_config=config)
        ckpt.unlink()
    _check_autoencoder(vae, original.first_stage, diffs, side=256)
    diffs["seconds"] = time.time() - start
    _report(f"{name} (full size)", diffs)
    del original, vae
    gc.collect()
