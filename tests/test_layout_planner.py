"""LayoutPlanner (captions → layouts → maps) and the semantic-map pipeline that reads prompts and boxes with it."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch

from ldm_hub import LayoutPlanner, LDMPipeline, LDMUNet, SemanticMapEncoder
from ldm_hub.conditioning.layout_planner import layout_to_segmentation
from ldm_hub.data.shapes import LABELS, MAX_OBJECTS, MIN_GAP, make_shapes_dataset, parse_caption


def test_parse_keeps_the_written_order_and_names_bad_captions():
    planner = LayoutPlanner(labels=list(LABELS))
    assert planner.parse("a Yellow Triangle, a red circle and a blue square") == [
        "yellow triangle",
        "red circle",
        "blue square",
    ]
    with pytest.raises(ValueError, match="names none of this model's 12 objects"):
        planner.parse("a purple hexagon")
    with pytest.raises(ValueError, match="names 4 objects; this model was trained on at most 3"):
        planner.parse("a red circle, a red square, a blue square and a green circle")
    with pytest.raises(TypeError, match="must be a str"):
        planner.parse(3)
    with pytest.raises(ValueError, match="duplicates"):
        LayoutPlanner(labels=["a", "a"])


def test_fit_recovers_the_shapes_prior_and_plans_follow_it():
    ds = make_shapes_dataset(400, seed=3)
    planner = LayoutPlanner.fit(ds["layout"], LABELS)
    c = planner.config
    # the dataset draws square, whole-pixel boxes of 14..27 px on 64 px, >= MIN_GAP px apart, 1..3 per scene
    assert 14 / 64 <= c.min_side <= 16 / 64 and 25 / 64 <= c.max_side <= 27 / 64
    assert c.min_aspect == c.max_aspect == 1.0 and c.min_gap >= MIN_GAP / 64 and c.max_objects == MAX_OBJECTS
    captions = [row["caption"] for row in ds.select(range(50))]
    layouts = planner.plan(captions, seed=0)
    for caption, layout in zip(captions, layouts):
        assert [obj["label"] for obj in layout] == parse_caption(caption)
        boxes = np.array([obj["box"] for obj in layout])
        assert (boxes >= 0).all() and (boxes <= 1).all()
        sides = boxes[:, 2] - boxes[:, 0]
        assert (sides >= c.min_side - 1e-6).all() and (sides <= c.max_side + 1e-6).all()
        centres = (boxes[:, 0] + boxes[:, 2]) / 2
        assert (np.diff(centres) >= 0).all()  # left to right, as the captions read
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                gap = max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])
                assert gap >= c.min_gap - 1e-6
    assert layouts == planner.plan(captions, seed=0) and layouts != planner.plan(captions, seed=1)


def test_generators_make_plans_reproducible_and_independent_per_caption():
    planner = LayoutPlanner(labels=list(LABELS))
    captions = ["a red circle and a blue square", "a green triangle"]
    both = planner.plan(captions, generator=[torch.Generator().manual_seed(s) for s in (5, 6)])
    alone = planner.plan(captions[1:], generator=[torch.Generator().manual_seed(6)])
    assert both[1] == alone[0]
    assert planner.plan(captions, generator=torch.Generator().manual_seed(5)) == planner.plan(
        captions, generator=torch.Generator().manual_seed(5)
    )


def test_rasterize_and_layout_errors():
    planner = LayoutPlanner(labels=["red circle", "blue square"])
    (m,) = planner.rasterize(
        [[{"label": "red circle", "box": [0.5, 0.5, 1.0, 1.0]}, {"label": 1, "box": [0, 0, 0.25, 0.25]}]], (8, 8)
    )
    ids = np.asarray(m)
    assert ids[6, 6] == 1 and ids[0, 0] == 2 and ids[0, 7] == 0 and m.mode == "L"
    with pytest.raises(ValueError, match=r"object 0 label 'green circle' is not one of the 2 categories"):
        layout_to_segmentation([{"label": "green circle", "box": [0, 0, 1, 1]}], (8, 8), planner.labels)
    with pytest.raises(ValueError, match=r"object 0 box \[0, 0, 1.5, 1\] is outside \[0, 1\]"):
        layout_to_segmentation([{"label": "red circle", "box": [0, 0, 1.5, 1]}], (8, 8), planner.labels)


def test_save_and_load_round_trip(tmp_path):
    planner = LayoutPlanner(labels=list(LABELS), min_side=0.2, max_side=0.3, min_gap=0.05, max_objects=2)
    planner.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "planner_config.json").read_text())["labels"] == list(LABELS)
    loaded = LayoutPlanner.from_pretrained(tmp_path)
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in planner.config.items() if not k.startswith("_")
    }
    assert loaded.plan(["a red circle"], seed=2) == planner.plan(["a red circle"], seed=2)


# ---------------------------------------------------------------------------------------------- in the pipeline
@pytest.fixture(scope="module")
def planned_pipe():
    from ldm_hub.presets import build_pipeline

    base = build_pipeline("text2im-tiny", seed=0)
    torch.manual_seed(0)
    unet = LDMUNet(
        in_channels=4 + 13,
        out_channels=4,
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(False, False),
        mid_block_attention=False,
        norm_num_groups=8,
    ).eval()
    planner = LayoutPlanner(labels=list(LABELS))
    pipe = LDMPipeline(
        vae=base.vae,
        unet=unet,
        scheduler=base.scheduler,
        cond_encoder=SemanticMapEncoder(num_classes=13, out_channels=13).eval(),
        layout_planner=planner,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_prompt_is_the_planned_map(planned_pipe):
    pipe, prompt = planned_pipe, ["a red circle and a blue square", "a green triangle"]
    assert pipe.conditioning == "semantic" and pipe.tasks == ("text", "layout", "semantic")
    gens = [torch.Generator().manual_seed(s) for s in (0, 1, 2, 3)]
    out = pipe(prompt=prompt, num_images_per_prompt=2, generator=gens, num_inference_steps=3, output_type="np").images
    # by hand: each image's generator first plans its layout, then draws its z_T
    gens = [torch.Generator().manual_seed(s) for s in (0, 1, 2, 3)]
    layouts = pipe.layout_planner.plan([prompt[0]] * 2 + [prompt[1]] * 2, generator=gens)
    maps = pipe.layout_planner.rasterize(layouts, (32, 32))
    ref = pipe(segmentation=maps, generator=gens, num_inference_steps=3, output_type="np").images
    assert out.shape == (4, 32, 32, 3)
    assert np.array_equal(out, ref)
    assert layouts[0] != layouts[1]  # every image of a prompt gets its own plan


def test_boxes_are_drawn_as_the_map(planned_pipe):
    layout = [
        {"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]},
        {"label": "blue square", "box": [0.6, 0.2, 0.9, 0.5]},
    ]
    out = planned_pipe(
        layout=layout, generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np"
    ).images
    seg = layout_to_segmentation(layout, (32, 32), LABELS)
    ref = planned_pipe(
        segmentation=seg, generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np"
    ).images
    assert np.array_equal(out, ref)
    two = planned_pipe(layout=[layout, layout[:1]], num_inference_steps=2, output_type="np").images
    assert two.shape == (2, 32, 32, 3)


def test_planned_pipe_errors(planned_pipe):
    with pytest.raises(ValueError, match="reads a `prompt` only through its layout planner"):
        planned_pipe(prompt="a red circle", negative_prompt="a blue square", num_inference_steps=1)
    with pytest.raises(ValueError, match="pass one of `prompt`, `layout` and `segmentation`"):
        planned_pipe(prompt="a red circle", segmentation=PIL.Image.new("L", (32, 32)), num_inference_steps=1)
    with pytest.raises(ValueError, match="classifier-free guidance needs an unconditional input"):
        planned_pipe(prompt="a red circle", guidance_scale=3.0, num_inference_steps=1)
    with pytest.raises(ValueError, match="names none of this model's"):
        planned_pipe(prompt="a cat", num_inference_steps=1)
    with pytest.raises(ValueError, match="got 1 generators for a batch of 2 images"):
        planned_pipe(
            prompt="a red circle", num_images_per_prompt=2, generator=[torch.Generator()], num_inference_steps=1
        )
    without = LDMPipeline(
        vae=planned_pipe.vae,
        unet=planned_pipe.unet,
        scheduler=planned_pipe.scheduler,
        cond_encoder=planned_pipe.cond_encoder,
    )
    assert without.tasks == ("semantic",)
    with pytest.raises(ValueError, match="`layout` cannot be used with this model: its conditioning is 'semantic'"):
        without(layout=[{"label": "red circle", "box": [0, 0, 1, 1]}], num_inference_steps=1)
    with pytest.raises(ValueError, match="`cond_encoder` must be a SemanticMapEncoder"):
        LDMPipeline(
            vae=planned_pipe.vae,
            unet=planned_pipe.unet,
            scheduler=planned_pipe.scheduler,
            layout_planner=planned_pipe.layout_planner,
        )


def test_planned_pipe_saves_and_loads(planned_pipe, tmp_path):
    planned_pipe.save_pretrained(tmp_path / "m")
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["layout_planner"] == ["ldm_hub", "LayoutPlanner"]
    loaded = LDMPipeline.from_pretrained(tmp_path / "m")
    assert loaded.tasks == ("text", "layout", "semantic")
    a = planned_pipe(
        prompt="a red circle", generator=torch.Generator().manual_seed(4), num_inference_steps=2, output_type="np"
    ).images
    b = loaded(
        prompt="a red circle", generator=torch.Generator().manual_seed(4), num_inference_steps=2, output_type="np"
    ).images
    np.testing.assert_allclose(a, b, atol=1e-5)
