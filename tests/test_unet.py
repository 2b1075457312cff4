"""ε_θ parity: LDMUNet against diffusers' UNet2DConditionModel / UNet2DModel with identical random weights.

Every parameter of the diffusers model is randomised (tests/utils.randomize_) before conversion, so a wrong
key, a transposed head split or a skipped norm cannot hide behind zero-initialised layers. fp32 throughout,
``assert_close(rtol=1e-4, atol=ATOL)``; the max abs diff reached is printed (run with ``-s`` to see it).
"""

from __future__ import annotations

import gc
import time

import diffusers_repos as repos
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    LDMSuperResolutionPipeline,
    LDMTextToImagePipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from utils import max_abs_diff, randomize_

from ldm_hub.convert.common import ConversionError
from ldm_hub.convert.diffusers_unet import convert_unet_config, convert_unet_state_dict, unet_from_diffusers
from ldm_hub.models.unet import LDMUNet

RTOL = 1e-4
ATOL = 1e-5  # outputs are O(1); reached diffs are ~1e-6
SLOW_ATOL = 1e-4  # full-size models: longer reductions (1280-wide attention, 25 ResBlocks)

# ---- tiny configs keeping the published structures (diffusers kwargs)
TEXT2IM_2LEVEL = dict(
    repos.TINY_TEXT2IM_UNET,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
TEXT2IM_GENERAL = dict(  # per-level heads (attention_head_dim meaning heads, #2011), depth 2, attention at level 1..2
    repos.TINY_TEXT2IM_UNET,
    attention_head_dim=(2, 4, 8, 8),
    transformer_layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
CELEBA_ONE_HEAD = dict(repos.TINY_CELEBA_UNET, attention_head_dim=None)  # diffusers: head dim = channels
# lsun_churches structure (attention everywhere, scale-shift norm, ResBlock up/down) plus adm class embeddings
CHURCHES_LIKE = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(32, 32, 64, 64),
    down_block_types=("AttnDownBlock2D",) * 4,
    up_block_types=("AttnUpBlock2D",) * 4,
    attention_head_dim=8,
    norm_num_groups=8,
    attn_norm_num_groups=8,
    resnet_time_scale_shift="scale_shift",
    downsample_type="resnet",
    upsample_type="resnet",
    num_class_embeds=10,
)
RESNET_UPDOWN_MIXED = dict(  # ResBlock resampling on levels without attention too (Resnet*sampleBlock2D)
    CHURCHES_LIKE,
    down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
    resnet_time_scale_shift="default",
    attn_norm_num_groups=None,
    num_class_embeds=None,
    add_attention=False,
)

CASES = {
    # name: (diffusers class, kwargs, latent (H, W))
    "text2im_4level": (UNet2DConditionModel, repos.TINY_TEXT2IM_UNET, (16, 16)),
    "text2im_2level": (UNet2DConditionModel, TEXT2IM_2LEVEL, (8, 8)),
    "text2im_general_odd_size": (UNet2DConditionModel, TEXT2IM_GENERAL, (12, 10)),
    "sr4x": (UNet2DModel, repos.TINY_SR_UNET, (16, 16)),
    "celebahq": (UNet2DModel, repos.TINY_CELEBA_UNET, (16, 16)),
    "celebahq_one_head": (UNet2DModel, CELEBA_ONE_HEAD, (8, 8)),
    "churches_scale_shift_class_resblock_updown": (UNet2DModel, CHURCHES_LIKE, (16, 16)),
    "resblock_updown_mixed_no_mid_attention": (UNet2DModel, RESNET_UPDOWN_MIXED, (16, 16)),
}


def _build(cls, kwargs, seed=0):
    theirs = randomize_(cls(**kwargs), seed).eval()
    ours = unet_from_diffusers(dict(theirs.config), theirs.state_dict())
    return theirs, ours


def _inputs(theirs, size, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    cfg = theirs.config
    sample = torch.randn(batch, cfg.in_channels, *size, generator=gen)
    kwargs = {}
    if isinstance(theirs, UNet2DConditionModel):
        kwargs["encoder_hidden_states"] = torch.randn(batch, 7, cfg.cross_attention_dim, generator=gen)
    if cfg.num_class_embeds is not None:
        kwargs["class_labels"] = torch.randint(0, cfg.num_class_embeds, (batch,), generator=gen)
    return sample, kwargs


@pytest.mark.parametrize("name", list(CASES))
def test_parity_with_diffusers(name):
    cls, kwargs, size = CASES[name]
    theirs, ours = _build(cls, kwargs)
    sample, cond = _inputs(theirs, size)
    t = torch.tensor([3, 977])
    with torch.no_grad():
        expected = theirs(sample, t, **cond).sample
        got = ours(sample, t, **cond).sample
    print(f"\n[{name}] max abs diff {max_abs_diff(got, expected):.3e} (|ε| mean {expected.abs().mean():.3f})")
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


def test_config_translation():
    """The published structures translate to the LDMUNet configs one would write by hand."""
    text2im = convert_unet_config(dict(repos.TEXT2IM_UNET, _class_name="UNet2DConditionModel"))
    assert text2im["attention_levels"] == (True, True, True, False)
    assert (text2im["num_attention_heads"], text2im["attention_head_dim"]) == (8, None)  # 8 means heads (#2011)
    assert (text2im["cross_attention_dim"], text2im["attention_norm_eps"]) == (1280, 1e-6)
    assert text2im == {**text2im, **dict(in_channels=4, sample_size=32, block_out_channels=(320, 640, 1280, 1280))}

    sr = convert_unet_config(dict(repos.SR_UNET, _class_name="UNet2DModel"))
    assert sr["attention_levels"] == (False, False, False, True) and sr["mid_block_attention"]
    assert (sr["num_attention_heads"], sr["attention_head_dim"], sr["cross_attention_dim"]) == (None, 32, None)
    assert (sr["in_channels"], sr["out_channels"], sr["flip_sin_to_cos"], sr["freq_shift"]) == (6, 3, True, 0)

    churches = convert_unet_config(CHURCHES_LIKE)  # no _class_name: inferred from the block types
    assert churches["resblock_updown"] and churches["resnet_time_scale_shift"] == "scale_shift"
    assert churches["num_class_embeds"] == 10 and churches["attention_levels"] == (True,) * 4

    general = convert_unet_config(TEXT2IM_GENERAL)
    assert general["num_attention_heads"] == (2, 4, 8, 8) and general["transformer_depth"] == 2


def test_timestep_forms_broadcast():
    """A Python number, a 0-d tensor, a (1,) tensor and a (B,) tensor give the same ε_θ (and match diffusers)."""
    theirs, ours = _build(UNet2DConditionModel, TEXT2IM_2LEVEL)
    sample, cond = _inputs(theirs, (8, 8), batch=3)
    forms = {
        "int": (500, 500.0),
        "float": (500.0, 500.0),
        "fraction": (250.75, 250.75),
        "0-d": (torch.tensor(500), 500.0),
        "(1,)": (torch.tensor([500]), 500.0),
    }
    with torch.no_grad():
        for name, (value, number) in forms.items():
            got = ours(sample, value, **cond).sample
            ref = ours(sample, torch.full((3,), number), **cond).sample
            expected = theirs(sample, value, **cond).sample
            print(f"\n[timestep {name}] max abs diff vs diffusers {max_abs_diff(got, expected):.3e}")
            torch.testing.assert_close(got, ref, rtol=0, atol=0)
            torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


def test_inside_diffusers_text2im_pipeline():
    """Our UNet drops into diffusers' LDMTextToImagePipeline (CFG batch, 0-d timesteps) with the same images."""
    pipe = repos.text2im_pipeline()
    for module in (pipe.unet, pipe.bert, pipe.vqvae):
        module.eval()  # LDMBert has dropout; a pipeline built by hand is left in training mode
    ours = unet_from_diffusers(dict(pipe.unet.config), pipe.unet.state_dict())
    call = dict(
        prompt=["a red square", "two dots"],
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=2.0,
        output_type="np",
    )
    expected = pipe(generator=torch.Generator().manual_seed(0), **call).images
    ours_pipe = LDMTextToImagePipeline(
        vqvae=pipe.vqvae,
        bert=pipe.bert,
        tokenizer=pipe.tokenizer,
        unet=ours,
        scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
    )
    ours_pipe.set_progress_bar_config(disable=True)
    got = ours_pipe(generator=torch.Generator().manual_seed(0), **call).images
    diff = abs(got.astype("float64") - expected.astype("float64")).max()
    print(f"\n[LDMTextToImagePipeline] max abs image diff {diff:.3e}")
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), rtol=RTOL, atol=ATOL)


