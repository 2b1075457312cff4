"""The KL-regularised perceptual autoencoder (paper §3.1; the kl-f4 … kl-f32 first stages)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..hub_mixin import HubMixin
from .autoencoder_blocks import (
    Decoder,
    DecoderOutput,
    DiagonalGaussianDistribution,
    Encoder,
    FirstStageMixin,
)
from .layers import Conv2d


@dataclass
class AutoencoderKLOutput(BaseOutput):
    """Output of :meth:`AutoencoderKL.encode`: the posterior q_E(z|x) as a :class:`DiagonalGaussianDistribution`."""

    latent_dist: DiagonalGaussianDistribution


class AutoencoderKL(FirstStageMixin, HubMixin, ModelMixin, ConfigMixin):
    """E and D with a KL-regularised latent: q_E(z|x) = N(μ, σ²) pushed slightly toward N(0, I).

    Args:
        in_channels: channels of the image x (3).
        out_channels: channels of the reconstruction x̃ (3).
        block_out_channels: channels per resolution level; L = len(...) levels give f = 2^(L-1).
        layers_per_block: ResNet blocks per encoder level (the decoder has one more per level).
        latent_channels: c, the channels of z.
        norm_num_groups: GroupNorm groups everywhere.
        norm_eps: GroupNorm epsilon everywhere.
        mid_block_attention: self-attention between the two mid-block ResNets of E and D.
        attention_levels: optional tuple of one bool per level: self-attention after every ResNet block of that
            level in E and D (CompVis ``attn_resolutions``: kl-f16 has it at its last level, kl-f32 at its last
            two). ``None`` means no attention inside the levels.
        scaling_factor: s; the diffusion model sees s·z and D receives z = latents / s (paper §4.3.2, App. D.1).
        sample_size: the image side the autoencoder was trained at (informational).

    Example:
        >>> vae = AutoencoderKL(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
        >>> x = torch.randn(1, 3, 16, 16)
        >>> posterior = vae.encode(x).latent_dist
        >>> z = posterior.sample(generator=torch.Generator().manual_seed(0))
        >>> z.shape, vae.decode(z).sample.shape
        (torch.Size([1, 4, 8, 8]), torch.Size([1, 3, 16, 16]))
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        mid_block_attention: bool = True,
        attention_levels: Sequence[bool] | None = None,
        scaling_factor: float = 0.18215,
        sample_size: int = 256,
    ):
        super().__init__()
        shared = dict(
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            attention_levels=attention_levels,
            mid_block_attention=mid_block_attention,
        )
        self.encoder = Encoder(in_channels, latent_channels, double_z=True, **shared)
        self.quant_conv = Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = Conv2d(latent_channels, latent_channels, 1)
        self.decoder = Decoder(latent_channels, out_channels, **shared)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """x (B, C_in, H, W) in [-1, 1] → q_E(z|x), a diagonal Gaussian over z (B, c, H/f, W/f)."""
        moments = self.quant_conv(self.encoder(x))  # (B, 2c, H/f, W/f): μ and log σ²
        posterior = DiagonalGaussianDistribution(moments)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """z (B, c, h, w) → x̃ = D(z) (B, C_out, h·f, w·f). Pass unscaled latents (divide by s first)."""
        sample = self._decode_lean(z)  # (B, C_out, h·f, w·f); sliced / tiled when enabled
        if not return_dict:
            return (sample,)
        return DecoderOutput(sample=sample)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> DecoderOutput | tuple:
        """Reconstruct x̃ = D(z), z ~ q_E(z|x) (or z = μ, its mode).

        | name      | paper symbol     | shape            |
        |-----------|------------------|------------------|
        | sample    | x                | (B, C_in, H, W)  |
        | posterior | q_E(z|x) = N(μ, σ²) | (B, c, H/f, W/f) |
        | z         | z = E(x)         | (B, c, H/f, W/f) |
        | returned  | x̃ = D(z)         | (B, C_out, H, W) |

        The paper's §3.1 (with App. G) trains E, D on L_rec(x, D(E(x))) + L_adv + L_reg, where for KL-reg.
        L_reg is a small-weight KL(q_E(z|x) ‖ N(0, I)) (``posterior.kl()``); z is sampled by reparameterisation.
        """
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()  # (B, c, h, w)
        reconstruction = self.decode(z).sample  # (B, C_out, H, W)
        if not return_dict:
            return (reconstruction,)
        return DecoderOutput(sample=reconstruction)
