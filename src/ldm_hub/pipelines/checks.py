"""The checks of one ``LDMPipeline.__call__`` that need no model: sampling arguments, callbacks, image-to-image,
tiling, and the output conversion (the conditioner checks y itself).

Imports: conditioning (through the conditioner passed in), tiling, image_to_image, diffusers' callbacks.
"""

from __future__ import annotations

import math
import warnings

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..tiling import plan_tiles
from .image_to_image import DEFAULT_STRENGTH, check_strength

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


# diffusers' device_map values for pipelines: a balanced placement, or every component on one device.
def device_map_values() -> list[str]:
    from diffusers.utils.torch_utils import get_device

    return ["balanced", get_device(), "cpu"]


def check_call(
    conditioner, y, guidance_scale, output_type, num_images_per_prompt, num_inference_steps, callback, tensor_inputs,
    allowed_tensor_inputs,
) -> tuple[str, list[str]]:  # fmt: skip
    """Validate the sampling arguments and y; returns the output type and the callback tensor names."""
    if not isinstance(guidance_scale, (int, float)) or math.isnan(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"`guidance_scale` must be a number >= 0, got {guidance_scale!r}")
    if output_type == "numpy":  # diffusers' deprecated spelling
        warnings.warn('`output_type="numpy"` is deprecated: use "np"', FutureWarning, stacklevel=3)
        output_type = "np"
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise ValueError(f"`num_images_per_prompt` must be a positive int, got {num_images_per_prompt!r}")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"`num_inference_steps` must be a positive int, got {num_inference_steps!r}")
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


def postprocess(images: torch.Tensor, output_type: str, numpy_to_pil):
    """(B, 3, H, W) in [0, 1] → numpy (B, H, W, 3) or PIL images; tensors (and latents) as they are."""
    if output_type in ("pt", "latent"):
        return images
    images = images.cpu().permute(0, 2, 3, 1).float().numpy()
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
