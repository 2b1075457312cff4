"""The Gradio demo end to end through gradio_client: every named endpoint, its results against the pipeline's own
output for the same seed and settings, the limits and every bad input of issue 6, and `ldm-hub demo`."""

from __future__ import annotations

import inspect
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import ldm_hub
from ldm_hub import LDMPipeline
from ldm_hub.demo import (
    DemoSettings,
    build_demo,
    default_models,
    draw_layout,
    guard_upload,
    launch,
    load_pipelines,
    parse_layout,
)
from ldm_hub.presets import PRESETS, build_pipeline

REPO = Path(__file__).resolve().parents[1]
# Small caps so the limit tests need only small files; the sampling defaults are the shipped ones.
SETTINGS = DemoSettings(max_input_side=64, max_side=256, max_upload_mb=0.02)
DEFAULT = DemoSettings()
LAYOUT_CATEGORIES = ["red circle", "blue square", "green triangle"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(path: Path, array: np.ndarray) -> Path:
    PIL.Image.fromarray(array).save(path)
    return path


def random_rgb(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def pixels(path_or_image) -> np.ndarray:
    image = path_or_image if isinstance(path_or_image, PIL.Image.Image) else PIL.Image.open(path_or_image)
    return np.asarray(image.convert("RGB"))


def assert_same_image(returned, expected: PIL.Image.Image):
    got, want = pixels(returned), pixels(expected)
    assert got.shape == want.shape
    diff = int(np.abs(got.astype(int) - want.astype(int)).max())
    print(f"max abs pixel difference (uint8): {diff}")
    assert diff == 0


def gallery_paths(gallery) -> list[str]:
    return [item["image"] for item in gallery]


def reference(pipe, seed: int, scheduler=None, **kwargs) -> list[PIL.Image.Image]:
    """The pipeline's own output for the demo's settings (same models, fresh scheduler)."""
    components = dict(pipe.components)
    components["scheduler"] = (scheduler or type(pipe.scheduler)).from_config(pipe.scheduler.config)
    run = LDMPipeline(**components)
    run.set_progress_bar_config(disable=True)
    return run(generator=torch.Generator().manual_seed(seed), **kwargs).images


# ------------------------------------------------------------------------------ tiny models of every mode
def _part(preset: str, name: str, **changes):
    class_name, kwargs = PRESETS[preset][name]
    return getattr(ldm_hub, class_name)(**{**kwargs, **changes}).eval()


def _scheduler(preset: str):
    class_name, kwargs = PRESETS[preset]["scheduler"]
    return getattr(ldm_hub, class_name)(**kwargs)


def tiny_mode_pipelines() -> dict[str, LDMPipeline]:
    """Tiny layout / class / semantic / inpainting pipelines (engineer B's modes), where the library has them."""
    try:
        from ldm_hub.conditioning.class_label import ClassEmbedder
        from ldm_hub.conditioning.layout import LayoutTokenizer
        from ldm_hub.conditioning.semantic_map import SemanticMapEncoder
    except ImportError:
        return {}
    torch.manual_seed(0)
    tokenizer = LayoutTokenizer(vocab_size=64, max_objects=4, categories=LAYOUT_CATEGORIES)
    layout_encoder = ldm_hub.LDMBertModel(
        vocab_size=64,
        max_position_embeddings=tokenizer.sequence_length,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        attention_head_dim=16,
        intermediate_size=64,
    ).eval()
    candidates = {
        "layout": dict(
            vae=_part("text2im-tiny", "vae"),
            unet=_part("text2im-tiny", "unet"),
            scheduler=_scheduler("text2im-tiny"),
            cond_encoder=layout_encoder,
            tokenizer=tokenizer,
        ),
        "class": dict(
            vae=_part("text2im-tiny", "vae"),
            unet=_part("text2im-tiny", "unet"),
            scheduler=_scheduler("text2im-tiny"),
            cond_encoder=ClassEmbedder(num_classes=11, embed_dim=32, null_class=10).eval(),
        ),
        "semantic": dict(
            vae=_part("superres-tiny", "vae"),
            unet=_part("superres-tiny", "unet"),
            scheduler=_scheduler("superres-tiny"),
            cond_encoder=SemanticMapEncoder(num_classes=5, out_channels=3).eval(),
        ),
        "inpaint": dict(
            vae=_part("superres-tiny", "vae"),
            unet=_part("superres-tiny", "unet", in_channels=7),
            scheduler=_scheduler("superres-tiny"),
        ),
    }
    pipes = {}
    for mode, parts in candidates.items():
        pipe = LDMPipeline(**parts)
        if pipe.conditioning == mode:
            pipes[mode] = pipe
    return pipes


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-models")
    dirs = {}
    for mode, preset in (
        ("text", "text2im-tiny"),
        ("superres", "superres-tiny"),
        ("unconditional", "unconditional-tiny"),
    ):
        build_pipeline(preset).save_pretrained(root / mode)
        dirs[mode] = root / mode
    return dirs


@pytest.fixture(scope="module")
def app(model_dirs):
    """The app on 127.0.0.1 with every mode's tiny model, the text/SR/unconditional ones loaded from folders."""
    pipes, names = load_pipelines([str(d) for d in model_dirs.values()])
    pipes.update(tiny_mode_pipelines())
    demo = build_demo(pipes, SETTINGS, model_names=names)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    client = Client(url, verbose=False)
    yield client, pipes, url, demo
    client.close() if hasattr(client, "close") else None
    demo.close()


def needs(pipes, mode):
    if mode not in pipes:
        pytest.skip(f"LDMPipeline has no {mode!r} conditioning in this tree yet")


# ------------------------------------------------------------------------------ the endpoints
def test_named_endpoints_and_queue(app):
    client, pipes, _, demo = app
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    expected = {
        "text": "/text_to_image",
        "superres": "/super_resolution",
        "unconditional": "/unconditional",
        "layout": "/layout_to_image",
        "class": "/class_to_image",
        "semantic": "/semantic_to_image",
        "inpaint": "/inpaint",
    }
    assert {expected[mode] for mode in pipes} == endpoints
    # One queue: every sampling endpoint shares one concurrency group capped by the settings.
    fns = [fn for fn in demo.fns.values() if fn.api_name and f"/{fn.api_name}" in endpoints]
    assert fns and {(fn.concurrency_id, fn.concurrency_limit) for fn in fns} == {("sampling", 1)}
    assert demo._queue.max_size == SETTINGS.max_queue_size


def test_text_to_image_defaults_match_pipeline(app):
    client, pipes, _, _ = app
    gallery, seed = client.predict("a red circle and a blue square", api_name="/text_to_image")
    assert seed == 0 and len(gallery) == 1
    path = gallery_paths(gallery)[0]
    assert path.endswith(".png")
    expected = reference(
        pipes["text"],
        0,
        prompt="a red circle and a blue square",
        num_inference_steps=DEFAULT.default_steps,
        guidance_scale=DEFAULT.default_text_guidance,
    )
    assert_same_image(path, expected[0])


def test_text_to_image_every_setting(app):
    client, pipes, _, _ = app
    gallery, seed = client.predict(
        "a green triangle",
        negative_prompt="blurry",
        steps=4,
        guidance_scale=2.0,
        seed=11,
        randomize_seed=False,
        scheduler="dpm++",
        num_images=2,
        height=16,
        width=48,
        api_name="/text_to_image",
    )
    assert seed == 11 and len(gallery) == 2
    expected = reference(
        pipes["text"],
        11,
        scheduler=ldm_hub.DPMSolverMultistepScheduler,
        prompt="a green triangle",
        negative_prompt="blurry",
        num_inference_steps=4,
        guidance_scale=2.0,
        num_images_per_prompt=2,
        height=16,
        width=48,
    )
    for path, image in zip(gallery_paths(gallery), expected):
        assert PIL.Image.open(path).size == (48, 16)
        assert_same_image(path, image)


def test_randomised_seed_is_returned_and_reproducible(app):
    client, pipes, _, _ = app
    gallery, seed = client.predict("a yellow square", steps=2, seed=5, randomize_seed=True, api_name="/text_to_image")
    assert isinstance(seed, int) and 0 <= seed <= SETTINGS.max_seed
    expected = reference(
        pipes["text"],
        seed,
        prompt="a yellow square",
        num_inference_steps=2,
        guidance_scale=DEFAULT.default_text_guidance,
    )
    assert_same_image(gallery_paths(gallery)[0], expected[0])


def test_super_resolution_defaults_match_pipeline(app, tmp_path):
    client, pipes, _, _ = app
    low = png(tmp_path / "low.png", random_rgb(16))
    (before, after), gallery, seed = client.predict(handle_file(str(low)), api_name="/super_resolution")
    assert seed == 0
    expected = reference(
        pipes["superres"], 0, image=PIL.Image.open(low).convert("RGB"), num_inference_steps=DEFAULT.default_steps
    )[0]
    assert expected.size == (64, 64)
    assert_same_image(after, expected)
    assert_same_image(gallery_paths(gallery)[0], expected)
    assert PIL.Image.open(before).size == (64, 64)  # the bicubic "before" at the output size


def test_super_resolution_tiles_large_inputs(app, tmp_path):
    client, pipes, _, _ = app
    pipe = pipes["superres"]
    if "tile_size" not in inspect.signature(LDMPipeline.__call__).parameters:
        pytest.skip("LDMPipeline has no tiled sampling in this tree yet")
    low = png(tmp_path / "large.png", random_rgb(32, seed=1))  # latent 32 > the UNet's 16: tiled
    (_, after), _, _ = client.predict(handle_file(str(low)), steps=3, api_name="/super_resolution")
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    expected = reference(pipe, 0, image=PIL.Image.open(low).convert("RGB"), num_inference_steps=3, tile_size=native)[0]
    assert expected.size == (128, 128)
    assert_same_image(after, expected)


def test_unconditional_defaults_match_pipeline(app):
    client, pipes, _, _ = app
    gallery, seed = client.predict(api_name="/unconditional")
    assert seed == 0
    expected = reference(pipes["unconditional"], 0, batch_size=1, num_inference_steps=DEFAULT.default_steps)
    assert_same_image(gallery_paths(gallery)[0], expected[0])


LAYOUT_TABLE = {
    "headers": ["label", "x0", "y0", "x1", "y1"],
    "data": [["red circle", 0.1, 0.1, 0.5, 0.45], ["blue square", 0.5, 0.55, 0.95, 0.9]],
}
LAYOUT = [
    {"label": "red circle", "box": [0.1, 0.1, 0.5, 0.45]},
    {"label": "blue square", "box": [0.5, 0.55, 0.95, 0.9]},
]


def test_layout_to_image_matches_pipeline(app):
    client, pipes, _, _ = app
    needs(pipes, "layout")
    gallery, _ = client.predict(LAYOUT_TABLE, api_name="/layout_to_image")
    expected = reference(
        pipes["layout"], 0, layout=LAYOUT, num_inference_steps=DEFAULT.default_steps, guidance_scale=1.0
    )
    assert_same_image(gallery_paths(gallery)[0], expected[0])
    # Guidance (all-pad unconditional) and the boxes drawn over the result.
    gallery, _ = client.predict(
        LAYOUT_TABLE, overlay_boxes=True, steps=3, guidance_scale=2.5, seed=4, api_name="/layout_to_image"
    )
    guided = reference(pipes["layout"], 4, layout=LAYOUT, num_inference_steps=3, guidance_scale=2.5)[0]
    assert_same_image(gallery_paths(gallery)[0], draw_layout(LAYOUT, guided))


def test_class_to_image_matches_pipeline(app):
    client, pipes, _, _ = app
    needs(pipes, "class")
    gallery, _ = client.predict(3, api_name="/class_to_image")
    expected = reference(
        pipes["class"],
        0,
        class_labels=[3],
        num_inference_steps=DEFAULT.default_steps,
        guidance_scale=DEFAULT.default_text_guidance,
    )
    assert_same_image(gallery_paths(gallery)[0], expected[0])
    with pytest.raises(AppError, match="maximum"):  # the null class (10) is not offered
        client.predict(10, api_name="/class_to_image")


def test_semantic_to_image_matches_pipeline(app, tmp_path):
    client, pipes, _, _ = app
    needs(pipes, "semantic")
    labels = np.random.default_rng(2).integers(0, 5, (32, 32), dtype=np.uint8)
    path = png(tmp_path / "seg.png", labels)
    gallery, _ = client.predict(handle_file(str(path)), steps=3, api_name="/semantic_to_image")
    expected = reference(pipes["semantic"], 0, segmentation=PIL.Image.open(path), num_inference_steps=3)
    assert_same_image(gallery_paths(gallery)[0], expected[0])
    bad = png(tmp_path / "seg-bad.png", np.full((32, 32), 9, dtype=np.uint8))
    with pytest.raises(AppError, match="class id 9"):
        client.predict(handle_file(str(bad)), steps=1, api_name="/semantic_to_image")


def test_inpaint_matches_pipeline(app, tmp_path):
    client, pipes, _, _ = app
    needs(pipes, "inpaint")
    image = png(tmp_path / "photo.png", random_rgb(32, seed=3))
    brush = np.zeros((32, 32, 4), dtype=np.uint8)
    brush[8:20, 4:28] = 255  # painted, opaque white
    layer = png(tmp_path / "brush.png", brush)
    value = {"background": handle_file(str(image)), "layers": [handle_file(str(layer))], "composite": None}
    gallery, _ = client.predict(value, steps=3, api_name="/inpaint")
    mask = PIL.Image.fromarray((brush[..., 3] > 127).astype(np.uint8) * 255, mode="L")
    expected = reference(
        pipes["inpaint"], 0, image=PIL.Image.open(image).convert("RGB"), mask_image=mask, num_inference_steps=3
    )
    assert_same_image(gallery_paths(gallery)[0], expected[0])
    empty = png(tmp_path / "nothing.png", np.zeros((32, 32, 4), dtype=np.uint8))
    with pytest.raises(AppError, match="mask is empty"):
        client.predict(
            {"background": handle_file(str(image)), "layers": [handle_file(str(empty))], "composite": None},
            steps=1,
            api_name="/inpaint",
        )


# ------------------------------------------------------------------------------ limits and bad input
def test_bad_text_inputs_are_messages(app):
    client, _, _, _ = app
    cases = [
        (dict(prompt=""), "enter a prompt"),
        (dict(prompt="   "), "enter a prompt"),
        (dict(prompt="x" * (SETTINGS.max_prompt_chars + 1)), "the limit is 1000"),
        (dict(prompt="x", steps=SETTINGS.max_steps + 1), "greater than maximum value 200"),
        (dict(prompt="x", num_images=SETTINGS.max_images + 1), "greater than maximum value 4"),
        (dict(prompt="x", height=SETTINGS.max_side + 8), "greater than maximum value 256"),
        (dict(prompt="x", height=20, steps=1), "multiple of 8"),
        (dict(prompt="x", guidance_scale=-1), "less than minimum value 0"),
        (dict(prompt="x", scheduler="euler"), "not in the list of choices"),
    ]
    for kwargs, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(api_name="/text_to_image", **kwargs)


def test_bad_uploads_are_messages(app, tmp_path):
    client, _, url, _ = app
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is not an image")
    with pytest.raises(AppError, match="notes.png is not a readable image file"):
        client.predict(handle_file(str(not_image)), api_name="/super_resolution")
    too_many_pixels = png(tmp_path / "wide.png", np.zeros((8, SETTINGS.max_input_side + 4, 3), dtype=np.uint8))
    with pytest.raises(AppError, match="the limit is 64 per side"):
        client.predict(handle_file(str(too_many_pixels)), api_name="/super_resolution")
    # An upload over the size limit: refused by the client, and by the server (413) for any other caller.
    big = png(tmp_path / "big.png", random_rgb(96))
    assert big.stat().st_size > SETTINGS.max_upload_bytes
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), api_name="/super_resolution")
    with open(big, "rb") as f:
        response = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", f, "image/png")})
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_guard_upload_rejects_oversized_and_unreadable_files(tmp_path):
    from gradio.data_classes import ImageData

    image = guard_upload(gr.Image(type="filepath", image_mode=None, render=False), max_upload_bytes=1000)
    big = png(tmp_path / "big.png", random_rgb(64))
    with pytest.raises(gr.Error, match="the limit is 0.0 MB"):
        image.preprocess(ImageData(path=str(big), orig_name="big.png"))
    text = tmp_path / "a.png"
    text.write_text("x")
    with pytest.raises(gr.Error, match="a.png is not a readable image file"):
        image.preprocess(ImageData(path=str(text), orig_name="a.png"))
    small = png(tmp_path / "small.png", np.zeros((4, 4, 3), dtype=np.uint8))
    assert image.preprocess(ImageData(path=str(small), orig_name="small.png")) == str(small)