def test_inside_diffusers_superres_pipeline():
    """Our UNet drops into diffusers' LDMSuperResolutionPipeline (concat conditioning, in_channels 6)."""
    pipe = repos.superres_pipeline()
    pipe.unet.eval(), pipe.vqvae.eval()
    ours = unet_from_diffusers(dict(pipe.unet.config), pipe.unet.state_dict())
    low_res = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    call = dict(image=low_res, num_inference_steps=2, output_type="np")
    expected = pipe(generator=torch.Generator().manual_seed(0), **call).images
    ours_pipe = LDMSuperResolutionPipeline(
        vqvae=pipe.vqvae, unet=ours, scheduler=DDIMScheduler.from_config(pipe.scheduler.config)
    )
    ours_pipe.set_progress_bar_config(disable=True)
    got = ours_pipe(generator=torch.Generator().manual_seed(0), **call).images
    diff = abs(got.astype("float64") - expected.astype("float64")).max()
    print(f"\n[LDMSuperResolutionPipeline] max abs image diff {diff:.3e}")
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), rtol=RTOL, atol=ATOL)


def test_compiles_fullgraph():
    """torch.compile(fullgraph=True) traces the whole forward (no graph break, no host sync).

    One tiny model with every optional path: cross-attention, class embedding, scale-shift norm, ResBlock
    up/downsampling; timesteps as a (B,) tensor and as a Python number.
    """
    model = LDMUNet(
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(False, True),
        norm_num_groups=8,
        num_attention_heads=2,
        cross_attention_dim=8,
        num_class_embeds=3,
        resnet_time_scale_shift="scale_shift",
        resblock_updown=True,
        sample_size=8,
    )
    model = randomize_(model, 0).eval()
    sample, context, labels = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8), torch.tensor([0, 2])
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        for t in (torch.tensor([3, 977]), 999):
            eager = model(sample, t, encoder_hidden_states=context, class_labels=labels).sample
            got = compiled(sample, t, encoder_hidden_states=context, class_labels=labels).sample
            print(f"\n[compile t={t!r}] max abs diff {max_abs_diff(got, eager):.3e}")
            torch.testing.assert_close(got, eager, rtol=RTOL, atol=ATOL)
    torch._dynamo.reset()


