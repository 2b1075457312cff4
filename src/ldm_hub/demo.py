"""The ldm_hub Gradio demo: one tab per conditioning mode of the loaded models.

Each loaded :class:`~ldm_hub.LDMPipeline` says what it does through ``pipe.tasks`` (its ``conditioning``, plus
text and layout for a semantic-map model with a :class:`~ldm_hub.LayoutPlanner`); the app shows the matching
tabs and names each API endpoint after the task:

=================  ==============================  ====================================================
``conditioning``   tab                             API endpoint (main input first)
=================  ==============================  ====================================================
``"text"``         Text → image                    ``/text_to_image`` (prompt)
``"layout"``       Layout → image                  ``/layout_to_image`` (table of label, x0, y0, x1, y1)
``"class"``        Class → image                   ``/class_to_image`` (class id)
``"semantic"``     Semantic map → image            ``/semantic_to_image`` (index-map PNG)
``"inpaint"``      Inpainting                      ``/inpaint`` (image editor value: image + brush layer)
``"superres"``     Super-resolution 4×             ``/super_resolution`` (low-resolution image)
``"unconditional"`` Unconditional samples           ``/unconditional`` (number of images)
=================  ==============================  ====================================================

Every endpoint runs with its defaults given only its main input, returns a gallery of PNGs and (where a seed
is used) the seed, and fails with a :class:`gradio.Error` message, never a stack trace. :class:`DemoSettings`
holds the caps (steps, image size, batch, upload size, queue) that keep one visitor from taking the machine.

Example:
    ```py
    >>> from ldm_hub.demo import build_demo, launch
    >>> from ldm_hub.presets import build_pipeline
    >>> demo = build_demo({"text": build_pipeline("text2im-tiny")})  # doctest: +SKIP
    >>> launch(demo, port=7860)  # doctest: +SKIP
    ```

Run it with ``ldm-hub demo [--model DIR_OR_REPO ...]`` or ``python demo/app.py``.
"""

from __future__ import annotations

import argparse
import html
import inspect
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
import PIL.ImageColor
import PIL.ImageDraw
import torch

# Tab order, titles and endpoint names: one row per conditioning mode.
MODES: dict[str, tuple[str, str]] = {
    "text": ("Text → image", "text_to_image"),
    "layout": ("Layout → image", "layout_to_image"),
    "class": ("Class → image", "class_to_image"),
    "semantic": ("Semantic map → image", "semantic_to_image"),
    "inpaint": ("Inpainting", "inpaint"),
    "superres": ("Super-resolution 4×", "super_resolution"),
    "unconditional": ("Unconditional", "unconditional"),
}
# The tasks whose shipped default model (``ldm_hub.default_model_path(task)``) the app loads without --model.
DEFAULT_TASKS = ("text", "layout", "superres")
DEFAULT_SCHEDULER = "model default"
LAYOUT_HEADERS = ["label", "x0", "y0", "x1", "y1"]
# Box colours when a label names no colour (the first colour word of a label is used otherwise).
_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]
_CONCURRENCY_ID = "sampling"


@dataclass(frozen=True)
class DemoSettings:
    """Defaults and caps of the demo, so that one visitor cannot take the machine.

    Example:
        >>> from ldm_hub.demo import DemoSettings
        >>> DemoSettings(max_steps=50, max_images=2).max_upload_bytes
        10485760
    """

    default_steps: int = 50
    max_steps: int = 200
    default_text_guidance: float = 3.0
    max_guidance: float = 20.0
    max_images: int = 4
    max_side: int = 1024  # generated images, pixels per side
    max_input_side: int = 512  # uploaded images (super-resolution input, semantic maps, inpainting), per side
    max_upload_mb: float = 10.0
    max_prompt_chars: int = 1000
    max_seed: int = 2**32 - 1
    concurrency_limit: int = 1  # sampling jobs at once, over all tabs
    max_queue_size: int = 32

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, int) and (not isinstance(value, int) or value < 1):
                raise ValueError(f"demo setting {f.name} must be a whole number >= 1, got {value!r}")
            if isinstance(f.default, float) and (not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"demo setting {f.name} must be a number > 0, got {value!r}")
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps ({self.default_steps}) exceeds max_steps ({self.max_steps})")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def _error(message: str) -> gr.Error:
    """A gr.Error shown to the user (its text is rendered as HTML, so escape it; no traceback in the log)."""
    return gr.Error(html.escape(message, quote=False), print_exception=False)


# ---------------------------------------------------------------------------------------------- uploads
def _check_upload_size(path: str | None, limit: int) -> None:
    if path and os.path.isfile(path) and os.path.getsize(path) > limit:
        raise _error(f"the upload is {os.path.getsize(path) / 2**20:.1f} MB; the limit is {limit / 2**20:.1f} MB")