def test_layout_table_errors():
    ok = parse_layout([["red circle", 0.1, 0.1, 0.4, 0.4], ["", None, None, None, None]], categories=LAYOUT_CATEGORIES)
    assert ok == [{"label": "red circle", "box": [0.1, 0.1, 0.4, 0.4]}]
    assert parse_layout([["7", 0, 0, 1, 1]])[0]["label"] == 7  # an id, for models without category names
    cases = [
        (
            [["red circle", 0.1, 0.1, 1.2, 0.4]],
            "row 1 ('red circle'): box [0.1, 0.1, 1.2, 0.4] lies outside the canvas",
        ),
        ([["red circle", -0.1, 0.1, 0.5, 0.4]], "lies outside the canvas"),
        ([["red circle", 0.5, 0.1, 0.2, 0.4]], "x1 must exceed x0 and y1 must exceed y0"),
        ([["red circle", "a", 0.1, 0.2, 0.4]], "must be numbers"),
        ([["", 0.1, 0.1, 0.2, 0.4]], "row 1: the label is empty"),
        ([["purple star", 0.1, 0.1, 0.2, 0.4]], "unknown label 'purple star'; known labels include red circle"),
        ([], "add at least one box"),
        ([["red circle", 0, 0, 1, 1]] * 5, "at most 4"),
    ]
    for rows, message in cases:
        with pytest.raises(gr.Error, match=re.escape(message)):
            parse_layout(rows, categories=LAYOUT_CATEGORIES, max_objects=4)
    with pytest.raises(gr.Error, match="category ids only"):
        parse_layout([["red circle", 0, 0, 1, 1]], categories=None)