def test_gradient_checkpointing_same_gradients():
    model = LDMUNet(
        block_out_channels=(16, 32),
        attention_levels=(False, True),
        norm_num_groups=8,
        num_attention_heads=2,
        cross_attention_dim=8,
        sample_size=8,
    )
    model = randomize_(model, 0).train()
    sample, context = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8)

    def grads():
        model.zero_grad()
        model(sample, torch.tensor([1, 500]), encoder_hidden_states=context).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=RTOL, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    theirs, ours = _build(UNet2DModel, repos.TINY_SR_UNET)
    ours.save_pretrained(tmp_path)
    again = LDMUNet.from_pretrained(tmp_path).eval()

    def plain(config):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if not k.startswith("_")}

    assert plain(again.config) == plain(ours.config)
    a, b = ours.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # weights bit-identical
    sample, _ = _inputs(theirs, (8, 8))
    with torch.no_grad():  # outputs: same weights, but kernels may pick other paths for mmap'd tensors
        torch.testing.assert_close(again(sample, 10).sample, ours(sample, 10).sample, rtol=1e-5, atol=1e-6)


def test_docstring_examples_run():
    import doctest

    import ldm_hub.convert.diffusers_unet
    import ldm_hub.models.attention
    import ldm_hub.models.unet

    for module in (ldm_hub.models.attention, ldm_hub.models.unet, ldm_hub.convert.diffusers_unet):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# ------------------------------------------------------------------------------------------- errors


