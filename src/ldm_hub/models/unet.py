"""ε_θ(z_t, t, y): the time-conditional UNet of Latent Diffusion Models (paper §3.2–3.3, App. E.2).

Structure as in CompVis' ``openaimodel.UNetModel``: per resolution level, ``layers_per_block`` ResBlocks
(each followed by an attention block if the level has attention) and a 2× downsampler (except at the last
level); a middle ResBlock–attention–ResBlock; an up path mirroring it with ``layers_per_block + 1`` ResBlocks
per level, each eating one skip connection, and a 2× upsampler (except at level 0). The timestep enters every
ResBlock through a sinusoidal embedding and an MLP; the condition enters either as channels concatenated to
z_t (``in_channels``), as a context sequence τ_θ(y) for cross-attention (``cross_attention_dim``), or as a
class embedding added to the time embedding (``num_class_embeds``, CompVis' ``adm`` key).

Parameter names are ours: ``down_levels.{i}``, ``mid``, ``up_levels.{i}`` are indexed by resolution level
(level 0 = full resolution) on both paths, each with ``resnets.{j}``, ``attentions.{j}`` and
``downsample`` / ``upsample``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..hub_mixin import HubMixin
from . import cpu_kernels
from .attention import (
    SelfAttentionBlock,
    SpatialTransformer,
    fuse_qkv_projections,
    unfuse_qkv_projections,
)
from .layers import Conv2d

# Width of the time embedding relative to block_out_channels[0] when time_embed_dim is None (CompVis, diffusers).
TIME_EMBED_MULT = 4
# Longest period of the sinusoidal timestep embedding (Vaswani et al. 2017; DDPM).
MAX_PERIOD = 10_000
# Spatial factor of every down/upsampler.
RESAMPLE_FACTOR = 2

TIME_SCALE_SHIFT_MODES = ("default", "scale_shift")


@dataclass
class LDMUNetOutput(BaseOutput):
    """Output of :class:`LDMUNet`: ``sample`` is the noise prediction ε_θ, shaped like the model's output."""

    sample: torch.Tensor


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0
) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, (B,) -> (B, dim), computed in float32.

    Frequencies ω_k = MAX_PERIOD^(−k / (dim/2 − freq_shift)), k = 0 … dim/2 − 1; the embedding is
    [sin(tω), cos(tω)], or [cos(tω), sin(tω)] when ``flip_sin_to_cos`` (CompVis' order). An odd ``dim``
    gets a trailing zero.

    Example:
        >>> timestep_embedding(torch.tensor([0, 999]), 8).shape
        torch.Size([2, 8])
    """
    half = dim // 2
    exponent = -math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))  # (dim/2,)
    args = timesteps.float()[:, None] * freqs[None, :]  # (B, dim/2)
    first, second = (torch.cos(args), torch.sin(args)) if flip_sin_to_cos else (torch.sin(args), torch.cos(args))
    emb = torch.cat([first, second], dim=-1)  # (B, 2·(dim/2))
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (B, dim)
    return emb


class TimestepEmbedding(nn.Module):
    """t -> MLP(sinusoid(t)): Linear, SiLU, Linear.

    Example:
        >>> TimestepEmbedding(32, 128, flip_sin_to_cos=True, freq_shift=0)(torch.tensor([1, 500])).shape
        torch.Size([2, 128])
    """

    def __init__(self, sinusoid_dim: int, embed_dim: int, flip_sin_to_cos: bool, freq_shift: float):
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift
        self.linear_in = nn.Linear(sinusoid_dim, embed_dim)
        self.linear_out = nn.Linear(embed_dim, embed_dim)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(timesteps, self.sinusoid_dim, self.flip_sin_to_cos, self.freq_shift)  # (B, C0)
        emb = emb.to(self.linear_in.weight.dtype)
        return self.linear_out(F.silu(self.linear_in(emb)))  # (B, E)


class ResBlock(nn.Module):
    """Residual block with time conditioning (CompVis ``ResBlock``, diffusers ``ResnetBlock2D``).

    h = Conv(SiLU(GN(x))); h = h + W·SiLU(emb) ("default") or GN(h)·(1 + s) + b with [s, b] = W·SiLU(emb)
    ("scale_shift", FiLM); h = Conv(Dropout(SiLU(GN(h)))); out = skip(x) + h. With ``resample="down"|"up"``
    both paths are average-pooled / nearest-upsampled 2× after the first activation (``resblock_updown``).

    Example:
        >>> block = ResBlock(32, 64, emb_dim=128, norm_groups=8)
        >>> block(torch.randn(2, 32, 8, 8), torch.randn(2, 128)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        time_scale_shift: str = "default",
        dropout: float = 0.0,
        resample: str | None = None,
    ):
        super().__init__()
        if time_scale_shift not in TIME_SCALE_SHIFT_MODES:
            raise ValueError(
                f"resnet_time_scale_shift must be one of {TIME_SCALE_SHIFT_MODES}, got {time_scale_shift!r}"
            )
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        self.scale_shift = time_scale_shift == "scale_shift"
        self.resample = resample
        self.in_norm = nn.GroupNorm(norm_groups, in_channels, eps=norm_eps)
        self.in_conv = Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels if self.scale_shift else out_channels)
        self.out_norm = nn.GroupNorm(norm_groups, out_channels, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.skip = Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def _resample(self, x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=RESAMPLE_FACTOR)  # (B, C, H/2, W/2)
        if self.resample == "up":
            return _upsample_nearest(x, size)  # (B, C, 2H, 2W)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        h = cpu_kernels.silu(self.in_norm(x))  # SiLU(GN(x)), (B, C_in, H, W)
        h = self._resample(h, size)
        x = self._resample(x, size)
        h = self.in_conv(h)  # (B, C_out, H', W')
        emb = self.emb_proj(F.silu(emb))[:, :, None, None]  # (B, C_out or 2·C_out, 1, 1)
        if self.scale_shift:
            scale, shift = emb.chunk(2, dim=1)
            h = torch.addcmul(shift, self.out_norm(h), 1 + scale)  # GN(h)·(1 + s) + b, (B, C_out, H', W')
        else:
            h = self.out_norm(cpu_kernels.add(h, emb))  # GN(h + W·SiLU(emb)), (B, C_out, H', W')
        h = self.out_conv(self.dropout(cpu_kernels.silu(h)))  # (B, C_out, H', W')
        if self.skip is not None:
            x = self.skip(x)  # (B, C_out, H', W')
        return cpu_kernels.add(h, x)  # skip(x) + h, (B, C_out, H', W')


def _upsample_nearest(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None:
        return F.interpolate(x, scale_factor=RESAMPLE_FACTOR, mode="nearest")
    return F.interpolate(x, size=size, mode="nearest")


class Downsample(nn.Module):
    """Strided 3×3 convolution, H×W -> H/2×W/2. ``emb`` is unused (same call as a resampling ResBlock).

    Example:
        >>> Downsample(8)(torch.randn(1, 8, 16, 16)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, kernel_size=3, stride=RESAMPLE_FACTOR, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, size=None) -> torch.Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Nearest-neighbour 2× (or to ``size``, the matching skip's size) then 3×3 convolution.

    Example:
        >>> Upsample(8)(torch.randn(1, 8, 4, 4)).shape, Upsample(8)(torch.randn(1, 8, 4, 4), size=(7, 7)).shape
        (torch.Size([1, 8, 8, 8]), torch.Size([1, 8, 7, 7]))
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, size=None) -> torch.Tensor:
        return self.conv(_upsample_nearest(x, size))  # (B, C, 2H, 2W)


class _Checkpointable(nn.Module):
    """A stage whose sub-blocks are activation-checkpointed after ``model.enable_gradient_checkpointing()``."""

    def __init__(self):
        super().__init__()
        self.gradient_checkpointing = False

    def _run(self, module: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)


class DownLevel(_Checkpointable):
    """One encoder level (built by :class:`LDMUNet`): ResBlock (+ attention) × layers_per_block, then an
    optional downsampler. Appends every output to ``skips`` for the decoder."""

    def __init__(self, resnets: list[nn.Module], attentions: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)  # empty when the level has no attention
        self.downsample = downsample

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None, skips: list) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            h = self._run(resnet, h, emb)  # (B, C_i, H_i, W_i)
            if len(self.attentions):
                h = self._run(self.attentions[j], h, context)
            skips.append(h)
        if self.downsample is not None:
            h = self._run(self.downsample, h, emb)  # (B, C_i, H_i/2, W_i/2)
            skips.append(h)
        return h


class MidBlock(_Checkpointable):
    """The middle of the UNet (built by :class:`LDMUNet`): ResBlock, attention (optional), ResBlock."""

    def __init__(self, resnet_1: nn.Module, attention: nn.Module | None, resnet_2: nn.Module):
        super().__init__()
        self.resnet_1 = resnet_1
        self.attention = attention
        self.resnet_2 = resnet_2

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        h = self._run(self.resnet_1, h, emb)  # (B, C_L, H_L, W_L)
        if self.attention is not None:
            h = self._run(self.attention, h, context)
        return self._run(self.resnet_2, h, emb)  # (B, C_L, H_L, W_L)


class UpLevel(_Checkpointable):
    """One decoder level (built by :class:`LDMUNet`): (concat a skip, ResBlock (+ attention)) ×
    (layers_per_block + 1), then an optional upsampler to the next skip's size."""

    def __init__(self, resnets: list[nn.Module], attentions: list[nn.Module], upsample: nn.Module | None):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)
        self.upsample = upsample

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None, skips: list) -> torch.Tensor:
        for j, resnet in enumerate(self.resnets):
            h = torch.cat([h, skips.pop()], dim=1)  # (B, C + C_skip, H_i, W_i)
            h = self._run(resnet, h, emb)  # (B, C_i, H_i, W_i)
            if len(self.attentions):
                h = self._run(self.attentions[j], h, context)
        if self.upsample is not None:
            h = self._run(self.upsample, h, emb, tuple(skips[-1].shape[-2:]))  # (B, C_i, H_{i-1}, W_{i-1})
        return h


