"""Image-to-image (SDEdit, Meng et al. 2021): start the reverse process from a noised latent of an init image.

With ``strength`` s ∈ (0, 1] and S inference steps, as diffusers' img2img pipelines do:

    init_timestep = min(int(S · s), S),   t_start = S − init_timestep
    z_0 = s_f · E(x)                       (KL: a posterior sample with the call's generator; VQ: pre-quantisation)
    z_τ = √ᾱ_τ z_0 + √(1−ᾱ_τ) ε,           τ = timesteps[t_start]    (scheduler.add_noise)

and the loop runs over ``timesteps[t_start:]``. s = 1 starts from (almost) pure noise; small s keeps the layout
and colours of x. Every mode with a generative prior takes it (text, layout, class, semantic, unconditional);
the modes whose ``image`` is the condition itself (super-resolution, inpainting) do not.

Imports: models, conditioning (the image reader), diffusers' randn_tensor.
"""

from __future__ import annotations

import math

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..conditioning.inputs import image_tensor
from ..models.first_stage import is_vq

# diffusers' img2img default.
DEFAULT_STRENGTH = 0.8


def check_strength(strength, num_inference_steps: int) -> float:
    """``strength`` in (0, 1] such that at least one step runs; an error naming it otherwise."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or math.isnan(strength):
        raise ValueError(f"`strength` must be a number in (0, 1], got {strength!r}")
    if not 0 < strength <= 1:
        raise ValueError(f"`strength`={strength!r} is outside (0, 1]")
    if int(num_inference_steps * strength) < 1:
        raise ValueError(
            f"`strength`={strength} with `num_inference_steps`={num_inference_steps} runs no step "
            f"(int(steps · strength) = 0): raise either"
        )
    return float(strength)


def start_index(num_inference_steps: int, strength: float) -> int:
    """t_start: how many of the schedule's first steps image-to-image skips."""
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    return max(num_inference_steps - init_timestep, 0)


def init_image_tensor(image, batch: int, num_images_per_prompt: int, multiple: int) -> torch.Tensor:
    """The init image(s) as (batch, 3, H, W) in [-1, 1]: one image for every output, one per prompt (repeated
    per ``num_images_per_prompt``) or one per output image."""
    x = image_tensor(image, "image")  # (k, 3, H, W)
    if x.shape[1] != 3:
        raise ValueError(f"the init `image` has {x.shape[1]} channels; an RGB image (3) is required")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"the init `image` is {width}x{height}: width and height must be multiples of {multiple} "
            "(resize or crop it)"
        )
    k = x.shape[0]
    if k == batch:
        return x
    if k * num_images_per_prompt == batch:
        return x.repeat_interleave(num_images_per_prompt, dim=0)
    if k == 1:
        return x.expand(batch, -1, -1, -1)
    raise ValueError(f"got {k} init images for {batch} outputs: pass one, one per prompt or one per output")


@torch.no_grad()
def noised_init_latents(vae, scheduler, x: torch.Tensor, timestep, generator, dtype) -> torch.Tensor:
    """z_τ = add_noise(s_f · E(x), ε, τ) for init images x (B, 3, H, W); the posterior sample draws first, then ε."""
    x = x.to(device=next(vae.parameters()).device, dtype=next(vae.parameters()).dtype)
    if is_vq(vae):
        z0 = vae.encode(x).latents  # (B, c, h, w); the decoder quantises
    elif isinstance(generator, list):  # image i draws from generator i
        z0 = torch.cat([vae.encode(x[i : i + 1]).latent_dist.sample(g) for i, g in enumerate(generator)])
    else:
        z0 = vae.encode(x).latent_dist.sample(generator)  # (B, c, h, w)
    z0 = (z0 * vae.config.scaling_factor).to(dtype)
    noise = randn_tensor(z0.shape, generator=generator, device=z0.device, dtype=dtype)
    t = timestep.repeat(z0.shape[0]) if isinstance(timestep, torch.Tensor) else torch.full((z0.shape[0],), timestep)
    return scheduler.add_noise(z0, noise, t.to(z0.device))
