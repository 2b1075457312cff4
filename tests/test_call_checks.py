"""Numbers and tensors are checked before they do harm (issue 15, group 4): every numeric call argument against
wrong type, NaN, ±inf, below and above its range; tensors of the wrong kind; a non-finite image after the loop.

Each case asserts the exception type and that the message names the argument. The ranges:

======================  =====================================================================
argument                accepted
======================  =====================================================================
guidance_scale          a finite number ≥ 0 (1 disables guidance; 0 is the unconditional ε)
eta                     a finite number in [0, 1], and only for a scheduler whose step takes η
strength                a finite number in (0, 1] with int(steps · strength) ≥ 1
num_inference_steps     an integer in [1, T] (T = the scheduler's num_train_timesteps)
num_images_per_prompt   an integer ≥ 1
height, width           positive integers, multiples of f × the UNet's downsampling
tile_size               a positive integer multiple of f × the UNet's downsampling
tile_overlap            an integer multiple of f in [0, tile_size)
tile_batch_size         an integer ≥ 1
======================  =====================================================================
"""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch

from ldm_hub.presets import build_pipeline

PROMPT = "a red circle"
INF = math.inf


@pytest.fixture(scope="module")
def text_pipe():
    pipe = build_pipeline("text2im-tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sr_pipe():
    pipe = build_pipeline("superres-tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _init(pipe):
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return PIL.Image.new("RGB", (side, side), "gray")


# (argument, bad value, exception type, message pattern); run on the text model unless the name says otherwise
NUMERIC = [
    ("guidance_scale", "3", ValueError, "`guidance_scale` must be a number >= 0"),
    ("guidance_scale", math.nan, ValueError, "`guidance_scale` must be a finite number >= 0"),
    ("guidance_scale", INF, ValueError, "`guidance_scale` must be a finite number >= 0, got inf"),
    ("guidance_scale", -INF, ValueError, "`guidance_scale` must be a finite number"),
    ("guidance_scale", -0.5, ValueError, r"`guidance_scale`=-0.5 is out of range"),
    ("eta", "0", ValueError, r"`eta` must be a number in \[0, 1\]"),
    ("eta", math.nan, ValueError, r"`eta` must be a finite number in \[0, 1\]"),
    ("eta", INF, ValueError, "`eta` must be a finite number"),
    ("eta", -INF, ValueError, "`eta` must be a finite number"),
    ("eta", -0.1, ValueError, r"`eta`=-0.1 is out of range: it must be in \[0, 1\]"),
    ("eta", 5.0, ValueError, r"`eta`=5.0 is out of range: it must be in \[0, 1\]"),
    ("num_inference_steps", 2.0, ValueError, "`num_inference_steps` must be an integer in"),
    ("num_inference_steps", math.nan, ValueError, "`num_inference_steps` must be an integer"),
    ("num_inference_steps", INF, ValueError, "`num_inference_steps` must be an integer"),
    ("num_inference_steps", -INF, ValueError, "`num_inference_steps` must be an integer"),
    ("num_inference_steps", 0, ValueError, r"`num_inference_steps`=0 is out of range: it must be in \[1, 1000\]"),
    ("num_inference_steps", 1001, ValueError, r"`num_inference_steps`=1001 is out of range"),
    ("num_inference_steps", True, ValueError, "`num_inference_steps` must be an integer"),
    ("num_images_per_prompt", 1.5, ValueError, "`num_images_per_prompt` must be an integer >= 1"),
    ("num_images_per_prompt", math.nan, ValueError, "`num_images_per_prompt` must be an integer"),
    ("num_images_per_prompt", INF, ValueError, "`num_images_per_prompt` must be an integer"),
    ("num_images_per_prompt", -INF, ValueError, "`num_images_per_prompt` must be an integer"),
    ("num_images_per_prompt", 0, ValueError, r"`num_images_per_prompt`=0 is out of range"),
    ("height", 32.0, ValueError, "`height`=32.0 is not supported"),
    ("height", math.nan, ValueError, "`height`=nan is not supported"),
    ("height", INF, ValueError, "`height`=inf is not supported"),
    ("height", -INF, ValueError, "`height`=-inf is not supported"),
    ("height", -32, ValueError, "`height`=-32 is not supported: it must be a positive multiple"),
    ("height", 33, ValueError, "`height`=33 is not supported: it must be a positive multiple of 8"),
    ("width", "32", ValueError, "`width`='32' is not supported"),
    ("width", math.nan, ValueError, "`width`=nan is not supported"),
    ("width", INF, ValueError, "`width`=inf is not supported"),
    ("width", -INF, ValueError, "`width`=-inf is not supported"),
    ("width", 0, ValueError, "`width`=0 is not supported"),
]


@pytest.mark.parametrize("name,value,error,message", NUMERIC, ids=[f"{n}={v!r}" for n, v, _, _ in NUMERIC])
def test_numeric_arguments(text_pipe, name, value, error, message):
    kwargs = {"num_inference_steps": 1, name: value}
    with pytest.raises(error, match=message):
        text_pipe(PROMPT, **kwargs)


STRENGTH = [
    ("0.5", "`strength` must be a number"),
    (math.nan, "`strength` must be a number"),
    (INF, r"`strength`=inf is outside \(0, 1\]"),
    (-INF, r"`strength`=-inf is outside \(0, 1\]"),
    (0.0, r"`strength`=0.0 is outside \(0, 1\]"),
    (1.01, r"`strength`=1.01 is outside \(0, 1\]"),
    (True, "`strength` must be a number"),
]


@pytest.mark.parametrize("value,message", STRENGTH, ids=[repr(v) for v, _ in STRENGTH])
def test_strength(text_pipe, value, message):
    with pytest.raises(ValueError, match=message):
        text_pipe(PROMPT, image=_init(text_pipe), strength=value, num_inference_steps=4)


TILES = [
    ({"tile_size": 16.0}, r"`tile_size`=16.0 must be a positive multiple"),
    ({"tile_size": math.nan}, "`tile_size`=nan must be a positive multiple"),
    ({"tile_size": INF}, "`tile_size`=inf must be a positive multiple"),
    ({"tile_size": -INF}, "`tile_size`=-inf must be a positive multiple"),
    ({"tile_size": -16}, "`tile_size`=-16 must be a positive multiple"),
    ({"tile_size": 20}, "`tile_size`=20 must be a positive multiple of 8"),
    (
        {"tile_size": 16, "tile_overlap": 2.0},
        r"`tile_overlap`=2.0 must be a multiple of 4 pixels in \[0, tile_size=16\)",
    ),
    ({"tile_size": 16, "tile_overlap": math.nan}, "`tile_overlap`=nan must be a multiple"),
    ({"tile_size": 16, "tile_overlap": INF}, "`tile_overlap`=inf must be a multiple"),
    ({"tile_size": 16, "tile_overlap": -INF}, "`tile_overlap`=-inf must be a multiple"),
    ({"tile_size": 16, "tile_overlap": -2}, "`tile_overlap`=-2 must be a multiple"),
    (
        {"tile_size": 16, "tile_overlap": 16},
        r"`tile_overlap`=16 must be a multiple of 4 pixels in \[0, tile_size=16\)",
    ),
    ({"tile_size": 16, "tile_batch_size": 1.0}, "`tile_batch_size` must be a positive int, got 1.0"),
    ({"tile_size": 16, "tile_batch_size": math.nan}, "`tile_batch_size` must be a positive int, got nan"),
    ({"tile_size": 16, "tile_batch_size": INF}, "`tile_batch_size` must be a positive int, got inf"),
    ({"tile_size": 16, "tile_batch_size": -INF}, "`tile_batch_size` must be a positive int"),
    ({"tile_size": 16, "tile_batch_size": 0}, "`tile_batch_size` must be a positive int, got 0"),
    ({"tile_overlap": 4}, "`tile_overlap` needs `tile_size`"),
]


@pytest.mark.parametrize("kwargs,message", TILES, ids=[repr(k) for k, _ in TILES])
def test_tiling_arguments(sr_pipe, kwargs, message):
    multiple = sr_pipe.vae_scale_factor * sr_pipe.unet_downsampling
    assert multiple == 8 and sr_pipe.vae_scale_factor == 4  # the messages above are for these factors
    with pytest.raises(ValueError, match=message):
        sr_pipe(image=PIL.Image.new("RGB", (8, 8)), num_inference_steps=1, **kwargs)


def test_eta_only_where_the_scheduler_reads_it(text_pipe):
    from ldm_hub import PLMSScheduler

    pipe = type(text_pipe)(
        **{**text_pipe.components, "scheduler": PLMSScheduler.from_config(text_pipe.scheduler.config)}
    )
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match=r"`eta`=0.5 is DDIM's η; PLMSScheduler has no such parameter"):
        pipe(PROMPT, eta=0.5, num_inference_steps=1)
    pipe(PROMPT, eta=0.0, num_inference_steps=1)  # the default is fine


def test_as_many_steps_as_training_timesteps_give_a_finite_image(text_pipe):
    """S = T (1000 for the LDM configs, steps_offset=1) used to step past the ᾱ table and give a black image."""
    scheduler = type(text_pipe.scheduler).from_config({**text_pipe.scheduler.config, "num_train_timesteps": 20})
    pipe = type(text_pipe)(**{**text_pipe.components, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    image = pipe(PROMPT, num_inference_steps=20, output_type="np").images
    assert np.isfinite(image).all() and image.std() > 0


def test_batch_size_only_for_unconditional_models(text_pipe):
    with pytest.raises(ValueError, match="`batch_size` is for unconditional models"):
        text_pipe(PROMPT, batch_size=2, num_inference_steps=1)
    uncond = build_pipeline("unconditional-tiny")
    uncond.set_progress_bar_config(disable=True)
    for value, error in ((0, ValueError), (2.0, ValueError), (True, ValueError)):
        with pytest.raises(error, match="`batch_size` must be a positive int"):
            uncond(batch_size=value, num_inference_steps=1)


# ---------------------------------------------------------------------------------------------- tensors
LATENTS = [
    (np.zeros((1, 4, 8, 8), dtype=np.float32), TypeError, "`latents` must be a torch.Tensor, got ndarray"),
    (
        torch.zeros(1, 4, 8, 8, dtype=torch.int64),
        TypeError,
        "`latents` must be a floating-point tensor, got torch.int64",
    ),
    (
        torch.zeros(1, 4, 8, 8, dtype=torch.bool),
        TypeError,
        "`latents` must be a floating-point tensor, got torch.bool",
    ),
    (torch.full((1, 4, 8, 8), math.nan), ValueError, "`latents` holds NaN or infinite values"),
    (torch.full((1, 4, 8, 8), INF), ValueError, "`latents` holds NaN or infinite values"),
]


@pytest.mark.parametrize("latents,error,message", LATENTS, ids=["numpy", "int64", "bool", "nan", "inf"])
def test_latents(text_pipe, latents, error, message):
    with pytest.raises(error, match=message):
        text_pipe(PROMPT, latents=latents, num_inference_steps=1)


def test_floating_latents_are_cast(text_pipe):
    out = text_pipe(PROMPT, latents=torch.zeros(1, 4, 8, 8, dtype=torch.float64), num_inference_steps=1)
    assert len(out.images) == 1


def test_layout_token_ids_outside_the_vocabulary():
    from ldm_hub.conditioning import LayoutTokenizer, LDMBertModel
    from ldm_hub.presets import build_model

    tokenizer = LayoutTokenizer(vocab_size=64, max_objects=2, categories=["a", "b"])
    encoder = LDMBertModel(
        vocab_size=64,
        max_position_embeddings=tokenizer.sequence_length,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        attention_head_dim=8,
        intermediate_size=32,
    )
    base = build_pipeline("text2im-tiny")
    unet = build_model("unet-layout-tiny", cross_attention_dim=16, in_channels=4, out_channels=4)
    pipe = type(base)(vae=base.vae, unet=unet, scheduler=base.scheduler, cond_encoder=encoder, tokenizer=tokenizer)
    pipe.set_progress_bar_config(disable=True)
    length = tokenizer.sequence_length
    for bad in (torch.full((1, length), 64), torch.full((1, length), -1)):
        with pytest.raises(ValueError, match=r"`layout` token ids must lie in \[0, 64\)"):
            pipe(layout=bad, num_inference_steps=1)
    with pytest.raises(ValueError, match="a `layout` tensor must be int64 token ids"):
        pipe(layout=torch.zeros(1, length), num_inference_steps=1)


@pytest.mark.parametrize(
    "prompt,error,message",
    [
        (123, TypeError, "`prompt` must be a str or a list of str, got int"),
        ([], ValueError, "`prompt` is an empty list"),
        (["a", None], TypeError, r"`prompt`\[1\] must be a str"),
    ],
)
def test_prompt_kinds(text_pipe, prompt, error, message):
    with pytest.raises(error, match=message):
        text_pipe(prompt, num_inference_steps=1)


def test_callback_must_return_a_dict(text_pipe):
    for returned in (None, [], torch.zeros(1)):
        with pytest.raises(TypeError, match="`callback_on_step_end` must return a dict"):
            text_pipe(PROMPT, num_inference_steps=1, callback_on_step_end=lambda *a, r=returned: r)


# ---------------------------------------------------------------------------------------------- after the loop
def test_a_non_finite_image_is_an_error_naming_the_probable_cause(text_pipe, monkeypatch):
    pipe = type(text_pipe)(**text_pipe.components)
    pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(pipe, "decode_latents", lambda z: torch.full((z.shape[0], 3, 32, 32), math.nan))
    with pytest.raises(ValueError, match="the generated image holds NaN or infinite values; probable cause"):
        pipe(PROMPT, num_inference_steps=1, guidance_scale=50.0)
    with pytest.raises(ValueError, match=r"guidance_scale=50.0 is large"):
        pipe(PROMPT, num_inference_steps=1, guidance_scale=50.0, output_type="np")
    assert torch.isnan(pipe(PROMPT, num_inference_steps=1, output_type="pt").images).all()  # tensors as they are