def guard_upload(component: gr.components.Component, max_upload_bytes: int) -> gr.components.Component:
    """Make an image input's unreadable or oversized uploads a gr.Error instead of a server error.

    Wraps the instance's ``preprocess`` (gradio decodes an upload there, before the event function runs).
    Subclassing the component instead would make gradio write a ``.pyi`` stub next to this module.
    """
    preprocess = component.preprocess

    def checked_preprocess(payload):
        if payload is not None:
            files = [getattr(payload, "background", None) or payload]  # an ImageEditor value, or one image
            for data in files:
                _check_upload_size(getattr(data, "path", None), max_upload_bytes)
        try:
            return preprocess(payload)
        except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
            name = getattr(payload, "orig_name", None) or "the upload"
            raise _error(f"{name} is not a readable image file ({type(e).__name__})") from None

    component.preprocess = checked_preprocess
    return component


def _open_image(path: str | None, what: str, max_side: int) -> PIL.Image.Image:
    """Open an uploaded file, checking its size in pixels before decoding it."""
    if not path:
        raise _error(f"upload {what} first")
    try:
        image = PIL.Image.open(path)
        if max(image.size) > max_side:
            raise _error(f"{what} is {image.width}x{image.height} pixels; the limit is {max_side} per side")
        image.load()
    except (OSError, SyntaxError, PIL.Image.DecompressionBombError) as e:
        raise _error(f"{what} is not a readable image file ({type(e).__name__})") from None
    return image


def _to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB; transparent pixels flattened onto white."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = PIL.Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _crop_to_multiple(image: PIL.Image.Image, multiple: int, what: str) -> PIL.Image.Image:
    """Crop the right/bottom edge so both sides are multiples of what the model needs."""
    width, height = (s - s % multiple for s in image.size)
    if width == 0 or height == 0:
        raise _error(f"{what} is {image.width}x{image.height} pixels; it must be at least {multiple}x{multiple}")
    return image if (width, height) == image.size else image.crop((0, 0, width, height))