def _tiny(**overrides) -> LDMUNet:
    kwargs = dict(
        block_out_channels=(16, 32),
        attention_levels=(False, True),
        norm_num_groups=8,
        num_attention_heads=2,
        sample_size=8,
    )
    return LDMUNet(**{**kwargs, **overrides})


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(num_attention_heads=None), "exactly one of num_attention_heads"),
        (dict(attention_head_dim=8), "exactly one of num_attention_heads"),
        (dict(attention_levels=(True,)), "attention_levels has 1 entries"),
        (dict(num_attention_heads=(1, 2, 4)), "num_attention_heads has 3 entries"),
        (dict(transformer_depth=(1, 2, 3), cross_attention_dim=8), "transformer_depth has 3 entries"),
        (dict(resnet_time_scale_shift="spatial"), "resnet_time_scale_shift must be one of"),
        (dict(norm_num_groups=12), "norm_num_groups=12 does not divide"),
        (dict(num_attention_heads=None, attention_head_dim=64), "check num_attention_heads / attention_head_dim"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**overrides)


def test_forward_errors():
    plain = _tiny()
    cross = _tiny(cross_attention_dim=8)
    classes = _tiny(num_class_embeds=5)
    z = torch.randn(2, 4, 8, 8)
    cases = [
        (lambda: plain(torch.randn(2, 6, 8, 8), 1), "in_channels=4"),
        (lambda: plain(torch.randn(4, 8, 8), 1), r"sample must be \(B, in_channels=4, H, W\)"),
        (lambda: plain(z, 1, encoder_hidden_states=torch.randn(2, 3, 8)), "encoder_hidden_states was given"),
        (lambda: cross(z, 1), "encoder_hidden_states .* is required"),
        (lambda: cross(z, 1, encoder_hidden_states=torch.randn(2, 3, 5)), "cross_attention_dim=8"),
        (lambda: cross(z, 1, encoder_hidden_states=torch.randn(1, 3, 8)), r"must be \(B=2, L"),
        (lambda: plain(z, 1, class_labels=torch.tensor([0, 1])), "class_labels was given"),
        (lambda: classes(z, 1), "class_labels .* is required"),
        (lambda: plain(z, torch.tensor([1, 2, 3])), "timestep must be a scalar or have one entry per sample"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(use_linear_projection=True), "use_linear_projection=True"),
        (dict(only_cross_attention=True), "only_cross_attention=True"),
        (dict(mid_block_type=None), "mid_block_type=None"),
        (dict(class_embed_type="timestep"), "class_embed_type='timestep'"),
        (dict(layers_per_block=(1, 2, 2, 2)), "layers_per_block: per-block values"),
        (
            dict(down_block_types=("SimpleCrossAttnDownBlock2D",) * 4),
            r"down_block_types\[0\]='SimpleCrossAttnDownBlock2D'",
        ),
        (
            dict(up_block_types=("CrossAttnUpBlock2D",) * 4),
            r"up_block_types\[0\]='CrossAttnUpBlock2D' does not mirror",
        ),
        (dict(time_embedding_type="fourier"), "time_embedding_type='fourier'"),
        (dict(transformer_layers_per_block=((1, 2), (1, 1), (1, 1), (1, 1))), "transformer_layers_per_block"),
    ],
)
def test_config_rejections_conditional(change, match):
    with pytest.raises(ValueError, match=match):
        convert_unet_config(dict(repos.TINY_TEXT2IM_UNET, _class_name="UNet2DConditionModel", **change))


