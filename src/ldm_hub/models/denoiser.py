"""The one ε_θ(z_t, t, y) call, for sampling and for training alike.

How y reaches the UNet is CompVis' ``DiffusionWrapper`` conditioning key: ``concat`` stacks the condition's
channels onto z_t, ``crossattn`` passes τ_θ(y) as the cross-attention context, both may be given, or neither.
Classifier-free guidance runs the unconditional and conditional inputs as one batched call,

    ε̂ = ε_θ(z_t, t, ∅) + w · (ε_θ(z_t, t, y) − ε_θ(z_t, t, ∅))        (Ho & Salimans 2021, Eq. 6)

with the context's unconditional half first. Nothing else in the library calls the UNet.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def predict_noise(
    unet: nn.Module,
    z_t: torch.Tensor,
    t: torch.Tensor | int,
    *,
    context: torch.Tensor | None = None,
    concat: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    tiles=None,
) -> torch.Tensor:
    """ε_θ(z_t, t, y): stack ``concat`` onto z_t and / or cross-attend ``context``, guided when a scale is given.

    | name              | paper                      | shape                          |
    |-------------------|----------------------------|--------------------------------|
    | ``z_t``           | z_t (scheduler-scaled)     | (B, c, h, w)                   |
    | ``context``       | τ_θ(y), K and V of Eq. 3   | (B, L, d) or (2B, L, d) guided |
    | ``concat``        | y stacked on z_t (Eq. 2)   | (B, C_y, h, w)                 |
    | ``guidance_scale``| w (None: no guidance)      |                                |
    | returned          | ε̂                          | (B, c, h, w)                   |

    ``tiles``: ``(grid, tiles_per_call)`` with a :class:`~ldm_hub.tiling.TileGrid` over the latent: the UNet
    runs on overlapping tiles blended with a linear ramp (concat conditions only: a map aligned with z_t).
    Tensor ops only (no host reads), so a loop of these calls can be recorded as one CUDA graph.
    """
    guided = guidance_scale is not None
    x = torch.cat([z_t, z_t]) if guided else z_t  # (B or 2B, c, h, w)
    if concat is not None:
        x = torch.cat([x, torch.cat([concat, concat]) if guided else concat], dim=1)  # (·, c + C_y, h, w)
    if tiles is None:
        eps = unet(x, t, encoder_hidden_states=context).sample  # (B or 2B, c, h, w)
    else:
        grid, per_call = tiles
        eps = grid.map(lambda tile: unet(tile, t, encoder_hidden_states=context).sample, x, per_call)
    if guided:
        eps_uncond, eps_cond = eps.chunk(2)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)  # (B, c, h, w)
    return eps


# encode(cond_encoder, y) -> (context, concat): a conditioner's τ_θ for a condition encoder trained with ε_θ.
Encode = Callable[[nn.Module, object], tuple[torch.Tensor | None, torch.Tensor | None]]


class Denoiser(nn.Module):
    """ε_θ together with a τ_θ trained with it: the one module an optimizer and accelerate (DDP) wrap.

    ``forward(z_t, t, context=, concat=)`` takes a prepared condition; ``forward(z_t, t, encode=, y=)`` runs
    τ_θ(y) inside the same forward (so its gradients flow in one DDP call), ``encode`` being the conditioner's
    ``(cond_encoder, y) -> (context, concat)``. Both end in :func:`predict_noise`.
    """

    def __init__(self, unet: nn.Module, cond_encoder: nn.Module | None = None):
        super().__init__()
        self.unet = unet
        self.cond_encoder = cond_encoder

    def forward(self, z_t, t, context=None, concat=None, encode: Encode | None = None, y=None) -> torch.Tensor:
        if encode is not None:
            context, concat = encode(self.cond_encoder, y)  # τ_θ(y): (B, L, d) context or (B, C, h, w) channels
        return predict_noise(self.unet, z_t, t, context=context, concat=concat)  # (B, c, h, w)
