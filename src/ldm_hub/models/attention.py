"""Attention for ε_θ: one multi-head attention on ``F.scaled_dot_product_attention`` and the two blocks built on it.

The paper's conditioning mechanism (§3.3) is cross-attention, softmax(QKᵀ/√d)·V with
Q = W_Q·φ_i(z_t) from the UNet features and K = W_K·τ_θ(y), V = W_V·τ_θ(y) from the condition encoder.
:class:`Attention` computes exactly that; with no context it is self-attention (K, V from the features too).

* :class:`SpatialTransformer` — CompVis' block for cross-attention UNets: GroupNorm, 1×1 conv in,
  ``depth`` × :class:`TransformerBlock` (self-attn, cross-attn, GEGLU feed-forward, pre-LayerNorm, residuals),
  1×1 conv out, residual.
* :class:`SelfAttentionBlock` — the plain block of unconditional / concat-conditioned UNets (CompVis
  ``AttentionBlock``): GroupNorm, q/k/v, out projection, residual.

Both take ``(x, context)`` so a UNet level can hold either without branching on the type.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels
from .layers import Conv2d

# CompVis FeedForward / diffusers FeedForward: the GEGLU hidden width is this multiple of the model width.
FEED_FORWARD_MULT = 4


class Attention(nn.Module):
    """Multi-head attention softmax(QKᵀ/√d)·V (paper §3.3); self-attention when ``context`` is None.

    Heads are handled by reshaping ``(B, N, heads·d)`` to ``(B, heads, N, d)``; the product itself is
    ``F.scaled_dot_product_attention`` (scale 1/√d). :meth:`fuse_projections` computes the projections of
    one input with a single matrix (same state dict, one GEMM).

    Example:
        >>> attn = Attention(query_dim=64, heads=4, head_dim=16, context_dim=32)
        >>> attn(torch.randn(2, 10, 64), torch.randn(2, 7, 32)).shape
        torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        qkv_bias: bool = False,
    ):
        super().__init__()
        if heads < 1 or head_dim < 1:
            raise ValueError(f"Attention needs heads >= 1 and head_dim >= 1, got heads={heads}, head_dim={head_dim}")
        inner_dim = heads * head_dim
        cross = context_dim is not None
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.head_dim = head_dim
        self.is_cross_attention = cross
        self.q_proj = nn.Linear(query_dim, inner_dim, bias=qkv_bias)  # W_Q
        self.k_proj = nn.Linear(context_dim, inner_dim, bias=qkv_bias)  # W_K
        self.v_proj = nn.Linear(context_dim, inner_dim, bias=qkv_bias)  # W_V
        self.out_proj = nn.Linear(inner_dim, query_dim)
        # Set by fuse_projections(): [W_Q; W_K; W_V] (self-attention) or [W_K; W_V] (cross-attention) as one
        # matrix. Non-persistent buffers: the state dict keeps the separate q/k/v keys.
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)

    @property
    def is_fused(self) -> bool:
        return self.fused_weight is not None

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """Concatenate the projections that read the same input into one matrix: one GEMM instead of three
        (self-attention: W_Q, W_K, W_V) or two (cross-attention: W_K, W_V on τ_θ(y)). The separate weights stay
        the parameters (and state-dict keys); the fused copy is a snapshot, so call this again (or
        :meth:`unfuse_projections`) after changing them."""
        projections = (
            (self.k_proj, self.v_proj) if self.is_cross_attention else (self.q_proj, self.k_proj, self.v_proj)
        )
        self.fused_weight = torch.cat([p.weight for p in projections]).detach().clone()  # (n·inner, in)
        biases = [p.bias for p in projections]
        self.fused_bias = None if biases[0] is None else torch.cat(biases).detach().clone()  # (n·inner,)

    def unfuse_projections(self) -> None:
        """Drop the fused matrix: back to separate q/k/v projections."""
        self.fused_weight = None
        self.fused_bias = None

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, N, d)

    def _split_fused(self, projected: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        batch, length, _ = projected.shape
        projected = projected.view(batch, length, parts, self.heads, self.head_dim)  # (B, N, parts, heads, d)
        return projected.permute(2, 0, 3, 1, 4).unbind(0)  # parts × (B, heads, N, d)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (B, N, query_dim) features φ(z_t); ``context``: (B, M, context_dim) τ_θ(y) or None."""
        context = x if context is None else context
        if self.fused_weight is None:
            q = self._split_heads(self.q_proj(x))  # (B, heads, N, d)
            k = self._split_heads(self.k_proj(context))  # (B, heads, M, d)
            v = self._split_heads(self.v_proj(context))  # (B, heads, M, d)
        elif self.is_cross_attention:
            q = self._split_heads(self.q_proj(x))  # (B, heads, N, d)
            k, v = self._split_fused(F.linear(context, self.fused_weight, self.fused_bias), 2)  # 2 × (B, heads, M, d)
        else:
            q, k, v = self._split_fused(F.linear(x, self.fused_weight, self.fused_bias), 3)  # 3 × (B, heads, N, d)
        out = cpu_kernels.scaled_dot_product_attention(q, k, v)  # softmax(QKᵀ/√d)·V, (B, heads, N, d)
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)  # (B, N, heads·d)
        return self.out_proj(out)  # (B, N, query_dim)


