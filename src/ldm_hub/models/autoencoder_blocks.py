"""The perceptual autoencoder's parts (paper §3.1): encoder E, decoder D, and the two latent regularisers.

E maps an image x ∈ R^{H×W×3} to z ∈ R^{h×w×c} with h = H/f, w = W/f; D maps z back to x̃ = D(z). Both are the
CompVis ``ldm.modules.diffusionmodules.model.Encoder/Decoder`` design (itself from VQGAN): a 3×3 ``conv_in``, one
*level* per entry of ``block_out_channels`` (ResNet blocks, optional single-head self-attention over the H·W
tokens, then a 2× down- or up-sample between levels), a mid block ResNet–Attention–ResNet, and
GroupNorm–SiLU–3×3 ``conv_out``. The levels are indexed by resolution in both E and D: level ``i`` works at
H/2^i with ``block_out_channels[i]`` channels, so ``encoder.down[i]`` and ``decoder.up[i]`` mirror each other
(this is CompVis' ``up.i`` order; the decoder runs its levels from ``i = L-1`` down to 0, and diffusers'
``decoder.up_blocks.j`` is our ``decoder.up[L-1-j]``).

The regularisers are a :class:`DiagonalGaussianDistribution` (KL-reg., the posterior q_E(z|x)) and a
:class:`VectorQuantizer` (VQ-reg., a codebook lookup in D's first layer).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import nn

from ..tiling import TileGrid
from . import cpu_kernels
from .layers import Conv2d

# Each level boundary halves (encoder) or doubles (decoder) the spatial size: f = RESAMPLE_FACTOR ** (L - 1).
RESAMPLE_FACTOR = 2
# Every spatial convolution in E and D is 3×3 with "same" padding; shortcuts and projections are 1×1.
CONV_KERNEL = 3
# The stride-2 downsampling conv pads only right and bottom (F.pad order: left, right, top, bottom), as CompVis.
DOWNSAMPLE_PAD = (0, 1, 0, 1)
# enable_tiling() defaults: tile side in image pixels, overlap as a fraction of the tile.
DEFAULT_DECODE_TILE = 256
DEFAULT_DECODE_TILE_OVERLAP = 0.25


@dataclass
class DecoderOutput(BaseOutput):
    """Output of ``decode``: the reconstruction x̃ = D(z) and, for VQ models, the codebook + commitment loss.

    Args:
        sample: ``(B, out_channels, H, W)`` decoded image x̃.
        commit_loss: scalar VQ loss of the quantisation in this decode (``None`` for KL models; zero when the
            quantiser was skipped with ``force_not_quantize=True``).
    """

    sample: torch.Tensor
    commit_loss: torch.Tensor | None = None


def resolve_attention_levels(attention_levels: Sequence[bool] | None, num_levels: int) -> tuple[bool, ...]:
    """``None`` → no attention inside the levels; otherwise one bool per level, checked for length."""
    if attention_levels is None:
        return (False,) * num_levels
    levels = tuple(bool(a) for a in attention_levels)
    if len(levels) != num_levels:
        raise ValueError(f"attention_levels has {len(levels)} entries but block_out_channels has {num_levels} levels")
    return levels


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, padding: int = CONV_KERNEL // 2) -> Conv2d:
    return Conv2d(in_channels, out_channels, kernel_size=CONV_KERNEL, stride=stride, padding=padding)


class ResnetBlock(nn.Module):
    """Pre-norm residual block without time embedding: x + conv(SiLU(GN(conv(SiLU(GN(x)))))).

    A 1×1 ``shortcut`` conv maps the input when the channel count changes (CompVis ``nin_shortcut``).

    Example:
        >>> block = ResnetBlock(32, 64, norm_num_groups=8, norm_eps=1e-6)
        >>> block(torch.randn(1, 32, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, norm_num_groups: int, norm_eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels, eps=norm_eps)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels, eps=norm_eps)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(cpu_kernels.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = self.conv2(cpu_kernels.silu(self.norm2(h)))  # (B, C_out, H, W)
        return cpu_kernels.add(h, self.shortcut(x))  # shortcut(x) + h, (B, C_out, H, W)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the H·W positions, with a GroupNorm in front and a residual around it.

    softmax(QKᵀ/√C)V with Q, K, V linear maps of GN(x) viewed as H·W tokens of C channels (the CompVis
    ``AttnBlock``; its 1×1 convs are the Linear layers here).

    Example:
        >>> attn = SpatialSelfAttention(64, norm_num_groups=8, norm_eps=1e-6)
        >>> attn(torch.randn(2, 64, 4, 4)).shape
        torch.Size([2, 64, 4, 4])
    """

    def __init__(self, channels: int, norm_num_groups: int, norm_eps: float):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=norm_eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H·W, C)
        # One head: the head axis is a singleton so SDPA sees (B, heads=1, H·W, C).
        q = self.to_q(tokens).unsqueeze(1)  # (B, 1, H·W, C)
        k = self.to_k(tokens).unsqueeze(1)  # (B, 1, H·W, C)
        v = self.to_v(tokens).unsqueeze(1)  # (B, 1, H·W, C)
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B, H·W, C)
        out = self.to_out(out).transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        return x + out


class Downsample(nn.Module):
    """Stride-2 3×3 conv after an asymmetric (right/bottom) zero pad: (B, C, H, W) → (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels, stride=RESAMPLE_FACTOR, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, DOWNSAMPLE_PAD))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour 2× upsampling then a 3×3 conv: (B, C, H, W) → (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=float(RESAMPLE_FACTOR), mode="nearest")  # (B, C, 2H, 2W)
        return self.conv(x)  # (B, C, 2H, 2W)


