"""The VQ-regularised perceptual autoencoder (paper §3.1; the vq-f4, vq-f4-noattn, vq-f8, vq-f16 first stages)."""

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
    Encoder,
    FirstStageMixin,
    VectorQuantizer,
)
from .layers import Conv2d


@dataclass
class VQEncoderOutput(BaseOutput):
    """Output of :meth:`VQModel.encode`: the *pre-quantisation* latents (B, d, h, w), as in CompVis."""

    latents: torch.Tensor


class VQModel(FirstStageMixin, HubMixin, ModelMixin, ConfigMixin):
    """E and D with a vector-quantised latent: the quantiser is the first layer of D (CompVis ``VQModel``).

    ``encode`` returns the continuous ``quant_conv`` output that the LDM's diffusion model works on; ``decode``
    quantises it against the codebook, then runs ``post_quant_conv`` and D.

    Args:
        in_channels: channels of the image x (3).
        out_channels: channels of the reconstruction x̃ (3).
        block_out_channels: channels per resolution level; L levels give f = 2^(L-1).
        layers_per_block: ResNet blocks per encoder level (the decoder has one more per level).
        latent_channels: c, the channels at E's output and D's input.
        num_vq_embeddings: K, the codebook size.
        vq_embed_dim: d, the codebook vector size (``None`` means d = c); ``quant_conv`` maps c → d.
        norm_num_groups: GroupNorm groups everywhere.
        norm_eps: GroupNorm epsilon everywhere.
        mid_block_attention: self-attention in the mid blocks of E and D (``False`` is vq-f4-noattn).
        attention_levels: optional tuple of one bool per level: self-attention after every ResNet block of that
            level in E and D (vq-f8 and vq-f16 have it at their last level). ``None`` means none.
        scaling_factor: s; the diffusion model sees s·z (1.0 for the released VQ LDMs).
        commitment_beta: β of the quantiser loss (see :class:`VectorQuantizer`).
        sample_size: the image side the autoencoder was trained at (informational).

    Example:
        >>> vq = VQModel(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, num_vq_embeddings=16)
        >>> z = vq.encode(torch.randn(1, 3, 16, 16)).latents
        >>> out = vq.decode(z)
        >>> z.shape, out.sample.shape, out.commit_loss.shape
        (torch.Size([1, 3, 8, 8]), torch.Size([1, 3, 16, 16]), torch.Size([]))
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: Sequence[int] = (128, 256, 512),
        layers_per_block: int = 2,
        latent_channels: int = 3,
        num_vq_embeddings: int = 8192,
        vq_embed_dim: int | None = None,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        mid_block_attention: bool = True,
        attention_levels: Sequence[bool] | None = None,
        scaling_factor: float = 1.0,
        commitment_beta: float = 0.25,
        sample_size: int = 256,
    ):
        super().__init__()
        embed_dim = vq_embed_dim if vq_embed_dim is not None else latent_channels
        shared = dict(
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            attention_levels=attention_levels,
            mid_block_attention=mid_block_attention,
        )
        self.encoder = Encoder(in_channels, latent_channels, double_z=False, **shared)
        self.quant_conv = Conv2d(latent_channels, embed_dim, 1)
        self.quantize = VectorQuantizer(num_vq_embeddings, embed_dim, beta=commitment_beta)
        self.post_quant_conv = Conv2d(embed_dim, latent_channels, 1)
        self.decoder = Decoder(latent_channels, out_channels, **shared)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> VQEncoderOutput | tuple:
        """x (B, C_in, H, W) in [-1, 1] → pre-quantisation latents z_e (B, d, H/f, W/f)."""
        latents = self.quant_conv(self.encoder(x))  # (B, d, H/f, W/f)
        if not return_dict:
            return (latents,)
        return VQEncoderOutput(latents=latents)

    @apply_forward_hook
    def decode(
        self, z: torch.Tensor, force_not_quantize: bool = False, return_dict: bool = True
    ) -> DecoderOutput | tuple:
        """z (B, d, h, w) → x̃ = D(q(z)) (B, C_out, h·f, w·f) and the quantiser loss.

        ``force_not_quantize=True`` skips the codebook lookup (decodes z as is; ``commit_loss`` is then 0).
        """
        if force_not_quantize:
            quantized, commit_loss = z, z.new_zeros(())  # (B, d, h, w), scalar
        else:
            quantized, commit_loss, _ = self.quantize(z)  # (B, d, h, w), scalar
        sample = self._decode_lean(quantized)  # (B, C_out, h·f, w·f); sliced / tiled when enabled
        if not return_dict:
            return (sample, commit_loss)
        return DecoderOutput(sample=sample, commit_loss=commit_loss)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Reconstruct x̃ = D(q(E(x))).

        | name        | paper symbol              | shape              |
        |-------------|---------------------------|--------------------|
        | sample      | x                         | (B, C_in, H, W)    |
        | latents     | z = E(x) (pre-quantisation) | (B, d, H/f, W/f) |
        | quantized   | z_q, nearest codebook entries | (B, d, H/f, W/f) |
        | returned    | x̃ = D(z_q), VQ loss       | (B, C_out, H, W), () |

        Trained (paper §3.1, App. G) on L_rec(x, x̃) + L_adv + L_reg with L_reg the VQ-VAE codebook and
        commitment terms (van den Oord et al. 2017, Eq. 3), returned here as ``commit_loss``.
        """
        latents = self.encode(sample).latents  # (B, d, h, w)
        return self.decode(latents, return_dict=return_dict)
