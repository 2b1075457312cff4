"""One builder per conditioning mode's tab (``_TABS``, keyed by the conditioners' endpoint names ``api_name``): its
inputs, its sampling controls, and the named API endpoint whose function checks the inputs and samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gradio as gr
import numpy as np
import PIL.Image

from .inputs import (
    _as_float,
    _as_int,
    _crop_to_multiple,
    _error,
    _open_image,
    _pick_seed,
    _to_rgb,
    draw_layout,
    guard_upload,
    parse_layout,
)
from .settings import DEFAULT_SCHEDULER, LAYOUT_HEADERS, DemoSettings
from .widgets import (
    _CONCURRENCY_ID,
    DEFAULT_STRENGTH,
    _checked_size,
    _controls,
    _gallery,
    _init_image_controls,
    _init_image_kwargs,
    _listen,
    _native_side,
    _result_gallery,
    _sample,
    _size_multiple,
    _tiling_kwargs,
)

# The tab builder of each endpoint (a conditioner's ``api_name``), filled in by @_serves below.
_TABS: dict[str, Callable] = {}


def _serves(api_name: str) -> Callable[[Callable], Callable]:
    """Register a tab builder for the conditioners whose endpoint is ``api_name``."""

    def register(builder: Callable) -> Callable:
        _TABS[api_name] = builder
        return builder

    return register


@_serves("text_to_image")
def _text_tab(pipe, settings: DemoSettings):
    prefix, api_name = "text", "text_to_image"  # element ids, and the conditioner's endpoint
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
            init = _init_image_controls(prefix, settings)
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
        init_image=None,
        strength=DEFAULT_STRENGTH,
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
        size = _checked_size(pipe, settings, height, width)
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
            **size,
            **_init_image_kwargs(pipe, settings, init_image, strength, size, steps),
        )
        return _gallery(images, f"seed {seed}"), seed

    guidance = c.guidance if c.guidance is not None else gr.State(1.0)
    inputs = [prompt, negative, c.steps, guidance, c.seed, c.randomize, c.scheduler, c.num_images, c.height, c.width]
    inputs += [init.image, init.strength]
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


@_serves("layout_to_image")
def _layout_tab(pipe, settings: DemoSettings):
    prefix, api_name = "layout", "layout_to_image"  # element ids, and the conditioner's endpoint
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
            init = _init_image_controls(prefix, settings)
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
        init_image=None,
        strength=DEFAULT_STRENGTH,
        progress=gr.Progress(),
    ):
        boxes = parse_layout(layout, categories=categories, max_objects=max_objects)
        steps = _as_int("steps", steps, 1, settings.max_steps)
        guidance_scale = _as_float("guidance scale", guidance_scale, 0.0, settings.max_guidance)
        num_images = _as_int("number of images", num_images, 1, settings.max_images)
        seed = _pick_seed(seed, randomize_seed, settings)
        size = _checked_size(pipe, settings, height, width)
        images = _sample(
            pipe,
            progress,
            scheduler=scheduler,
            steps=steps,
            seed=seed,
            layout=boxes,
            guidance_scale=guidance_scale,
            num_images_per_prompt=num_images,
            **size,
            **_init_image_kwargs(pipe, settings, init_image, strength, size, steps),
        )
        if overlay_boxes:
            images = [draw_layout(boxes, image) for image in images]
        return _gallery(images, f"seed {seed}"), seed

    table.change(_preview, inputs=[table], outputs=[preview], api_visibility="private")
    guidance = c.guidance if c.guidance is not None else gr.State(1.0)
    inputs = [table, overlay, c.steps, guidance, c.seed, c.randomize, c.scheduler, c.num_images, c.height, c.width]
    inputs += [init.image, init.strength]
    _listen(button, layout_to_image, inputs, [gallery, c.seed], api_name, settings)


@_serves("class_to_image")
def _class_tab(pipe, settings: DemoSettings):
    prefix, api_name = "class", "class_to_image"  # element ids, and the conditioner's endpoint
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


@_serves("semantic_to_image")
def _semantic_tab(pipe, settings: DemoSettings):
    prefix, api_name = "semantic", "semantic_to_image"  # element ids, and the conditioner's endpoint
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


@_serves("inpaint")
def _inpaint_tab(pipe, settings: DemoSettings):
    prefix, api_name = "inpaint", "inpaint"  # element ids, and the conditioner's endpoint
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


@_serves("super_resolution")
def _superres_tab(pipe, settings: DemoSettings):
    prefix, api_name = "superres", "super_resolution"  # element ids, and the conditioner's endpoint
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


@_serves("unconditional")
def _unconditional_tab(pipe, settings: DemoSettings):
    prefix, api_name = "unconditional", "unconditional"  # element ids, and the conditioner's endpoint
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
