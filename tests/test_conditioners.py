"""The conditioning house: one Conditioner per mode picked from the components, the one ε_θ call that sampling,
the CUDA-graph loop runner and training all go through, and the one validator per input kind.

The structural figures (mode mentions, layering, file sizes, the UNet called only from models/denoiser.py) are
in tests/test_architecture.py; this file checks the same things at run time.
"""

from __future__ import annotations

import PIL.Image
import pytest
import torch

import ldm_hub
from ldm_hub import LDMPipeline
from ldm_hub.conditioning import CONDITIONERS, conditioner_class, conditioner_for
from ldm_hub.conditioning.inputs import check_box
from ldm_hub.models import denoiser
from ldm_hub.presets import PRESETS, build_pipeline

# What every named pipeline preset and shipped default model is conditioned on (as before the conditioners).
PRESET_MODES = {
    "text2im-large-256": "text",
    "text2im-tiny": "text",
    "superres-4x-openimages": "superres",
    "superres-tiny": "superres",
    "celebahq-256": "unconditional",
    "unconditional-tiny": "unconditional",
}
DEFAULT_MODEL_MODES = {
    "text": ("semantic", ("text", "layout", "semantic")),
    "layout": ("semantic", ("text", "layout", "semantic")),
    "superres": ("superres", ("superres",)),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_keeps_its_mode(name):
    """Each pipeline preset's conditioner is read off its components (the published sizes on the meta device)."""
    assert name in PRESET_MODES, f"preset {name!r} has no expected mode in this test: add it"
    with torch.device("meta" if "tiny" not in name else "cpu"):
        pipe = build_pipeline(name)
    assert pipe.conditioning == PRESET_MODES[name]
    assert type(pipe.conditioner).mode == pipe.conditioning


@pytest.mark.parametrize("task", sorted(DEFAULT_MODEL_MODES))
def test_shipped_default_models_keep_their_mode(task):
    pipe = LDMPipeline.from_pretrained(ldm_hub.default_model_path(task))
    mode, tasks = DEFAULT_MODEL_MODES[task]
    assert pipe.conditioning == mode and pipe.tasks == tasks and task in pipe.tasks


def test_conditioner_table_and_lookup():
    assert len({c.mode for c in CONDITIONERS}) == len(CONDITIONERS) == 7
    for cls in CONDITIONERS:
        assert conditioner_class(cls.mode) is cls
        assert cls.key in ("crossattn", "concat", None)
        assert isinstance(cls.tab_title, str) and isinstance(cls.api_name, str)
    with pytest.raises(ValueError, match=r"unknown conditioning mode 'img2img'; choose one of \['class'"):
        conditioner_class("img2img")


# ---------------------------------------------------------------------------------------------- one ε_θ call
@pytest.fixture
def counted(monkeypatch):
    """Count calls of the one ε_θ function and of the UNet itself: each UNet call must come from it."""
    counts = {"predict_noise": 0, "unet": 0, "inside": 0}
    real = denoiser.predict_noise

    def predict_noise(*args, **kwargs):
        counts["predict_noise"] += 1
        counts["inside"] += 1
        try:
            return real(*args, **kwargs)
        finally:
            counts["inside"] -= 1

    monkeypatch.setattr(denoiser, "predict_noise", predict_noise)

    def watch(unet):
        forward = unet.forward

        def counted_forward(*args, **kwargs):
            assert counts["inside"] == 1, "the UNet was called from outside models/denoiser.predict_noise"
            counts["unet"] += 1
            return forward(*args, **kwargs)

        monkeypatch.setattr(unet, "forward", counted_forward)

    return counts, watch


def test_sampling_and_the_graph_runner_go_through_the_one_call(counted):
    counts, watch = counted
    pipe = build_pipeline("text2im-tiny")
    pipe.set_progress_bar_config(disable=True)
    watch(pipe.unet)
    pipe("a red circle", num_inference_steps=3, guidance_scale=2.0, output_type="latent")
    assert counts["predict_noise"] == counts["unet"] == 3  # one batched call per guided step

    condition = pipe.conditioner.prepare(
        {"prompt": "a red circle"}, guide=True, num_images_per_prompt=1, batch_size=1, generator=None,
        height=None, width=None, device=torch.device("cpu"),
    )  # fmt: skip
    run = pipe._loop_runner(4, 2.0, {}, torch.device("cpu"))  # what enable_cuda_graph records
    latents = torch.randn(1, pipe.latent_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    run(latents, condition.context, None)
    assert counts["predict_noise"] == counts["unet"] == 7


def test_tiled_sampling_goes_through_the_one_call(counted):
    counts, watch = counted
    pipe = build_pipeline("superres-tiny")
    pipe.set_progress_bar_config(disable=True)
    watch(pipe.unet)
    multiple = pipe.conditioner.size_multiple
    side = 2 * pipe.conditioner.unet_downsampling * 2  # a low-res image of 2×2 tiles
    low_res = PIL.Image.new("RGB", (side, side), "white")
    pipe(image=low_res, num_inference_steps=2, tile_size=multiple * 2, tile_overlap=0, output_type="latent")
    assert counts["predict_noise"] == 2 and counts["unet"] >= 2


def test_a_training_step_goes_through_the_one_call(counted, tmp_path):
    from ldm_hub.training import AutoencoderTrainingConfig, LDMTrainingConfig, train_autoencoder, train_ldm

    counts, _ = counted
    tiny = dict(dataset="shapes:8", batch_size=2, log_every=1, progress_bar=False, report_to="none")
    ae = tmp_path / "ae"
    train_autoencoder(AutoencoderTrainingConfig(output_dir=str(ae), model="kl-f4-tiny", max_steps=1, **tiny))
    train_ldm(
        LDMTrainingConfig(
            output_dir=str(tmp_path / "ldm"), autoencoder=str(ae), conditioning="text", model="tiny-text",
            vocab="captions", max_steps=1, sample_every=0, num_sample_images=1, sample_steps=1, **tiny,
        )
    )  # fmt: skip
    # one optimizer step (one ε_θ call) plus the final sample grid's one step
    assert counts["predict_noise"] >= 2


# ---------------------------------------------------------------------------------------------- conditioners
def test_a_cross_attention_unet_without_its_encoder_takes_embeddings():
    """Loaded with cond_encoder=None and tokenizer=None, a text model is still a text model: it takes
    precomputed ``prompt_embeds`` and says why ``prompt`` cannot be used."""
    full = build_pipeline("text2im-tiny")
    full.set_progress_bar_config(disable=True)
    bare = LDMPipeline(vae=full.vae, unet=full.unet, scheduler=full.scheduler)
    bare.set_progress_bar_config(disable=True)
    assert bare.conditioning == "text"
    embeds, _ = full.encode_prompt("a red circle", do_classifier_free_guidance=False)
    generator = torch.Generator().manual_seed(0)
    ours = bare(prompt_embeds=embeds, num_inference_steps=2, generator=generator, output_type="pt").images
    generator = torch.Generator().manual_seed(0)
    theirs = full("a red circle", num_inference_steps=2, generator=generator, output_type="pt").images
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"no text encoder .* pass `prompt_embeds`"):
        bare("a red circle", num_inference_steps=1)


def test_conditioner_follows_a_swapped_component():
    pipe = build_pipeline("text2im-tiny")
    first = pipe.conditioner
    assert pipe.conditioner is first  # made once per set of components
    sr = build_pipeline("superres-tiny")
    pipe.unet, pipe.vae, pipe.cond_encoder, pipe.tokenizer = sr.unet, sr.vae, None, None
    assert pipe.conditioning == "superres" and pipe.conditioner is not first


def test_components_that_fit_no_mode_are_refused():
    from ldm_hub.conditioning import LayoutPlanner

    sr = build_pipeline("superres-tiny")
    with pytest.raises(ValueError, match=r"a `layout_planner` draws maps for a semantic-map model"):
        conditioner_for(sr.vae, sr.unet, None, None, LayoutPlanner(labels=["a"]))


# ---------------------------------------------------------------------------------------------- one box rule
BAD_BOXES = [
    ([0.2, 0.1, 0.2, 0.5], "zero width or height"),
    ([0.2, 0.5, 0.4, 0.5], "zero width or height"),
    ([0.4, 0.1, 0.2, 0.5], "has x1 < x0 or y1 < y0"),
    ([0.0, 0.0, 1.2, 0.5], r"is outside \[0, 1\]"),
    ([0.0, float("nan"), 0.5, 0.5], r"is outside \[0, 1\]"),
    ([0.0, 0.0, 0.5], "must be four numbers"),
    ([0, 0, True, 1], "must be four numbers"),
]


@pytest.mark.parametrize("box,message", BAD_BOXES, ids=[m for _, m in BAD_BOXES])
def test_one_box_rule_everywhere(box, message):
    """The tokenizer, the planner's rasteriser, the training row reader and the demo's table all refuse the
    same boxes (0 ≤ x0 < x1 ≤ 1 and 0 ≤ y0 < y1 ≤ 1), with the shared rule's reason."""
    from ldm_hub.conditioning import LayoutTokenizer
    from ldm_hub.conditioning.layout_planner import layout_to_segmentation
    from ldm_hub.demo import parse_layout
    from ldm_hub.training.data import BadRowError, check_layout

    with pytest.raises(ValueError, match=message):
        check_box(box)
    layout = [{"label": "a", "box": box}]
    with pytest.raises(ValueError, match=message):
        LayoutTokenizer(categories=["a"])(layout)
    with pytest.raises(ValueError, match=message):
        layout_to_segmentation(layout, (8, 8), ["a"])
    with pytest.raises(BadRowError, match=r"row 4, column 'layout': object 0 box .*" + message):
        check_layout(layout, 4, "layout")
    if len(box) == 4 and not any(isinstance(v, bool) for v in box) and box == box:
        import gradio as gr

        with pytest.raises(gr.Error, match="lies outside the canvas|is empty or inverted"):
            parse_layout([["a", *box]], categories=["a"])


def test_the_box_rule_accepts_edges():
    assert check_box([0, 0, 1, 1]) == (0.0, 0.0, 1.0, 1.0)
    assert check_box((0.25, 0.5, 0.75, 0.5 + 1e-6))[3] > 0.5