@pytest.mark.parametrize(
    "base, change, match",
    [
        (CHURCHES_LIKE, dict(attn_norm_num_groups=None), "attn_norm_num_groups=None with resnet_time_scale_shift"),
        (CHURCHES_LIKE, dict(attn_norm_num_groups=4), "attn_norm_num_groups=4 differs"),
        (CHURCHES_LIKE, dict(upsample_type="conv"), "mix convolution and ResBlock resampling"),
        (
            repos.TINY_SR_UNET,  # DownBlock2D ignores downsample_type="resnet": levels would disagree
            dict(
                downsample_type="resnet",
                down_block_types=("AttnDownBlock2D",) + ("DownBlock2D",) * 3,
                up_block_types=("UpBlock2D",) * 3 + ("AttnUpBlock2D",),
            ),
            "mix convolution",
        ),
        (repos.TINY_SR_UNET, dict(center_input_sample=True), "center_input_sample=True"),
        (
            repos.TINY_SR_UNET,
            dict(down_block_types=("SkipDownBlock2D",) * 4),
            r"down_block_types\[0\]='SkipDownBlock2D'",
        ),
    ],
)
def test_config_rejections_unconditional(base, change, match):
    with pytest.raises(ValueError, match=match):
        convert_unet_config(dict(base, _class_name="UNet2DModel", **change))


def test_state_dict_errors_name_the_key():
    theirs = UNet2DModel(**repos.TINY_SR_UNET)
    model = LDMUNet(**convert_unet_config(dict(theirs.config)))
    state = dict(theirs.state_dict())
    missing = {k: v for k, v in state.items() if k != "mid_block.attentions.0.to_q.weight"}
    with pytest.raises(ConversionError, match="mid_block.attentions.0.to_q.weight"):
        convert_unet_state_dict(missing, model)
    wrong = dict(state, **{"conv_in.weight": torch.zeros(32, 3, 3, 3)})
    with pytest.raises(ConversionError, match=r"shape mismatch for 'conv_in.weight'"):
        convert_unet_state_dict(wrong, model)
    extra = dict(state, **{"up_blocks.0.attentions.9.to_q.weight": torch.zeros(1)})
    with pytest.raises(ConversionError, match="up_blocks.0.attentions.9.to_q.weight"):
        convert_unet_state_dict(extra, model)


# ----------------------------------------------------------------------------- published full-size configs


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls, kwargs, size, params",
    [
        (UNet2DConditionModel, repos.TEXT2IM_UNET, (32, 32), 872_300_484),  # CompVis/ldm-text2im-large-256
        pytest.param(
            UNet2DModel,
            repos.SR_UNET,
            (64, 64),
            113_622_563,  # CompVis/ldm-super-resolution-4x-openimages
            marks=pytest.mark.ci,
        ),
    ],
    ids=["text2im-large-256", "super-resolution-4x"],
)
def test_parity_published_full_size(cls, kwargs, size, params):
    start = time.perf_counter()
    theirs, ours = _build(cls, kwargs)
    built = time.perf_counter()
    assert sum(p.numel() for p in ours.parameters()) == params  # the CompVis YAML's parameter count
    sample, cond = _inputs(theirs, size, batch=1)
    t = torch.tensor([421])
    with torch.no_grad():
        expected = theirs(sample, t, **cond).sample
        del theirs
        gc.collect()
        t0 = time.perf_counter()
        got = ours(sample, t, **cond).sample
        ours_s = time.perf_counter() - t0
    print(
        f"\n[{cls.__name__} full] max abs diff {max_abs_diff(got, expected):.3e}; build+convert "
        f"{built - start:.1f}s, our forward {ours_s:.1f}s, total {time.perf_counter() - start:.1f}s"
    )
    del ours
    gc.collect()
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=SLOW_ATOL)