class Level(nn.Module):
    """One resolution level: ResNet blocks, each optionally followed by self-attention, then a resample.

    ``attentions[j]`` follows ``resnets[j]``; levels without attention hold parameter-free identities there,
    and the last level of E / the first of D an identity ``resample``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        attention: bool,
        resample: nn.Module,
        norm_num_groups: int,
        norm_eps: float,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels if j == 0 else out_channels, out_channels, norm_num_groups, norm_eps)
            for j in range(num_blocks)
        )
        self.attentions = nn.ModuleList(
            SpatialSelfAttention(out_channels, norm_num_groups, norm_eps) if attention else nn.Identity()
            for _ in range(num_blocks)
        )
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet, attention in zip(self.resnets, self.attentions, strict=True):
            x = attention(resnet(x))  # (B, C_out, H_level, W_level)
        return self.resample(x)  # (B, C_out, H_next, W_next)


class MidBlock(nn.Module):
    """ResNet – self-attention – ResNet at the lowest resolution; ``attention=False`` drops the attention
    (CompVis ``attn_type: none``, the vq-f4-noattn model)."""

    def __init__(self, channels: int, attention: bool, norm_num_groups: int, norm_eps: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, norm_num_groups, norm_eps)
        self.attn = SpatialSelfAttention(channels, norm_num_groups, norm_eps) if attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, norm_num_groups, norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn(self.block_1(x)))  # (B, C, h, w)


class Encoder(nn.Module):
    """E: image (B, in_channels, H, W) → (B, c or 2c, H/f, W/f), f = 2^(L-1) with L = len(block_out_channels).

    With ``double_z=True`` the output holds the mean and log-variance of the KL posterior (2c channels).

    Example:
        >>> enc = Encoder(3, 4, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
        >>> enc(torch.randn(1, 3, 16, 16)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        block_out_channels: Sequence[int],
        layers_per_block: int,
        norm_num_groups: int,
        norm_eps: float = 1e-6,
        attention_levels: Sequence[bool] | None = None,
        mid_block_attention: bool = True,
        double_z: bool = True,
    ):
        super().__init__()
        channels = list(block_out_channels)
        num_levels = len(channels)
        attention = resolve_attention_levels(attention_levels, num_levels)
        self.conv_in = conv3x3(in_channels, channels[0])
        self.down = nn.ModuleList(
            Level(
                in_channels=channels[max(i - 1, 0)],
                out_channels=channels[i],
                num_blocks=layers_per_block,
                attention=attention[i],
                resample=Downsample(channels[i]) if i < num_levels - 1 else nn.Identity(),
                norm_num_groups=norm_num_groups,
                norm_eps=norm_eps,
            )
            for i in range(num_levels)
        )
        self.mid = MidBlock(channels[-1], mid_block_attention, norm_num_groups, norm_eps)
        self.norm_out = nn.GroupNorm(norm_num_groups, channels[-1], eps=norm_eps)
        self.conv_out = conv3x3(channels[-1], 2 * latent_channels if double_z else latent_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, H, W) → E(x) (B, c·(1+double_z), H/f, W/f)."""
        h = self.conv_in(x)  # (B, C_0, H, W)
        for level in self.down:
            h = level(h)  # (B, C_i, H/2^(i+1), W/2^(i+1)); the last level keeps H/f
        h = self.mid(h)  # (B, C_{L-1}, H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, c or 2c, H/f, W/f)


class Decoder(nn.Module):
    """D: latent (B, c, h, w) → image (B, out_channels, h·f, w·f).

    ``up[i]`` is the level at resolution H/2^i with ``block_out_channels[i]`` channels and
    ``layers_per_block + 1`` ResNet blocks; it is run from ``i = L-1`` (coarsest) to 0.

    Example:
        >>> dec = Decoder(4, 3, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
        >>> dec(torch.randn(1, 4, 8, 8)).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(
        self,
        latent_channels: int,
        out_channels: int,
        block_out_channels: Sequence[int],
        layers_per_block: int,
        norm_num_groups: int,
        norm_eps: float = 1e-6,
        attention_levels: Sequence[bool] | None = None,
        mid_block_attention: bool = True,
    ):
        super().__init__()
        channels = list(block_out_channels)
        num_levels = len(channels)
        attention = resolve_attention_levels(attention_levels, num_levels)
        self.conv_in = conv3x3(latent_channels, channels[-1])
        self.mid = MidBlock(channels[-1], mid_block_attention, norm_num_groups, norm_eps)
        self.up = nn.ModuleList(
            Level(
                in_channels=channels[min(i + 1, num_levels - 1)],
                out_channels=channels[i],
                num_blocks=layers_per_block + 1,
                attention=attention[i],
                resample=Upsample(channels[i]) if i > 0 else nn.Identity(),
                norm_num_groups=norm_num_groups,
                norm_eps=norm_eps,
            )
            for i in range(num_levels)
        )
        self.norm_out = nn.GroupNorm(norm_num_groups, channels[0], eps=norm_eps)
        self.conv_out = conv3x3(channels[0], out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, c, h, w) → D(z) (B, C_out, h·f, w·f)."""
        h = self.conv_in(z)  # (B, C_{L-1}, h, w)
        h = self.mid(h)  # (B, C_{L-1}, h, w)
        for level in reversed(self.up):
            h = level(h)  # (B, C_i, H/2^(i-1), W/2^(i-1)); level 0 stays at H
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_out, H, W)


class DiagonalGaussianDistribution:
    """The KL-regularised posterior q_E(z|x) = N(z; μ, diag σ²), read off E's 2c output channels.

    | name     | symbol     | shape          |
    |----------|------------|----------------|
    | mean     | μ          | (B, c, h, w)   |
    | logvar   | log σ²     | (B, c, h, w), clamped to [LOGVAR_MIN, LOGVAR_MAX] |
    | std, var | σ, σ²      | (B, c, h, w)   |

    ``sample`` is the reparameterisation z = μ + σ·ε, ε ~ N(0, I) (Kingma & Welling 2014, Eq. 10);
    ``kl`` is KL(q ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²) summed over (c, h, w) (their Appendix B) or against
    another diagonal Gaussian; ``nll`` is −log N(x; μ, σ²) summed over ``dims``.

    Example:
        >>> posterior = DiagonalGaussianDistribution(torch.zeros(1, 8, 2, 2))
        >>> posterior.sample(generator=torch.Generator().manual_seed(0)).shape
        torch.Size([1, 4, 2, 2])
        >>> float(posterior.kl()[0])
        0.0
    """

    LOGVAR_MIN = -30.0
    LOGVAR_MAX = 20.0

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False):
        self.parameters = parameters  # (B, 2c, h, w)
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)  # (B, c, h, w) each
        self.logvar = logvar.clamp(self.LOGVAR_MIN, self.LOGVAR_MAX)
        self.deterministic = deterministic
        if deterministic:
            self.std = self.var = torch.zeros_like(self.mean)
        else:
            self.std = torch.exp(0.5 * self.logvar)
            self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = μ + σ·ε with ε drawn on the generator's device (then moved), so CPU seeds reproduce anywhere."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)  # (B, c, h, w)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, other: DiagonalGaussianDistribution | None = None) -> torch.Tensor:
        """KL(self ‖ other) per batch item, (B,); ``other=None`` means the standard normal prior."""
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0])
        if other is None:
            terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        else:
            terms = (
                (self.mean - other.mean).pow(2) / other.var + self.var / other.var - 1.0 - self.logvar + other.logvar
            )
        return 0.5 * terms.sum(dim=(1, 2, 3))

    def nll(self, sample: torch.Tensor, dims: Sequence[int] = (1, 2, 3)) -> torch.Tensor:
        """−log N(sample; μ, σ²) summed over ``dims``."""
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0])
        log_two_pi = math.log(2.0 * math.pi)
        return 0.5 * torch.sum(log_two_pi + self.logvar + (sample - self.mean).pow(2) / self.var, dim=tuple(dims))


class VectorQuantizer(nn.Module):
    """VQ-reg.: replace every latent vector by its nearest codebook entry (van den Oord et al. 2017).

    | name      | symbol          | shape                      |
    |-----------|-----------------|----------------------------|
    | z         | z_e = E(x)      | (B, d, h, w)               |
    | codebook  | e_1 … e_K       | (K, d) = embedding.weight  |
    | indices   | argmin_k ‖z−e_k‖ | (B, h, w)                  |
    | z_q       | e_{indices}     | (B, d, h, w)               |

    Distances ‖z‖² − 2 z·e + ‖e‖² come from one batched matmul; ``z_q`` passes gradients straight through to
    z. The loss is VQ-VAE's Eq. 3 without the reconstruction term, ‖sg[z] − z_q‖² + β‖z − sg[z_q]‖², but with
    ``legacy=True`` (CompVis ``VectorQuantizer2``'s default, used by every released LDM autoencoder) β weights
    the codebook term instead: ‖sg[z_q] − z‖² + β‖z_q − sg[z]‖². Both are means over all elements.

    Example:
        >>> vq = VectorQuantizer(num_embeddings=16, embedding_dim=3)
        >>> z_q, loss, indices = vq(torch.randn(2, 3, 4, 4))
        >>> z_q.shape, loss.shape, indices.shape
        (torch.Size([2, 3, 4, 4]), torch.Size([]), torch.Size([2, 4, 4]))
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, beta: float = 0.25, legacy: bool = True):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.beta = beta
        self.legacy = legacy
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)

    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Indices (B, h, w) of the codebook entries nearest to each vector of z (B, d, h, w)."""
        B, _, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(B, h * w, self.embedding_dim)  # (B, h·w, d)
        codebook = self.embedding.weight  # (K, d)
        distances = (
            flat.pow(2).sum(-1, keepdim=True)  # (B, h·w, 1)
            - 2 * torch.matmul(flat, codebook.t())  # (B, h·w, K)
            + codebook.pow(2).sum(-1)  # (K,)
        )
        return distances.argmin(dim=-1).reshape(B, h, w)  # (B, h, w)

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors for indices (B, h, w) as a latent (B, d, h, w)."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()  # (B, d, h, w)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z (B, d, h, w) → (z_q (B, d, h, w) with straight-through gradients, scalar loss, indices (B, h, w))."""
        indices = self.nearest_codes(z)  # (B, h, w)
        z_q = self.get_codebook_entry(indices)  # (B, d, h, w)
        codebook_term = torch.mean((z_q - z.detach()).pow(2))  # moves e toward sg[z]
        commitment_term = torch.mean((z_q.detach() - z).pow(2))  # moves z toward sg[e]
        if self.legacy:
            loss = commitment_term + self.beta * codebook_term
        else:
            loss = codebook_term + self.beta * commitment_term
        z_q = z + (z_q - z).detach()  # (B, d, h, w): straight-through estimator
        return z_q, loss, indices


class FirstStageMixin:
    """What both first stages (E, D) share beyond their modules: the factor f, CompVis checkpoint loading, and the
    memory-lean decode (sliced over the batch, tiled over the image)."""

    # Memory-lean decode, off by default (see enable_slicing / enable_tiling).
    use_slicing: bool = False
    tiling: tuple[int, int, int] | None = None  # (tile, overlap, tiles per call) in latent pixels

    @property
    def downsampling_factor(self) -> int:
        """f = H/h."""
        return RESAMPLE_FACTOR ** (len(self.config.block_out_channels) - 1)

    def enable_slicing(self) -> None:
        """Decode a batch one latent at a time: peak memory of one image, the same pixels."""
        self.use_slicing = True

    def disable_slicing(self) -> None:
        self.use_slicing = False

    def enable_tiling(
        self, tile_size: int = DEFAULT_DECODE_TILE, tile_overlap: int | None = None, tile_batch_size: int = 1
    ) -> None:
        """Decode latents larger than ``tile_size`` image pixels in overlapping tiles blended with a linear ramp.

        D then sees at most ``tile_size / f`` latent pixels per side (``tile_batch_size`` tiles per call), so
        memory follows the tile, not the image. ``tile_overlap`` (pixels, a multiple of f; default a quarter of the
        tile) is the overlap of neighbouring tiles; seams shrink as it grows. D's receptive field is larger than
        any tile, so the result is close to, not equal to, the untiled decode.

        Example:
            >>> from ldm_hub.models import AutoencoderKL
            >>> vae = AutoencoderKL(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
            >>> vae.enable_tiling(tile_size=16, tile_overlap=8)
            >>> vae.decode(torch.randn(1, 4, 24, 24)).sample.shape
            torch.Size([1, 3, 48, 48])
        """
        f = self.downsampling_factor
        if tile_overlap is None:
            tile_overlap = int(tile_size * DEFAULT_DECODE_TILE_OVERLAP) // f * f
        if tile_size % f or tile_overlap % f or not 0 <= tile_overlap < tile_size or tile_batch_size < 1:
            raise ValueError(
                f"tile_size and tile_overlap must be multiples of f={f} with 0 <= tile_overlap < tile_size, and "
                f"tile_batch_size >= 1; got {tile_size}, {tile_overlap}, {tile_batch_size}"
            )
        self.tiling = (tile_size // f, tile_overlap // f, tile_batch_size)

    def disable_tiling(self) -> None:
        self.tiling = None

    def _decode_lean(self, z: torch.Tensor) -> torch.Tensor:
        """x̃ = D(post_quant_conv(z)) for z (B, c, h, w), sliced and / or tiled as enabled."""
        if self.use_slicing and z.shape[0] > 1:
            return torch.cat([self._decode_tiled(one) for one in z.split(1)])  # (B, C_out, h·f, w·f)
        return self._decode_tiled(z)

    def _decode_tiled(self, z: torch.Tensor) -> torch.Tensor:
        if self.tiling is None or max(z.shape[-2:]) <= self.tiling[0]:
            return self.decoder(self.post_quant_conv(z))  # (B, C_out, h·f, w·f)
        # The pipeline's tiled-sampling grid, reused (imported here: pipelines import the models).
        tile, overlap, per_call = self.tiling
        grid = TileGrid(z.shape[-2:], tile, overlap, scale=self.downsampling_factor, device=z.device, dtype=z.dtype)
        return grid.map(lambda t: self.decoder(self.post_quant_conv(t)), z, per_call)  # (B, C_out, h·f, w·f)

    @classmethod
    def from_single_file(
        cls,
        path: str | os.PathLike,
        *,
        original_config: str | os.PathLike | dict,
        allow_unsafe_pickle: bool = False,
        scaling_factor: float | None = None,
    ):
        """Convert an original CompVis autoencoder checkpoint (``.ckpt`` / ``.safetensors``) and its YAML.

        A standalone first stage of the zoo (kl-f8, vq-f4, …; keys without prefix, ``loss.*`` dropped) or the
        first stage of a full LDM checkpoint (``first_stage_model.*``). ``scaling_factor`` is written into the
        config; default 1.0 for a standalone autoencoder, the LDM's own for an LDM's first stage. See
        :mod:`ldm_hub.convert.compvis` (``allow_unsafe_pickle`` as in ``LDMPipeline.from_single_file``).

        Example:
            ```py
            >>> vae = AutoencoderKL.from_single_file("model.ckpt", original_config="config.yaml")  # doctest: +SKIP
            ```
        """
        from ..convert.compvis import autoencoder_from_single_file

        return autoencoder_from_single_file(
            path, original_config, expected=cls, allow_unsafe_pickle=allow_unsafe_pickle,
            scaling_factor=scaling_factor,
        )  # fmt: skip
