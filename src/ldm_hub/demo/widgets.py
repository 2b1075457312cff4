"""What every tab shares: one request's pipeline and sampling run (a fresh scheduler per request, progress,
errors as messages), the sampling controls, the result gallery and the event wiring (one concurrency group for
every sampling endpoint). Imports the sampler table from :mod:`ldm_hub.options`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import gradio as gr
import PIL.Image
import torch

from ..options import SCHEDULERS, scheduler_class
from .inputs import _as_int, _error
from .settings import DEFAULT_SCHEDULER, DemoSettings

_CONCURRENCY_ID = "sampling"


# ---------------------------------------------------------------------------------------------- sampling
def _call_parameters(pipe) -> set[str]:
    return set(inspect.signature(pipe.__call__).parameters)


def _scheduler_choices() -> list[str]:
    return [DEFAULT_SCHEDULER, *sorted(SCHEDULERS)]


def _request_pipeline(pipe, scheduler: str):
    """A pipeline sharing ``pipe``'s models with a fresh scheduler (a scheduler holds per-run state, so
    concurrent requests must not share one; the chosen sampler never leaks into other requests)."""
    if scheduler in (None, "", DEFAULT_SCHEDULER):
        cls = type(pipe.scheduler)
    elif scheduler in SCHEDULERS:
        cls = scheduler_class(scheduler)
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
        progress((i + 1, p.num_timesteps or len(p.scheduler.timesteps)), desc="sampling", unit="steps")
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


# ---------------------------------------------------------------------------------------------- controls
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


# ---------------------------------------------------------------------------------------------- image-to-image
DEFAULT_STRENGTH = 0.8


@dataclass
class InitImage:
    """The optional start image of image-to-image and how far it is noised."""

    image: gr.Image
    strength: gr.Slider


def _init_image_controls(prefix: str, settings: DemoSettings) -> InitImage:
    """An optional init image (image-to-image, SDEdit) and its strength, folded away until wanted."""
    from .inputs import guard_upload

    with gr.Accordion("start from an image (image-to-image)", open=False):
        image = guard_upload(
            gr.Image(type="pil", label="init image (optional; fitted to the output size)", elem_id=f"{prefix}-init"),
            settings.max_upload_bytes,
        )
        strength = gr.Slider(
            0.05, 1.0, value=DEFAULT_STRENGTH, step=0.05, label="strength (1 = ignore the image's detail)",
            elem_id=f"{prefix}-strength",
        )  # fmt: skip
    return InitImage(image, strength)


def _init_image_kwargs(pipe, settings: DemoSettings, image, strength, size: dict, steps: int) -> dict:
    """``image=`` and ``strength=`` for the pipeline: the upload cropped and resized to the output size."""
    if image is None:
        return {}
    from .inputs import _as_float

    strength = _as_float("strength", strength, 0.0, 1.0)
    if int(steps * strength) < 1:
        raise _error(f"strength {strength} with {steps} steps runs no step: raise either")
    import PIL.ImageOps

    native = _native_side(pipe)
    side = (size.get("width", native), size.get("height", native))
    fitted = PIL.ImageOps.fit(image.convert("RGB"), side, PIL.Image.Resampling.LANCZOS)
    return {"image": fitted, "strength": strength}