# ---------------------------------------------------------------------------------------------- checks
def _as_int(name: str, value, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _error(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise _error(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def _as_float(name: str, value, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _error(f"{name} must be a number, got {value!r}") from None
    if not low <= number <= high:  # also false for NaN
        raise _error(f"{name} must be from {low:g} to {high:g}, got {value!r}")
    return number


def _pick_seed(seed, randomize: bool, settings: DemoSettings) -> int:
    if randomize:
        return random.SystemRandom().randrange(settings.max_seed + 1)
    return _as_int("seed", seed, 0, settings.max_seed)


# ---------------------------------------------------------------------------------------------- sampling
def _call_parameters(pipe) -> set[str]:
    return set(inspect.signature(pipe.__call__).parameters)


def _scheduler_choices() -> list[str]:
    from .commands.generate import SCHEDULERS

    return [DEFAULT_SCHEDULER, *sorted(SCHEDULERS)]


def _request_pipeline(pipe, scheduler: str):
    """A pipeline sharing ``pipe``'s models with a fresh scheduler (a scheduler holds per-run state, so
    concurrent requests must not share one; the chosen sampler never leaks into other requests)."""
    import ldm_hub

    from .commands.generate import SCHEDULERS

    if scheduler in (None, "", DEFAULT_SCHEDULER):
        cls = type(pipe.scheduler)
    elif scheduler in SCHEDULERS:
        cls = getattr(ldm_hub, SCHEDULERS[scheduler])
    else:
        raise _error(f"unknown scheduler {scheduler!r}; choose one of {', '.join(_scheduler_choices())}")
    components = dict(pipe.components)
    components["scheduler"] = cls.from_config(pipe.scheduler.config)
    run = type(pipe)(**components)
    run.set_progress_bar_config(disable=True)
    return run


def _sample(pipe, progress: gr.Progress, *, scheduler: str, steps: int, seed: int, **kwargs) -> list:
    """Run the pipeline with progress reporting; its ValueErrors become gr.Errors."""
    run = _request_pipeline(pipe, scheduler)

    def on_step_end(p, i, t, tensors):
        progress((i + 1, len(p.scheduler.timesteps)), desc="sampling", unit="steps")
        return tensors

    progress(0, desc="sampling")
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    try:
        return run(num_inference_steps=steps, generator=generator, callback_on_step_end=on_step_end, **kwargs).images
    except (ValueError, TypeError) as e:
        raise _error(str(e)) from None
    except (torch.OutOfMemoryError, MemoryError):
        raise _error("out of memory: try a smaller image or fewer images") from None


def _size_multiple(pipe) -> int:
    return pipe.vae_scale_factor * pipe.unet_downsampling


def _native_side(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def _tiling_kwargs(pipe, pixel_size: tuple[int, int]) -> dict:
    """Tiled sampling (``tile_size`` in output pixels: the UNet's training size) for outputs larger than that,
    where the pipeline supports it; memory then follows the tile, not the image."""
    native = _native_side(pipe)
    if "tile_size" not in _call_parameters(pipe) or max(pixel_size) <= native:
        return {}
    return {"tile_size": native}


def _gallery(
    images: Iterable[PIL.Image.Image], caption: str | None = None
) -> list[tuple[PIL.Image.Image, str | None]]:
    return [(image, caption) for image in images]


# ---------------------------------------------------------------------------------------------- layout
def _label_colour(label: str, index: int) -> str:
    for word in str(label).lower().split():
        try:
            PIL.ImageColor.getrgb(word)
            return word
        except ValueError:
            continue
    return _PALETTE[index % len(_PALETTE)]


def _table_rows(table) -> list[list]:
    """The rows of a gr.Dataframe value (a pandas frame, a {"data": ...} dict or a list of lists)."""
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):  # pandas
        return table.values.tolist()
    if isinstance(table, Mapping):
        return list(table.get("data") or [])
    return [list(row) for row in table]


def parse_layout(table, *, categories: Sequence[str] | None = None, max_objects: int | None = None) -> list[dict]:
    """Rows (label, x0, y0, x1, y1) → ``[{"label": ..., "box": [x0, y0, x1, y1]}, ...]``, checked.

    Corners are fractions of the canvas in [0, 1], origin top left. Blank rows are skipped; a label that is a
    whole number is a category id (the only kind a model without category names takes).

    Example:
        >>> from ldm_hub.demo import parse_layout
        >>> parse_layout([["red circle", 0.1, 0.1, 0.4, 0.4], ["", "", "", "", ""]], categories=["red circle"])
        [{'label': 'red circle', 'box': [0.1, 0.1, 0.4, 0.4]}]
    """
    layout = []
    for number, row in enumerate(_table_rows(table), start=1):
        row = list(row) + [None] * (len(LAYOUT_HEADERS) - len(row))
        label, corners = row[0], row[1 : len(LAYOUT_HEADERS)]
        label = "" if label is None else str(label).strip()
        if not label and all(c in (None, "") for c in corners):
            continue
        if not label:
            raise _error(f"row {number}: the label is empty")
        try:
            box = [float(c) for c in corners]
        except (TypeError, ValueError):
            raise _error(f"row {number} ({label!r}): x0, y0, x1, y1 must be numbers, got {corners}") from None
        x0, y0, x1, y1 = box
        if not all(0.0 <= c <= 1.0 for c in box):
            raise _error(
                f"row {number} ({label!r}): box {box} lies outside the canvas; corners are fractions "
                "of the image in [0, 1]"
            )
        if not (x0 < x1 and y0 < y1):
            raise _error(
                f"row {number} ({label!r}): box {box} is empty or inverted: x1 must exceed x0 and y1 must exceed y0"
            )
        if label.lstrip("-").isdigit():
            label = int(label)
        elif categories is None:
            raise _error(f"row {number}: this model knows category ids only, not names; got {label!r}")
        elif label not in categories:
            known = ", ".join(list(categories)[:8])
            raise _error(f"row {number}: unknown label {label!r}; known labels include {known}")
        layout.append({"label": label, "box": box})
    if not layout:
        raise _error("add at least one box (a row with a label and x0, y0, x1, y1 in [0, 1])")
    if max_objects is not None and len(layout) > max_objects:
        raise _error(f"{len(layout)} boxes; this model takes at most {max_objects}")
    return layout


def draw_layout(layout: list[dict], image: PIL.Image.Image | None = None, size: int = 256) -> PIL.Image.Image:
    """Draw labelled boxes on ``image`` (a copy) or on a blank square canvas of side ``size``."""
    canvas = PIL.Image.new("RGB", (size, size), "#f4f4f4") if image is None else image.convert("RGB").copy()
    draw = PIL.ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = max(1, min(width, height) // 128)
    for index, obj in enumerate(layout):
        x0, y0, x1, y1 = obj["box"]
        colour = _label_colour(obj["label"], index)
        draw.rectangle(
            [x0 * (width - 1), y0 * (height - 1), x1 * (width - 1), y1 * (height - 1)], outline=colour, width=line
        )
        draw.text((x0 * (width - 1) + line + 1, y0 * (height - 1) + line), str(obj["label"]), fill=colour)
    return canvas


# ---------------------------------------------------------------------------------------------- tabs
@dataclass
class _Controls:
    """The sampling controls a tab shows (None where the mode has no such setting)."""

    steps: gr.Slider
    seed: gr.Number
    randomize: gr.Checkbox
    scheduler: gr.Dropdown
    guidance: gr.Slider | None = None
    num_images: gr.Slider | None = None
    height: gr.Slider | None = None
    width: gr.Slider | None = None


def _controls(
    pipe, settings: DemoSettings, prefix: str, *, guidance: float | None, batch: bool, size: bool
) -> _Controls:
    with gr.Row():
        steps = gr.Slider(
            1,
            settings.max_steps,
            value=min(settings.default_steps, settings.max_steps),
            step=1,
            label="steps",
            elem_id=f"{prefix}-steps",
        )
        guidance_slider = None
        if guidance is not None:
            guidance_slider = gr.Slider(
                0.0,
                settings.max_guidance,
                value=guidance,
                step=0.1,
                label="guidance scale (1 = off)",
                elem_id=f"{prefix}-guidance",
            )
    with gr.Row():
        seed = gr.Number(0, precision=0, minimum=0, maximum=settings.max_seed, label="seed", elem_id=f"{prefix}-seed")
        randomize = gr.Checkbox(False, label="randomise seed", elem_id=f"{prefix}-randomize")
        scheduler = gr.Dropdown(
            _scheduler_choices(), value=DEFAULT_SCHEDULER, label="scheduler", elem_id=f"{prefix}-scheduler"
        )
        num_images = None
        if batch:
            num_images = gr.Slider(
                1, settings.max_images, value=1, step=1, label="number of images", elem_id=f"{prefix}-num-images"
            )
    height = width = None
    if size:
        multiple = _size_multiple(pipe)
        top = max(multiple, settings.max_side - settings.max_side % multiple)
        native = min(_native_side(pipe), top)
        with gr.Accordion("image size", open=False), gr.Row():
            height = gr.Slider(multiple, top, value=native, step=multiple, label="height", elem_id=f"{prefix}-height")
            width = gr.Slider(multiple, top, value=native, step=multiple, label="width", elem_id=f"{prefix}-width")
    return _Controls(steps, seed, randomize, scheduler, guidance_slider, num_images, height, width)


def _result_gallery(prefix: str) -> gr.Gallery:
    return gr.Gallery(
        label="result (PNG)",
        format="png",
        columns=2,
        elem_id=f"{prefix}-gallery",
        buttons=["download", "download_all", "fullscreen"],
        interactive=False,
    )


def _checked_size(pipe, settings: DemoSettings, height, width) -> dict:
    multiple = _size_multiple(pipe)
    size = {}
    for name, value in (("height", height), ("width", width)):
        if value is None:
            continue
        pixels = _as_int(name, value, multiple, settings.max_side)
        if pixels % multiple:
            raise _error(f"{name} must be a multiple of {multiple}, got {pixels}")
        size[name] = pixels
    return size


def _listen(button: gr.Button, fn: Callable, inputs: list, outputs: list, api_name: str, settings: DemoSettings):
    button.click(
        fn,
        inputs=inputs,
        outputs=outputs,
        api_name=api_name,
        concurrency_id=_CONCURRENCY_ID,
        concurrency_limit=settings.concurrency_limit,
    )


def _text_tab(pipe, settings: DemoSettings):
    prefix, api_name = "text", MODES["text"][1]
    guided = pipe.guidance_supported  # a planner-backed map model: no guidance, no negative prompt
    guidance_default = settings.default_text_guidance if guided else 1.0
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(
                label="prompt",
                placeholder="a red circle and a blue square",
                lines=2,
                max_length=settings.max_prompt_chars,
                elem_id=f"{prefix}-prompt",
            )
            negative = gr.Textbox(
                label="negative prompt (replaces the empty prompt in guidance)",
                value="",
                max_length=settings.max_prompt_chars,
                elem_id=f"{prefix}-negative",
                visible=guided,
            )
            c = _controls(pipe, settings, prefix, guidance=guidance_default if guided else None, batch=True, size=True)
            button = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        with gr.Column():
            gallery = _result_gallery(prefix)

    def text_to_image(
        prompt,
        negative_prompt="",
        steps=settings.default_steps,
        guidance_scale=guidance_default,
        seed=0,
        randomize_seed=False,
        scheduler=DEFAULT_SCHEDULER,
        num_images=1,
        height=None,
        width=None,
        progress=gr.Progress(),
    ):
        if not prompt or not str(prompt).strip():
            raise _error("enter a prompt")
        if not guided and ((negative_prompt or "").strip() or guidance_scale not in (None, 1, 1.0)):
            raise _error(
                "this model plans boxes from the prompt and has no guidance: leave the negative prompt "
                "empty and the guidance scale at 1"
            )
        for name, text in (("prompt", prompt), ("negative prompt", negative_prompt or "")):
            if len(text) > settings.max_prompt_chars:
                raise _error(f"the {name} has {len(text)} characters; the limit is {settings.max_prompt_chars}")
        steps = _as_int("steps", steps, 1, settings.max_steps)
        guidance_scale = _as_float("guidance scale", guidance_scale, 0.0, settings.max_guidance)
        num_images = _as_int("number of images", num_images, 1, settings.max_images)
        seed = _pick_seed(seed, randomize_seed, settings)
        images = _sample(
            pipe,
            progress,
            scheduler=scheduler,
            steps=steps,
            seed=seed,
            prompt=str(prompt),
            negative_prompt=negative_prompt or None,
            guidance_scale=guidance_scale,
            num_images_per_prompt=num_images,
            **_checked_size(pipe, settings, height, width),
        )
        return _gallery(images, f"seed {seed}"), seed

    guidance = c.guidance if c.guidance is not None else gr.State(1.0)
    inputs = [prompt, negative, c.steps, guidance, c.seed, c.randomize, c.scheduler, c.num_images, c.height, c.width]
    _listen(button, text_to_image, inputs, [gallery, c.seed], api_name, settings)
    prompt.submit(
        text_to_image,
        inputs=inputs,
        outputs=[gallery, c.seed],
        api_visibility="private",
        concurrency_id=_CONCURRENCY_ID,
        concurrency_limit=settings.concurrency_limit,
    )
    gr.Examples(
        [["a red circle and a blue square"], ["a green triangle"], ["a yellow square and a red triangle"]],
        inputs=[prompt],
        label="example prompts",
    )


def _layout_tab(pipe, settings: DemoSettings):
    prefix, api_name = "layout", MODES["layout"][1]
    planner = getattr(pipe, "layout_planner", None)
    config = (planner.config if planner is not None else getattr(pipe.tokenizer, "config", {})) or {}
    categories = config.get("labels") if planner is not None else config.get("categories")
    max_objects = config.get("max_objects")
    guided = pipe.guidance_supported
    first = list(categories[:2]) if categories else [0, 1]
    while len(first) < 2:
        first.append(first[0])
    default_rows = [[str(first[0]), 0.1, 0.15, 0.45, 0.5], [str(first[-1]), 0.55, 0.45, 0.9, 0.85]]
    preview_side = max(256, _native_side(pipe))

    def _preview(table):
        try:
            return draw_layout(parse_layout(table, categories=categories, max_objects=max_objects), size=preview_side)
        except gr.Error:
            return None  # the preview stays empty while the table is half edited

    with gr.Row():
        with gr.Column():
            note = (
                f"labels: {', '.join(categories[:12])}{' …' if len(categories) > 12 else ''}"
                if categories
                else "labels: category ids (whole numbers)"
            )
            table = gr.Dataframe(
                value=default_rows,
                headers=LAYOUT_HEADERS,
                datatype=["str", "number", "number", "number", "number"],
                type="array",
                interactive=True,
                label=f"boxes: corners as fractions of the image, origin top left ({note})",
                elem_id=f"{prefix}-table",
            )
            overlay = gr.Checkbox(False, label="draw the boxes on the result", elem_id=f"{prefix}-overlay")
            c = _controls(pipe, settings, prefix, guidance=1.0 if guided else None, batch=True, size=True)
            button = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        with gr.Column():
            preview = gr.Image(
                _preview(default_rows),
                label="layout preview",
                format="png",
                interactive=False,
                elem_id=f"{prefix}-preview",
            )
            gallery = _result_gallery(prefix)

    def layout_to_image(
        layout,
        overlay_boxes=False,
        steps=settings.default_steps,
        guidance_scale=1.0,
        seed=0,
        randomize_seed=False,
        scheduler=DEFAULT_SCHEDULER,
        num_images=1,
        height=None,
        width=None,
        progress=gr.Progress(),
    ):
        boxes = parse_layout(layout, categories=categories, max_objects=max_objects)
        steps = _as_int("steps", steps, 1, settings.max_steps)
        guidance_scale = _as_float("guidance scale", guidance_scale, 0.0, settings.max_guidance)
        num_images = _as_int("number of images", num_images, 1, settings.max_images)
        seed = _pick_seed(seed, randomize_seed, settings)
        images = _sample(
            pipe,
            progress,
            scheduler=scheduler,
            steps=steps,
            seed=seed,
            layout=boxes,
            guidance_scale=guidance_scale,
            num_images_per_prompt=num_images,
            **_checked_size(pipe, settings, height, width),
        )
        if overlay_boxes:
            images = [draw_layout(boxes, image) for image in images]
        return _gallery(images, f"seed {seed}"), seed

    table.change(_preview, inputs=[table], outputs=[preview], api_visibility="private")
    guidance = c.guidance if c.guidance is not None else gr.State(1.0)
    inputs = [table, overlay, c.steps, guidance, c.seed, c.randomize, c.scheduler, c.num_images, c.height, c.width]
    _listen(button, layout_to_image, inputs, [gallery, c.seed], api_name, settings)


def _class_tab(pipe, settings: DemoSettings):
    prefix, api_name = "class", MODES["class"][1]
    config = pipe.cond_encoder.config
    null_class = config.get("null_class")
    num_labels = config["num_classes"] - (1 if null_class is not None else 0)
    with gr.Row():
        with gr.Column():
            label = gr.Number(
                0,
                precision=0,
                minimum=0,
                maximum=num_labels - 1,
                label=f"class id (0 to {num_labels - 1})",
                elem_id=f"{prefix}-label",
            )
            guidance_default = 1.0 if null_class is None else settings.default_text_guidance
            c = _controls(
                pipe,
                settings,
                prefix,
                guidance=None if null_class is None else guidance_default,
                batch=True,
                size=True,
            )
            button = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        with gr.Column():
            gallery = _result_gallery(prefix)

    def class_to_image(
        class_id,
        steps=settings.default_steps,
        guidance_scale=guidance_default,
        seed=0,
        randomize_seed=False,
        scheduler=DEFAULT_SCHEDULER,
        num_images=1,
        height=None,
        width=None,
        progress=gr.Progress(),
    ):
        class_id = _as_int("class id", class_id, 0, num_labels - 1)
        steps = _as_int("steps", steps, 1, settings.max_steps)
        guidance_scale = _as_float("guidance scale", guidance_scale, 0.0, settings.max_guidance)
        num_images = _as_int("number of images", num_images, 1, settings.max_images)
        seed = _pick_seed(seed, randomize_seed, settings)
        images = _sample(
            pipe,
            progress,
            scheduler=scheduler,
            steps=steps,
            seed=seed,
            class_labels=[class_id],
            guidance_scale=guidance_scale,
            num_images_per_prompt=num_images,
            **_checked_size(pipe, settings, height, width),
        )
        return _gallery(images, f"class {class_id}, seed {seed}"), seed

    # Without a null class there is no guidance: a gr.State (not part of the API) feeds 1.0.
    guidance = c.guidance if c.guidance is not None else gr.State(1.0)
    inputs = [label, c.steps, guidance, c.seed, c.randomize, c.scheduler, c.num_images, c.height, c.width]
    _listen(button, class_to_image, inputs, [gallery, c.seed], api_name, settings)


def _semantic_tab(pipe, settings: DemoSettings):
    prefix, api_name = "semantic", MODES["semantic"][1]
    num_classes = pipe.cond_encoder.config["num_classes"]
    with gr.Row():
        with gr.Column():
            segmentation = guard_upload(
                gr.Image(
                    label=f"segmentation map: a PNG of class indices 0 to {num_classes - 1}",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    elem_id=f"{prefix}-input",
                ),
                settings.max_upload_bytes,
            )
            c = _controls(pipe, settings, prefix, guidance=None, batch=False, size=False)
            button = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        with gr.Column():
            gallery = _result_gallery(prefix)

    def semantic_to_image(
        segmentation_map,
        steps=settings.default_steps,
        seed=0,
        randomize_seed=False,
        scheduler=DEFAULT_SCHEDULER,
        progress=gr.Progress(),
    ):
        image = _open_image(segmentation_map, "the segmentation map", settings.max_input_side)
        image = _crop_to_multiple(image, _size_multiple(pipe), "the segmentation map")
        steps = _as_int("steps", steps, 1, settings.max_steps)
        seed = _pick_seed(seed, randomize_seed, settings)
        images = _sample(
            pipe,
            progress,
            scheduler=scheduler,
            steps=steps,
            seed=seed,
            segmentation=image,
            **_tiling_kwargs(pipe, image.size),
        )
        return _gallery(images, f"seed {seed}"), seed

    _listen(
        button,
        semantic_to_image,
        [segmentation, c.steps, c.seed, c.randomize, c.scheduler],
        [gallery, c.seed],
        api_name,
        settings,
    )


def _mask_from_layers(layers: Sequence[PIL.Image.Image], size: tuple[int, int]) -> PIL.Image.Image:
    """The brush layers → a binary mask, white = fill: painted (opaque) pixels of an RGBA layer, or the
    bright pixels of a layer without transparency (a black-and-white mask image)."""
    mask = np.zeros(size[::-1], dtype=bool)
    for layer in layers:
        if layer is None:
            continue
        if layer.size != size:
            raise _error(f"the mask layer is {layer.width}x{layer.height}; the image is {size[0]}x{size[1]}")
        if "A" in layer.getbands() and layer.getextrema()[-1][0] < 255:
            mask |= np.asarray(layer.getchannel("A")) > 127
        else:
            mask |= np.asarray(layer.convert("L")) > 127
    return PIL.Image.fromarray((mask * 255).astype(np.uint8), mode="L")


def _inpaint_tab(pipe, settings: DemoSettings):
    prefix, api_name = "inpaint", MODES["inpaint"][1]
    with gr.Row():
        with gr.Column():
            editor = guard_upload(
                gr.ImageEditor(
                    label="upload an image, then paint the region to fill",
                    type="pil",
                    image_mode="RGBA",
                    sources=["upload", "clipboard"],
                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                    eraser=gr.Eraser(),
                    layers=False,
                    transforms=(),
                    elem_id=f"{prefix}-editor",
                ),
                settings.max_upload_bytes,
            )
            c = _controls(pipe, settings, prefix, guidance=None, batch=False, size=False)
            button = gr.Button("Fill", variant="primary", elem_id=f"{prefix}-generate")
        with gr.Column():
            gallery = _result_gallery(prefix)

    def inpaint(
        image_and_mask,
        steps=settings.default_steps,
        seed=0,
        randomize_seed=False,
        scheduler=DEFAULT_SCHEDULER,
        progress=gr.Progress(),
    ):
        if not image_and_mask or image_and_mask.get("background") is None:
            raise _error("upload an image first")
        background = image_and_mask["background"]
        if max(background.size) > settings.max_input_side:
            raise _error(
                f"the image is {background.width}x{background.height} pixels; the limit is "
                f"{settings.max_input_side} per side"
            )
        mask = _mask_from_layers(image_and_mask.get("layers") or [], background.size)
        if not mask.getbbox():
            raise _error("paint the region to fill with the brush (the mask is empty)")
        multiple = _size_multiple(pipe)
        image = _crop_to_multiple(_to_rgb(background), multiple, "the image")
        mask = mask.crop((0, 0, *image.size))
        steps = _as_int("steps", steps, 1, settings.max_steps)
        seed = _pick_seed(seed, randomize_seed, settings)
        images = _sample(pipe, progress, scheduler=scheduler, steps=steps, seed=seed, image=image, mask_image=mask)
        return _gallery(images, f"seed {seed}"), seed

    _listen(
        button, inpaint, [editor, c.steps, c.seed, c.randomize, c.scheduler], [gallery, c.seed], api_name, settings
    )


def _superres_tab(pipe, settings: DemoSettings):
    prefix, api_name = "superres", MODES["superres"][1]
    factor = pipe.vae_scale_factor
    largest = min(settings.max_input_side, settings.max_side // factor)  # the input and the output caps
    with gr.Row():
        with gr.Column():
            low_res = guard_upload(
                gr.Image(
                    label=f"low-resolution image (at most {largest} px per side)",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    elem_id=f"{prefix}-input",
                ),
                settings.max_upload_bytes,
            )
            c = _controls(pipe, settings, prefix, guidance=None, batch=False, size=False)
            button = gr.Button(f"Upscale {factor}×", variant="primary", elem_id=f"{prefix}-generate")
        with gr.Column():
            slider = gr.ImageSlider(
                label=f"before (bicubic) / after ({factor}× LDM)",
                format="png",
                elem_id=f"{prefix}-slider",
                interactive=False,
            )
            gallery = _result_gallery(prefix)

    def super_resolution(
        image,
        steps=settings.default_steps,
        seed=0,
        randomize_seed=False,
        scheduler=DEFAULT_SCHEDULER,
        progress=gr.Progress(),
    ):
        low = _open_image(image, "the image", settings.max_input_side)
        low = _crop_to_multiple(_to_rgb(low), pipe.unet_downsampling, "the image")
        out_size = (low.width * factor, low.height * factor)
        if max(out_size) > settings.max_side:
            raise _error(
                f"the result would be {out_size[0]}x{out_size[1]} pixels; the limit is "
                f"{settings.max_side} per side, so the input may be at most {settings.max_side // factor}"
            )
        steps = _as_int("steps", steps, 1, settings.max_steps)
        seed = _pick_seed(seed, randomize_seed, settings)
        images = _sample(
            pipe, progress, scheduler=scheduler, steps=steps, seed=seed, image=low, **_tiling_kwargs(pipe, out_size)
        )
        before = low.resize(images[0].size, PIL.Image.Resampling.BICUBIC)
        return (before, images[0]), _gallery(images, f"seed {seed}"), seed

    _listen(
        button,
        super_resolution,
        [low_res, c.steps, c.seed, c.randomize, c.scheduler],
        [slider, gallery, c.seed],
        api_name,
        settings,
    )


def _unconditional_tab(pipe, settings: DemoSettings):
    prefix, api_name = "unconditional", MODES["unconditional"][1]
    with gr.Row():
        with gr.Column():
            c = _controls(pipe, settings, prefix, guidance=None, batch=True, size=True)
            button = gr.Button("Sample", variant="primary", elem_id=f"{prefix}-generate")
        with gr.Column():
            gallery = _result_gallery(prefix)

    def unconditional(
        num_images=1,
        steps=settings.default_steps,
        seed=0,
        randomize_seed=False,
        scheduler=DEFAULT_SCHEDULER,
        height=None,
        width=None,
        progress=gr.Progress(),
    ):
        num_images = _as_int("number of images", num_images, 1, settings.max_images)
        steps = _as_int("steps", steps, 1, settings.max_steps)
        seed = _pick_seed(seed, randomize_seed, settings)
        images = _sample(
            pipe,
            progress,
            scheduler=scheduler,
            steps=steps,
            seed=seed,
            batch_size=num_images,
            **_checked_size(pipe, settings, height, width),
        )
        return _gallery(images, f"seed {seed}"), seed

    _listen(
        button,
        unconditional,
        [c.num_images, c.steps, c.seed, c.randomize, c.scheduler, c.height, c.width],
        [gallery, c.seed],
        api_name,
        settings,
    )


_TABS: dict[str, Callable] = {
    "text": _text_tab,
    "layout": _layout_tab,
    "class": _class_tab,
    "semantic": _semantic_tab,
    "inpaint": _inpaint_tab,
    "superres": _superres_tab,
    "unconditional": _unconditional_tab,
}


# ---------------------------------------------------------------------------------------------- the app
def _by_mode(pipelines: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any]:
    if isinstance(pipelines, Mapping):
        items = list(pipelines.values())
    else:
        items = list(pipelines)
    by_mode: dict[str, Any] = {}
    for pipe in items:  # each model's own conditioning first
        mode = pipe.conditioning
        if mode not in MODES:
            raise ValueError(f"the demo has no tab for conditioning {mode!r}")
        if mode in by_mode:
            raise ValueError(f"two models do {mode!r}; load one model per task")
        by_mode[mode] = pipe
    for pipe in items:  # then what a model also serves (a planner-backed map model: text, layout)
        for task in getattr(pipe, "tasks", (pipe.conditioning,)):
            by_mode.setdefault(task, pipe)
    if not by_mode:
        raise ValueError("no model to serve")
    return by_mode


def build_demo(
    pipelines: Mapping[str, Any] | Iterable[Any],
    settings: DemoSettings | None = None,
    *,
    model_names: Mapping[str, str] | None = None,
    title: str = "ldm_hub: latent diffusion",
) -> gr.Blocks:
    """The Gradio app: one tab per conditioning mode of ``pipelines`` (LDMPipelines, one per mode).

    ``model_names`` (mode → folder or Hub id) is shown in the header. The returned Blocks already has its
    queue (one shared concurrency limit for every sampling endpoint); start it with :func:`launch`, which
    also applies the upload size limit.

    Example:
        ```py
        >>> from ldm_hub.demo import build_demo
        >>> from ldm_hub.presets import build_pipeline
        >>> demo = build_demo([build_pipeline("text2im-tiny"), build_pipeline("superres-tiny")])  # doctest: +SKIP
        >>> demo.launch()  # doctest: +SKIP
        ```
    """
    settings = settings or DemoSettings()
    by_mode = _by_mode(pipelines)
    model_names = dict(model_names or {})
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        lines = [
            f"# {title}",
            (
                "Latent Diffusion Models (Rombach et al., CVPR 2022, "
                "[arXiv 2112.10752](https://arxiv.org/abs/2112.10752)), served by ldm_hub. "
                "Results download as PNG."
            ),
        ]
        if model_names:
            lines.append(
                "Models: "
                + "; ".join(
                    f"**{MODES[m][0]}**: `{model_names[m]}`" for m in MODES if m in by_mode and m in model_names
                )
            )
        gr.Markdown("\n\n".join(lines))
        with gr.Tabs():
            for mode, (tab_title, _) in MODES.items():
                if mode not in by_mode:
                    continue
                with gr.Tab(tab_title, id=mode, elem_id=f"tab-{mode}"):
                    _TABS[mode](by_mode[mode], settings)
    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.max_queue_size)
    demo.ldm_settings = settings
    return demo


def launch(
    demo: gr.Blocks,
    *,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    settings: DemoSettings | None = None,
    **kwargs,
):
    """Start the app (``prevent_thread_lock=True`` in ``kwargs`` returns at once). ``host``/``port`` default
    to gradio's (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``, else 127.0.0.1:7860)."""
    settings = settings or getattr(demo, "ldm_settings", None) or DemoSettings()
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=settings.max_upload_bytes,
        show_error=False,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------- models
def default_models() -> dict[str, str]:
    """The shipped default model of each task (``ldm_hub.default_model_path(task)``), where it exists."""
    import ldm_hub

    if not hasattr(ldm_hub, "default_model_path"):
        return {}
    found: dict[str, str] = {}
    for task in DEFAULT_TASKS:
        try:
            path = ldm_hub.default_model_path(task)
        except (ValueError, KeyError, OSError, NotImplementedError):
            continue
        if path and str(path) not in found.values():
            found[task] = str(path)
    return found


def load_pipelines(
    models: Sequence[str] | None = None, *, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[dict[str, Any], dict[str, str]]:
    """Load each model (folder or Hub id) → ({mode: pipeline}, {mode: model name}).

    Without ``models`` the shipped defaults are used (see :func:`default_models`).
    """
    from . import LDMPipeline

    names = list(models) if models else list(default_models().values())
    if not names:
        raise ValueError(
            "no model to serve: pass --model DIR_OR_REPO (repeat it for one model per task); "
            "this install ships no default model"
        )
    pipelines, model_names = {}, {}
    for name in dict.fromkeys(str(n) for n in names):
        pipe = LDMPipeline.from_pretrained(name).to(device, dtype)
        mode = pipe.conditioning
        if mode in pipelines:
            raise ValueError(f"{name} and {model_names[mode]} are both {mode!r} models; pass one model per task")
        pipelines[mode], model_names[mode] = pipe, name
    for mode, pipe in list(pipelines.items()):
        for task in pipe.tasks:
            model_names.setdefault(task, model_names[mode])
    return pipelines, model_names


def _settings_from_args(args) -> DemoSettings:
    overrides = {
        f.name: getattr(args, f.name) for f in fields(DemoSettings) if getattr(args, f.name, None) is not None
    }
    return DemoSettings(**overrides)


def serve(args) -> int:
    """Load the models named by parsed ``ldm-hub demo`` arguments and serve the app until interrupted."""
    from .commands.generate import DTYPES

    settings = _settings_from_args(args)
    pipelines, names = load_pipelines(args.model, device=args.device, dtype=getattr(torch, DTYPES[args.dtype]))
    demo = build_demo(pipelines, settings, model_names=names)
    launch(demo, host=args.host, port=args.port, share=args.share, settings=settings)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python demo/app.py [--model M ...] [--port P] [--share]``: the same options as ``ldm-hub demo``."""
    import sys

    from .commands.demo import add_arguments
    from .loading import ModelFileError

    parser = argparse.ArgumentParser(prog="app.py", description="The ldm_hub Gradio demo.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except (ValueError, TypeError, ModelFileError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