def test_layout_endpoint_errors_and_preview(app):
    client, pipes, _, _ = app
    needs(pipes, "layout")
    outside = {"headers": LAYOUT_TABLE["headers"], "data": [["red circle", 0.1, 0.1, 1.5, 0.4]]}
    with pytest.raises(AppError, match="outside the canvas"):
        client.predict(outside, api_name="/layout_to_image")
    preview = draw_layout(LAYOUT, size=64)
    array = pixels(preview)
    assert preview.size == (64, 64)
    assert tuple(array[int(0.1 * 63), 20]) == (255, 0, 0)  # the red circle's box edge, in red
    assert tuple(array[40, 40]) == (244, 244, 244)  # background inside no box


def test_progress_is_reported_every_step():
    from ldm_hub.demo import _sample

    calls = []
    pipe = build_pipeline("unconditional-tiny")
    images = _sample(pipe, lambda *args, **kwargs: calls.append(args[0]), scheduler="ddim", steps=3, seed=0)
    assert len(images) == 1 and calls == [0, (1, 3), (2, 3), (3, 3)]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_steps must be a whole number >= 1"):
        DemoSettings(max_steps=0)
    with pytest.raises(ValueError, match="default_steps .* exceeds max_steps"):
        DemoSettings(default_steps=60, max_steps=50)
    with pytest.raises(ValueError, match="max_upload_mb must be a number > 0"):
        DemoSettings(max_upload_mb=0.0)


