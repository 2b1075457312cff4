"""The checks of one ``LDMPipeline.__call__`` that need no model: sampling arguments, callbacks, image-to-image,
tiling, and the output conversion (the conditioner checks y itself).

Imports: conditioning (through the conditioner passed in), tiling, image_to_image, diffusers' callbacks.
"""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..tiling import plan_tiles
from .image_to_image import DEFAULT_STRENGTH, check_strength

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


# diffusers' device_map values for pipelines: a balanced placement, or every component on one device.
def device_map_values() -> list[str]:
    from diffusers.utils.torch_utils import get_device

    return ["balanced", get_device(), "cpu"]


def check_number(name: str, value, low=None, high=None, *, integer: bool = False) -> None:
    """``value`` a finite number (an int when ``integer``; never a bool) in [low, high]; an error naming it."""
    kind = "an integer" if integer else "a number"
    span = f" in [{low}, {high}]" if low is not None and high is not None else f" >= {low}" if low is not None else ""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:  # a ValueError, as these checks have always raised
        raise ValueError(f"`{name}` must be {kind}{span}, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number{span}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"`{name}`={value!r} is out of range: it must be{span}")


def check_tensor(name: str, value, *, floating: bool = True) -> None:
    """A torch tensor (floating, finite) where one is documented; read once, never on the meta device."""
    if value is None:
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.dtype.is_floating_point:
        raise TypeError(f"`{name}` must be a floating-point tensor, got {value.dtype}")
    if value.device.type != "meta" and value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"`{name}` holds NaN or infinite values")


def check_output(images, pipe, guidance_scale) -> None:
    """After the loop, where the image is read back anyway: a non-finite image is an error saying what probably
    caused it (never silently repaired)."""
    if bool(np.isfinite(images).all()):
        return
    causes = []
    dtype = getattr(pipe.unet, "dtype", torch.float32)
    if dtype == torch.float16:
        causes.append("the models run in float16, whose range overflows here: use bfloat16 or float32")
    if guidance_scale > 10:
        causes.append(f"guidance_scale={guidance_scale} is large: try 1-10")
    causes.append(f"the scheduler {type(pipe.scheduler).__name__} or the model weights (check them for NaN)")
    raise ValueError("the generated image holds NaN or infinite values; probable cause: " + "; ".join(causes))


def step_accepts(scheduler, name: str) -> bool:
    """Whether the scheduler class's ``step`` takes the keyword ``name`` (read off the class, so a wrapped or
    patched instance method does not hide it)."""
    parameters = inspect.signature(type(scheduler).step).parameters
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def conditioner_steps_limit(scheduler) -> int | None:
    """S ≤ T: the scheduler's training timesteps."""
    return getattr(getattr(scheduler, "config", None), "num_train_timesteps", None)


def check_call(
    conditioner, scheduler, y, guidance_scale, eta, batch_size, latents, output_type, num_images_per_prompt,
    num_inference_steps, callback, tensor_inputs, allowed_tensor_inputs,
) -> tuple[str, list[str]]:  # fmt: skip
    """Validate the sampling arguments and y; returns the output type and the callback tensor names."""
    check_number("guidance_scale", guidance_scale, 0)
    if output_type == "numpy":  # diffusers' deprecated spelling
        warnings.warn('`output_type="numpy"` is deprecated: use "np"', FutureWarning, stacklevel=3)
        output_type = "np"
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
    check_number("num_images_per_prompt", num_images_per_prompt, 1, integer=True)
    check_number("num_inference_steps", num_inference_steps, 1, conditioner_steps_limit(scheduler), integer=True)
    check_number("eta", eta, 0, 1)
    if eta and not step_accepts(scheduler, "eta"):
        raise ValueError(f"`eta`={eta} is DDIM's η; {type(scheduler).__name__} has no such parameter: leave it at 0")
    if batch_size != 1 and conditioner.inputs:
        raise ValueError(
            f"`batch_size` is for unconditional models; a {conditioner.mode!r} model makes one image per input: "
            "pass several inputs or `num_images_per_prompt`"
        )
    check_tensor("latents", latents)
    if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
        tensor_inputs = callback.tensor_inputs  # a diffusers callback says what it reads
    tensor_inputs = list(tensor_inputs or ["latents"])
    unknown = [name for name in tensor_inputs if name not in allowed_tensor_inputs]
    if unknown:
        raise ValueError(f"`callback_on_step_end_tensor_inputs` may name {allowed_tensor_inputs}, not {unknown}")
    conditioner.check_inputs(y)
    if guidance_scale != 1.0 and not conditioner.guidance_supported:
        raise ValueError(
            f"classifier-free guidance needs an unconditional input, which {conditioner.mode!r} models do not "
            "have: use guidance_scale=1"
        )
    return output_type, tensor_inputs


def check_init_image(conditioner, init_image, strength, latents, num_inference_steps) -> float | None:
    """The image-to-image arguments: ``strength`` only with an init image, and only for a generative prior."""
    if strength is not None and "image" in conditioner.accepted_inputs:
        raise ValueError(
            f"`strength` is for image-to-image; a {conditioner.mode!r} model reads `image` as its condition, not "
            "as an init image to noise"
        )
    if init_image is None:
        if strength is not None:
            raise ValueError("`strength` needs an init `image` (image-to-image)")
        return None
    if latents is not None:
        raise ValueError("pass either `latents` or an init `image`, not both: image-to-image draws its own noise")
    return check_strength(DEFAULT_STRENGTH if strength is None else strength, num_inference_steps)


def tile_plan(conditioner, tile_size, tile_overlap, tile_batch_size) -> tuple[int, int, int] | None:
    """Validate the tiling arguments; (tile, overlap, tiles per call) in latent pixels, or None."""
    if tile_size is None:
        if tile_overlap is not None:
            raise ValueError("`tile_overlap` needs `tile_size`")
        return None
    if not conditioner.tiled:
        raise ValueError(
            "tiled sampling is for models whose condition is a map aligned with the image (super-resolution, "
            f"semantic synthesis); this one is {conditioner.mode!r}"
        )
    f = conditioner.vae_scale_factor
    return plan_tiles(tile_size, tile_overlap, tile_batch_size, f=f, multiple=conditioner.size_multiple)


def postprocess(images: torch.Tensor, output_type: str, numpy_to_pil, check=None):
    """(B, 3, H, W) in [0, 1] → numpy (B, H, W, 3) or PIL images (checked by ``check`` once on the host); tensors
    (and latents) as they are."""
    if output_type in ("pt", "latent"):
        return images
    images = images.cpu().permute(0, 2, 3, 1).float().numpy()
    if check is not None:
        check(images)
    return numpy_to_pil(images) if output_type == "pil" else images


def place_on(pipe, device_map: str) -> None:
    """Put every model on one device (``"cpu"``, the accelerator's), or spread them (``"balanced"``)."""
    from diffusers.utils.torch_utils import get_device

    accelerators = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device_map == "balanced" and accelerators > 1:
        raise ValueError(
            f"`device_map='balanced'` over {accelerators} accelerators is not implemented: ldm_hub's pipeline "
            "runs its models on one device; pass device_map='cuda' (or call .to())"
        )
    device = get_device() if device_map == "balanced" else device_map
    pipe.to(device)
