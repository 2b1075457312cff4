"""What the rest of the library asks of a first stage (E, D), answered in one place for KL and VQ alike.

Every caller used to tell KL from VQ by duck typing and recompute f from the config; these functions do both
once. They take ldm_hub's and diffusers' autoencoders (same config fields, same encode outputs).
"""

from __future__ import annotations

import torch

# Each encoder / decoder level after the first halves / doubles the resolution.
RESAMPLE_FACTOR = 2


def downsampling_factor(vae) -> int:
    """f = H/h, the autoencoder's downsampling factor (2 per level after the first)."""
    return RESAMPLE_FACTOR ** (len(vae.config.block_out_channels) - 1)


def is_vq(vae) -> bool:
    """Whether the first stage is VQ-regularised (it quantises in ``decode``); otherwise KL."""
    return hasattr(vae, "quantize")


def encode_moments(vae, x: torch.Tensor) -> torch.Tensor:
    """E(x) as what determines the latent: KL (μ, log σ²) stacked as (B, 2c, h, w); VQ the latent (B, c, h, w)."""
    if is_vq(vae):
        return vae.encode(x).latents
    posterior = vae.encode(x).latent_dist
    return torch.cat([posterior.mean, posterior.logvar], dim=1)


def sample_latents(vae, moments: torch.Tensor) -> torch.Tensor:
    """z from :func:`encode_moments`: a posterior sample for KL (global RNG), the latent itself for VQ."""
    if is_vq(vae):
        return moments
    mean, logvar = moments.chunk(2, dim=1)
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # (B, c, h, w)


def encode_mode(vae, x: torch.Tensor) -> torch.Tensor:
    """E's deterministic latent: VQ before quantisation, KL the posterior mode (μ); (B, c, h, w), unscaled."""
    encoded = vae.encode(x)
    return encoded.latents if is_vq(vae) else encoded.latent_dist.mode()


def reconstruct(vae, x: torch.Tensor) -> torch.Tensor:
    """D(E(x)) with the deterministic latent (VQ quantised by ``decode``): (B, 3, H, W)."""
    return vae.decode(encode_mode(vae, x)).sample