# ------------------------------------------------------------------------------ models and the command line
def test_default_models_fall_back_to_shipped_ones(monkeypatch, model_dirs):
    shipped = {"text": model_dirs["text"], "layout": model_dirs["text"], "superres": model_dirs["superres"]}
    monkeypatch.setattr(ldm_hub, "default_model_path", lambda task: shipped[task], raising=False)
    assert default_models() == {"text": str(model_dirs["text"]), "superres": str(model_dirs["superres"])}
    pipes, names = load_pipelines(None)
    assert set(pipes) == {"text", "superres"} and names["superres"] == str(model_dirs["superres"])

    def nothing_shipped(task):
        raise FileNotFoundError(f"no default {task} model in this install")

    monkeypatch.setattr(ldm_hub, "default_model_path", nothing_shipped)
    with pytest.raises(ValueError, match="no model to serve: pass --model"):
        load_pipelines(None)
    with pytest.raises(ValueError, match="both 'text' models"):
        load_pipelines([str(model_dirs["text"]), str(model_dirs["text"]) + "/"])


def ldm_hub_exe() -> str:
    exe = shutil.which("ldm-hub", path=os.path.dirname(sys.executable))
    assert exe, "the ldm-hub console script is not installed next to this Python"
    return exe


def test_cli_demo_serves_the_app(model_dirs):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            ldm_hub_exe(),
            "demo",
            "--model",
            str(model_dirs["text"]),
            "--model",
            str(model_dirs["superres"]),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ldm-hub demo did not start in 180 s"
            time.sleep(0.5)
        client = Client(url, verbose=False)
        assert {"/text_to_image", "/super_resolution"} == set(
            client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        )
        gallery, _ = client.predict("a red circle", steps=2, seed=3, api_name="/text_to_image")
        pipe = LDMPipeline.from_pretrained(model_dirs["text"])
        expected = reference(
            pipe, 3, prompt="a red circle", num_inference_steps=2, guidance_scale=DEFAULT.default_text_guidance
        )
        assert_same_image(gallery_paths(gallery)[0], expected[0])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_space_entry_point_without_a_model_is_a_clean_error(tmp_path, monkeypatch, capsys):
    """`python demo/app.py` takes the options of `ldm-hub demo` and fails cleanly (exit 2, no traceback)."""
    monkeypatch.setattr(sys, "argv", ["app.py", "--model", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "demo" / "app.py"), run_name="__main__")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "model folder not found" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ a map model with a layout planner