# The old private name of the attention product (the small-head CPU padding now lives in cpu_kernels).
_sdpa = cpu_kernels.scaled_dot_product_attention


def fuse_qkv_projections(model: nn.Module) -> int:
    """Call :meth:`Attention.fuse_projections` on every attention inside ``model``; returns how many."""
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    for attention in attentions:
        attention.fuse_projections()
    return len(attentions)


def unfuse_qkv_projections(model: nn.Module) -> None:
    """Undo :func:`fuse_qkv_projections`."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.unfuse_projections()


class GEGLUFeedForward(nn.Module):
    """Feed-forward with a GELU-gated linear unit (Shazeer 2020): W_out · (a ⊙ GELU(g)), [a, g] = W_in·x.

    Example:
        >>> GEGLUFeedForward(16)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, mult: int = FEED_FORWARD_MULT):
        super().__init__()
        hidden = dim * mult
        self.proj_in = nn.Linear(dim, 2 * hidden)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj_in(x).chunk(2, dim=-1)  # 2 × (B, N, hidden)
        return self.proj_out(cpu_kernels.mul(F.gelu(gate), value))  # (B, N, dim)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x += SelfAttn(LN(x)); x += CrossAttn(LN(x), context); x += FF(LN(x)).

    Example:
        >>> block = TransformerBlock(dim=16, heads=2, head_dim=8, context_dim=12)
        >>> block(torch.randn(2, 9, 16), torch.randn(2, 4, 12)).shape
        torch.Size([2, 9, 16])
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, head_dim)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, heads, head_dim, context_dim=context_dim)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = GEGLUFeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = cpu_kernels.add(self.self_attn(self.self_attn_norm(x)), x)  # x + SelfAttn(LN(x)), (B, HW, dim)
        x = cpu_kernels.add(self.cross_attn(self.cross_attn_norm(x), context), x)  # + CrossAttn, (B, HW, dim)
        return cpu_kernels.add(self.ff(self.ff_norm(x)), x)  # x + FF(LN(x)), (B, HW, dim)


class SpatialTransformer(nn.Module):
    """CompVis' SpatialTransformer: cross-attention from image features to a context sequence τ_θ(y).

    GroupNorm → 1×1 conv to ``heads·head_dim`` → ``depth`` × :class:`TransformerBlock` over the H·W tokens →
    1×1 conv back to ``channels`` → + input.

    Example:
        >>> block = SpatialTransformer(channels=64, heads=4, head_dim=16, context_dim=32, norm_groups=8)
        >>> block(torch.randn(2, 64, 8, 8), torch.randn(2, 7, 32)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        context_dim: int,
        depth: int = 1,
        norm_groups: int = 32,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        inner_dim = heads * head_dim
        self.norm = nn.GroupNorm(norm_groups, channels, eps=norm_eps)
        self.proj_in = Conv2d(channels, inner_dim, kernel_size=1)
        self.blocks = nn.ModuleList(TransformerBlock(inner_dim, heads, head_dim, context_dim) for _ in range(depth))
        self.proj_out = Conv2d(inner_dim, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        batch, _, height, width = x.shape
        h = self.proj_in(self.norm(x))  # (B, inner, H, W)
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, inner)  # (B, HW, inner)
        for block in self.blocks:
            h = block(h, context)  # (B, HW, inner)
        h = h.reshape(batch, height, width, inner).permute(0, 3, 1, 2)  # (B, inner, H, W)
        return cpu_kernels.add(self.proj_out(h), x)  # x + proj_out(h), (B, C, H, W)


class SelfAttentionBlock(nn.Module):
    """Plain spatial self-attention (CompVis ``AttentionBlock``, diffusers' attention in ``AttnDownBlock2D``).

    GroupNorm → q, k, v (with bias) over the H·W positions → out projection → + input. ``context`` is
    accepted for a uniform call signature and must be None.

    Example:
        >>> block = SelfAttentionBlock(channels=64, heads=2, head_dim=32, norm_groups=8)
        >>> block(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, channels: int, heads: int, head_dim: int, norm_groups: int = 32, norm_eps: float = 1e-5):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=norm_eps)
        self.attn = Attention(channels, heads, head_dim, qkv_bias=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x).reshape(batch, channels, height * width).transpose(1, 2)  # (B, HW, C)
        h = self.attn(h)  # (B, HW, C)
        return x + h.transpose(1, 2).reshape(batch, channels, height, width)  # (B, C, H, W)