def _per_level(value, num_levels: int, name: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != num_levels:
            raise ValueError(f"{name} has {len(value)} entries but block_out_channels has {num_levels} levels")
        return tuple(value)
    return (value,) * num_levels


class LDMUNet(HubMixin, ModelMixin, ConfigMixin):
    """ε_θ(z_t, t, y), the denoising UNet of Latent Diffusion Models (Rombach et al. 2022, §3.2–3.3).

    Args:
        in_channels: channels of the input: latent channels c, plus concatenated condition channels
            (6 for super-resolution and semantic maps, 7 for inpainting).
        out_channels: channels of the predicted noise ε (the latent channels c).
        sample_size: latent height/width the model was trained at (used by pipelines for defaults).
        block_out_channels: channels per resolution level (CompVis ``model_channels · channel_mult``).
        layers_per_block: ResBlocks per level on the down path (CompVis ``num_res_blocks``); the up path has one more.
        attention_levels: one bool per level, level 0 = full resolution: attention after each ResBlock there.
        mid_block_attention: attention between the two middle ResBlocks.
        num_attention_heads: heads per attention block, an int or one per level (the middle block uses the
            last level's); channels per head = channels // heads. None when ``attention_head_dim`` is given.
        attention_head_dim: channels per head (CompVis ``num_head_channels``); heads = channels // this.
            Exactly one of ``num_attention_heads`` and ``attention_head_dim`` must be set.
        transformer_depth: TransformerBlocks per SpatialTransformer, an int or one per level.
        cross_attention_dim: width d_τ of the context τ_θ(y). None: plain self-attention blocks and no context;
            an int: SpatialTransformer blocks cross-attending to ``encoder_hidden_states``.
        flip_sin_to_cos: timestep embedding order [cos, sin] (CompVis) instead of [sin, cos].
        freq_shift: shift of the sinusoid frequency denominator (diffusers' ``downscale_freq_shift``; 0 for LDM).
        time_embed_dim: width of the time embedding; None means ``4 · block_out_channels[0]``.
        resnet_time_scale_shift: ``"default"`` adds the time embedding to the features; ``"scale_shift"``
            applies it as GroupNorm scale and shift (CompVis ``use_scale_shift_norm``).
        resblock_updown: down/upsample with ResBlocks (avg-pool / nearest inside the block) instead of
            strided / nearest+conv layers (CompVis ``resblock_updown``).
        num_class_embeds: if set, an embedding table of this many classes added to the time embedding
            (CompVis ``adm`` conditioning, ``class_labels`` in forward).
        norm_num_groups: GroupNorm groups everywhere.
        norm_eps: GroupNorm epsilon of the ResBlocks and the output norm.
        attention_norm_eps: GroupNorm epsilon opening each attention block (CompVis SpatialTransformer: 1e-6,
            plain AttentionBlock: 1e-5).
        dropout: dropout inside the ResBlocks (training only).

    Example:
        >>> unet = LDMUNet(block_out_channels=(32, 64), attention_levels=(False, True), norm_num_groups=8,
        ...                num_attention_heads=2, cross_attention_dim=16, sample_size=8)
        >>> z_t, context = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16)
        >>> unet(z_t, 999, encoder_hidden_states=context).sample.shape
        torch.Size([2, 4, 8, 8])
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        sample_size: int | tuple[int, int] = 32,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (True, True, True, False),
        mid_block_attention: bool = True,
        num_attention_heads: int | tuple[int, ...] | None = 8,
        attention_head_dim: int | None = None,
        transformer_depth: int | tuple[int, ...] = 1,
        cross_attention_dim: int | None = None,
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0,
        time_embed_dim: int | None = None,
        resnet_time_scale_shift: str = "default",
        resblock_updown: bool = False,
        num_class_embeds: int | None = None,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        attention_norm_eps: float = 1e-6,
        dropout: float = 0.0,
    ):
        super().__init__()
        num_levels = len(block_out_channels)
        if num_levels < 1:
            raise ValueError("block_out_channels must list at least one level")
        if (num_attention_heads is None) == (attention_head_dim is None):
            raise ValueError(
                "exactly one of num_attention_heads (heads per block) and attention_head_dim (channels per head) "
                f"must be set, got num_attention_heads={num_attention_heads}, attention_head_dim={attention_head_dim}"
            )
        if len(attention_levels) != num_levels:
            raise ValueError(
                f"attention_levels has {len(attention_levels)} entries but block_out_channels has {num_levels} levels"
            )
        if resnet_time_scale_shift not in TIME_SCALE_SHIFT_MODES:
            raise ValueError(
                f"resnet_time_scale_shift must be one of {TIME_SCALE_SHIFT_MODES}, got {resnet_time_scale_shift!r}"
            )
        for ch in block_out_channels:
            if ch % norm_num_groups:
                raise ValueError(
                    f"norm_num_groups={norm_num_groups} does not divide block_out_channels {block_out_channels}"
                )
        heads = _per_level(num_attention_heads, num_levels, "num_attention_heads")
        depths = _per_level(transformer_depth, num_levels, "transformer_depth")
        emb_dim = time_embed_dim or TIME_EMBED_MULT * block_out_channels[0]

        def res_block(cin: int, cout: int, resample: str | None = None) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, norm_num_groups, norm_eps, resnet_time_scale_shift, dropout, resample)

        def attention_block(channels: int, level: int) -> nn.Module:
            if attention_head_dim is not None:
                n_heads, head_dim = channels // attention_head_dim, attention_head_dim
            else:
                n_heads = heads[level]
                head_dim = channels // n_heads if n_heads else 0
            if n_heads < 1 or head_dim < 1:
                raise ValueError(
                    f"level {level} ({channels} channels) gets {n_heads} heads of {head_dim} channels: check "
                    "num_attention_heads / attention_head_dim"
                )
            if cross_attention_dim is None:
                return SelfAttentionBlock(channels, n_heads, head_dim, norm_num_groups, attention_norm_eps)
            return SpatialTransformer(
                channels, n_heads, head_dim, cross_attention_dim, depths[level], norm_num_groups, attention_norm_eps
            )

        def resampler(channels: int, direction: str) -> nn.Module:
            if resblock_updown:
                return res_block(channels, channels, direction)
            return Downsample(channels) if direction == "down" else Upsample(channels)

        ch = block_out_channels[0]
        self.conv_in = Conv2d(in_channels, ch, kernel_size=3, padding=1)
        self.time_embed = TimestepEmbedding(ch, emb_dim, flip_sin_to_cos, freq_shift)
        self.class_embed = nn.Embedding(num_class_embeds, emb_dim) if num_class_embeds is not None else None

        skip_channels = [ch]  # channels of every tensor the down path hands to the up path
        down_levels = []
        for level, level_ch in enumerate(block_out_channels):
            resnets, attentions = [], []
            for _ in range(layers_per_block):
                resnets.append(res_block(ch, level_ch))
                ch = level_ch
                if attention_levels[level]:
                    attentions.append(attention_block(ch, level))
                skip_channels.append(ch)
            downsample = None
            if level < num_levels - 1:
                downsample = resampler(ch, "down")
                skip_channels.append(ch)
            down_levels.append(DownLevel(resnets, attentions, downsample))
        self.down_levels = nn.ModuleList(down_levels)

        last = num_levels - 1
        self.mid = MidBlock(
            res_block(ch, ch), attention_block(ch, last) if mid_block_attention else None, res_block(ch, ch)
        )

        up_levels: list[nn.Module] = [None] * num_levels
        for level in reversed(range(num_levels)):
            level_ch = block_out_channels[level]
            resnets, attentions = [], []
            for _ in range(layers_per_block + 1):
                resnets.append(res_block(ch + skip_channels.pop(), level_ch))
                ch = level_ch
                if attention_levels[level]:
                    attentions.append(attention_block(ch, level))
            upsample = resampler(ch, "up") if level > 0 else None
            up_levels[level] = UpLevel(resnets, attentions, upsample)
        self.up_levels = nn.ModuleList(up_levels)

        self.norm_out = nn.GroupNorm(norm_num_groups, ch, eps=norm_eps)
        self.conv_out = Conv2d(ch, out_channels, kernel_size=3, padding=1)

    def fuse_qkv_projections(self) -> None:
        """One GEMM for q/k/v of every self-attention and for k/v of every cross-attention (same outputs, same
        state-dict keys; see :meth:`ldm_hub.models.attention.Attention.fuse_projections`)."""
        fuse_qkv_projections(self)

    def unfuse_qkv_projections(self) -> None:
        """Back to separate q/k/v projections."""
        unfuse_qkv_projections(self)

    def _check_inputs(
        self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor | None, class_labels: torch.Tensor | None
    ) -> None:
        cfg = self.config
        if sample.ndim != 4 or sample.shape[1] != cfg.in_channels:
            raise ValueError(
                f"sample must be (B, in_channels={cfg.in_channels}, H, W) (z_t with any concatenated condition), "
                f"got shape {tuple(sample.shape)}"
            )
        if cfg.cross_attention_dim is None and encoder_hidden_states is not None:
            raise ValueError(
                "encoder_hidden_states was given but this LDMUNet has no cross-attention (cross_attention_dim=None)"
            )
        if cfg.cross_attention_dim is not None:
            if encoder_hidden_states is None:
                raise ValueError(
                    f"encoder_hidden_states (B, L, {cfg.cross_attention_dim}) is required: this LDMUNet "
                    "cross-attends to a context τ_θ(y)"
                )
            if (
                encoder_hidden_states.ndim != 3
                or encoder_hidden_states.shape[-1] != cfg.cross_attention_dim
                or encoder_hidden_states.shape[0] != sample.shape[0]
            ):
                raise ValueError(
                    f"encoder_hidden_states must be (B={sample.shape[0]}, L, cross_attention_dim="
                    f"{cfg.cross_attention_dim}), got shape {tuple(encoder_hidden_states.shape)}"
                )
        if cfg.num_class_embeds is None and class_labels is not None:
            raise ValueError("class_labels was given but this LDMUNet has no class embedding (num_class_embeds=None)")
        if cfg.num_class_embeds is not None and class_labels is None:
            raise ValueError(f"class_labels (B,) is required: this LDMUNet embeds {cfg.num_class_embeds} classes")

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> LDMUNetOutput | tuple[torch.Tensor]:
        """Predict the noise in ``sample``: ε_θ(z_t, t, τ_θ(y)).

        ========================  ==========  =====================================================
        argument / variable       paper       meaning
        ========================  ==========  =====================================================
        ``sample``                z_t         noisy latent (B, in_channels, h, w); concat conditions
                                              (low-res image, mask, ...) are already stacked on it
        ``timestep``              t           diffusion step: a number, a 0-d tensor or (B,)
        ``encoder_hidden_states`` τ_θ(y)      context sequence (B, L, d_τ) for cross-attention
        ``class_labels``          y           class indices (B,) added to the time embedding (adm)
        ``emb``                   —           time (+ class) embedding fed to every ResBlock
        ``skips``                 —           down-path features concatenated on the up path
        output ``sample``         ε_θ         predicted noise (B, out_channels, h, w)
        ========================  ==========  =====================================================

        The model is trained with L_LDM = E‖ε − ε_θ(z_t, t)‖² (eq. 2) or, conditioned,
        E‖ε − ε_θ(z_t, t, τ_θ(y))‖² (eq. 3); cross-attention is softmax(QKᵀ/√d)·V with Q from the UNet
        features and K, V from τ_θ(y) (§3.3).
        """
        self._check_inputs(sample, encoder_hidden_states, class_labels)
        batch = sample.shape[0]
        if not torch.is_tensor(timestep):
            timestep = torch.tensor(
                timestep, dtype=torch.int64 if isinstance(timestep, int) else torch.float32, device=sample.device
            )
        if timestep.numel() not in (1, batch):
            raise ValueError(
                f"timestep must be a scalar or have one entry per sample ({batch}), got {tuple(timestep.shape)}"
            )
        t = timestep.to(sample.device).reshape(-1).expand(batch)  # (B,)

        emb = self.time_embed(t)  # (B, E)
        if self.class_embed is not None:
            emb = emb + self.class_embed(class_labels).to(emb.dtype)  # (B, E)
        context = encoder_hidden_states  # (B, L, d_τ) or None

        h = self.conv_in(sample)  # (B, C_0, h, w)
        skips = [h]
        for level in self.down_levels:
            h = level(h, emb, context, skips)  # (B, C_i, h/2^i, w/2^i)
        h = self.mid(h, emb, context)  # (B, C_L, h/2^L, w/2^L)
        for i in reversed(range(len(self.up_levels))):
            h = self.up_levels[i](h, emb, context, skips)  # (B, C_i, h/2^(i-1), w/2^(i-1)) after upsampling
        eps = self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, h, w)

        if not return_dict:
            return (eps,)
        return LDMUNetOutput(sample=eps)