def test_planner_backed_map_model_serves_text_and_layout_tabs():
    """The shipped default's design: one semantic-map model behind the text, layout and map tabs (no guidance)."""
    from ldm_hub import LayoutPlanner, SemanticMapEncoder

    torch.manual_seed(0)
    planner = LayoutPlanner(labels=LAYOUT_CATEGORIES + ["yellow circle"])
    pipe = LDMPipeline(
        vae=_part("superres-tiny", "vae"),
        unet=_part("superres-tiny", "unet"),
        scheduler=_scheduler("superres-tiny"),
        cond_encoder=SemanticMapEncoder(num_classes=5, out_channels=3).eval(),
        layout_planner=planner,
    )
    demo = build_demo([pipe], SETTINGS, model_names={"semantic": "planned"})
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert {"/text_to_image", "/layout_to_image", "/semantic_to_image"} <= set(endpoints)
        gallery, _ = client.predict("a red circle and a blue square", steps=2, seed=5, api_name="/text_to_image")
        expected = reference(pipe, 5, prompt="a red circle and a blue square", num_inference_steps=2)
        assert_same_image(gallery_paths(gallery)[0], expected[0])
        rows = {"headers": ["label", "x0", "y0", "x1", "y1"], "data": [["green triangle", 0.1, 0.1, 0.5, 0.5]]}
        gallery, _ = client.predict(rows, steps=2, seed=6, api_name="/layout_to_image")
        expected = reference(
            pipe, 6, layout=[{"label": "green triangle", "box": [0.1, 0.1, 0.5, 0.5]}], num_inference_steps=2
        )
        assert_same_image(gallery_paths(gallery)[0], expected[0])
        with pytest.raises(AppError, match="has no guidance: leave the negative prompt empty"):
            client.predict("a red circle", negative_prompt="a blue square", steps=1, api_name="/text_to_image")
        with pytest.raises(AppError, match="names none of this model's 4 objects"):
            client.predict("a purple cat", steps=1, api_name="/text_to_image")
    finally:
        demo.close()


def test_text_and_layout_tabs_take_an_init_image(app, tmp_path):
    """Image-to-image from the demo: the upload is fitted to the output size and noised to `strength`."""
    client, pipes, _, _ = app
    init = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    init.save(tmp_path / "init.png")
    gallery, _ = client.predict(
        "a red circle", steps=4, init_image=handle_file(str(tmp_path / "init.png")), strength=0.5,
        api_name="/text_to_image",
    )  # fmt: skip
    pipe = pipes["text"]
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    fitted = PIL.ImageOps.fit(init, (side, side), PIL.Image.Resampling.LANCZOS)
    expected = reference(pipe, 0, prompt="a red circle", image=fitted, strength=0.5, num_inference_steps=4,
                         guidance_scale=DEFAULT.default_text_guidance)  # fmt: skip
    assert_same_image(gallery_paths(gallery)[0], expected[0])
    with pytest.raises(Exception, match="runs no step"):
        client.predict("a red circle", steps=4, init_image=handle_file(str(tmp_path / "init.png")), strength=0.1,
                       api_name="/text_to_image")  # fmt: skip
    needs(pipes, "layout")
    gallery, _ = client.predict(
        LAYOUT_TABLE, steps=4, init_image=handle_file(str(tmp_path / "init.png")), strength=0.5,
        api_name="/layout_to_image",
    )  # fmt: skip
    assert len(gallery) == 1
