"""The models' inference speed tricks, all in this one module: the forwards make one call each in here and
otherwise read like the paper.

Every trick gives the plain computation's result (up to float rounding) and is skipped under autograd:

* **Packed convolution** (:func:`packed_conv2d`, used by :class:`~ldm_hub.models.layers.Conv2d`). On a CPU,
  oneDNN spends much of a convolution call reordering the weight into its blocked layout (for a 1280→1280 3×3
  convolution on an 8×8 map, over half the call). For fp32 CPU inference the weight is reordered once and kept,
  the way inference engines and torch.compile's freezing do; the cache is dropped whenever the weight changes
  or moves. Left to torch's own path, which is faster there: 1×1 convolutions (a GEMM), a single small input
  and convolutions into or out of fewer than 16 channels; also autograd and torch.compile. Set
  ``LDM_HUB_CPU_PREPACK=0`` (or call :func:`set_cpu_prepacking`) to turn it off.
* **Small-head attention padding** (:func:`scaled_dot_product_attention`). torch's CPU flash-attention kernel is
  much slower for head dims below its vector width than at 16; q, k and v are zero-padded to 16 channels, which
  leaves q·kᵀ unchanged and adds zero output channels, dropped again. CPU, no autograd, not under torch.compile,
  long key sequences only.
* **In-place updates under no_grad** (:func:`add`, :func:`mul`, :func:`silu`; on any device). A residual sum, a
  gate or an activation is written into a tensor the forward has just made instead of a new buffer. With
  autograd on they are the out-of-place ``x + y``, ``x * y``, ``F.silu(x)``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------- packed convolution
_PREPACK = {"enabled": os.environ.get("LDM_HUB_CPU_PREPACK", "1") != "0"}
# torch itself runs a single small input (batch 1, at most this many elements) through its native im2col + GEMM
# convolution instead of oneDNN, which is faster there; the packed path leaves those to torch too.
NATIVE_MAX_NUMEL = 20480
# A convolution into or out of a handful of channels (a UNet's conv_in / conv_out on 4 latent channels) has a tiny
# weight to reorder; torch's own path was faster there (2 x 4 -> 32 channels, 16 x 16: 54 vs 70 us).
PACK_MIN_CHANNELS = 16
# Where a convolution keeps its packed weight: an entry of its __dict__, never a parameter, buffer or state-dict key.
PACKED_ATTR = "_packed"


def set_cpu_prepacking(enabled: bool) -> None:
    """Turn the packed-weight CPU convolution path on or off for every :class:`~ldm_hub.models.layers.Conv2d`."""
    _PREPACK["enabled"] = bool(enabled)


@functools.cache
def prepack_available() -> bool:
    """Whether this torch build has the oneDNN ops the packed path calls."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )


def _packable(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    return (
        _PREPACK["enabled"]
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and conv.padding_mode == "zeros"
        and conv.kernel_size != (1, 1)
        and min(conv.in_channels, conv.out_channels) >= PACK_MIN_CHANNELS
        and (x.shape[0] > 1 or x.numel() > NATIVE_MAX_NUMEL)
        and not isinstance(conv.padding, str)
        and not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
        and not torch.compiler.is_compiling()
    )


def _packed_weight(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    key = (conv.weight.data_ptr(), conv.weight._version, tuple(x.shape))
    cache = conv.__dict__.get(PACKED_ATTR)
    if cache is None or cache[0] != key:
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
            conv.weight.detach().to_mkldnn(),
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
            list(x.shape),
        )
        cache = (key, packed)
        conv.__dict__[PACKED_ATTR] = cache
    return cache[1]


def packed_conv2d(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor | None:
    """``conv(x)`` through a weight packed once for oneDNN, or None where the packed path does not apply (the
    caller then runs torch's own convolution)."""
    if not (_packable(conv, x) and prepack_available()):
        return None
    try:
        out = torch.ops.mkldnn._convolution_pointwise(
            x,
            _packed_weight(conv, x),
            conv.bias,  # no autograd here (see _packable)
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
            "none",
            [],
            "",
        )
    except RuntimeError:  # an oneDNN build without this path: fall back for good
        set_cpu_prepacking(False)
        return None
    return out.contiguous()


def drop_packed_weight(conv: nn.Module) -> None:
    """Forget ``conv``'s packed weight (after ``.to()`` / ``.half()`` / ``.cuda()`` it is stale)."""
    conv.__dict__.pop(PACKED_ATTR, None)


def without_packed_weight(state: dict[str, Any]) -> dict[str, Any]:
    """A module's ``__dict__`` for copying or pickling: the packed weight is an opaque oneDNN tensor, rebuilt on
    demand."""
    state = state.copy()
    state.pop(PACKED_ATTR, None)
    return state


# ------------------------------------------------------------------------------------ small-head attention
# On this machine's AVX-512 build, 256 tokens × 16 heads: d=4 1.85 ms, d=16 1.32 ms; 1024 tokens, d=8: 33.9 ms vs
# 23.5 ms padded.
CPU_MIN_HEAD_DIM = 16
# ... for long key sequences only: with few keys (a 77-token text context) the padded kernel gained at one thread
# and lost at two, so short contexts keep the unpadded call.
CPU_PAD_MIN_KEYS = 128


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d)·V via ``F.scaled_dot_product_attention``, (B, heads, N, d) each; on the CPU without
    autograd, heads narrower than 16 attending over many keys are zero-padded to 16 for the faster kernel."""
    head_dim = q.shape[-1]
    if (
        head_dim < CPU_MIN_HEAD_DIM
        and k.shape[-2] >= CPU_PAD_MIN_KEYS
        and q.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    ):
        pad = (0, CPU_MIN_HEAD_DIM - head_dim)
        out = F.scaled_dot_product_attention(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), scale=head_dim**-0.5)
        return out[..., :head_dim]  # (B, heads, N, d)
    return F.scaled_dot_product_attention(q, k, v)


# ---------------------------------------------------------------------------------- in place under no_grad
# ``fresh`` below is a tensor the calling forward has just computed and nobody else holds (a layer's output, never
# an input of the forward): under no_grad it is overwritten; with autograd on, nothing is.


def add(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh + other`` (a residual sum), written into ``fresh`` under no_grad."""
    return fresh + other if torch.is_grad_enabled() else fresh.add_(other)


def mul(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh * other`` (a gate), written into ``fresh`` under no_grad."""
    return fresh * other if torch.is_grad_enabled() else fresh.mul_(other)


def silu(fresh: torch.Tensor) -> torch.Tensor:
    """SiLU(``fresh``), written into ``fresh`` under no_grad."""
    return F.silu(fresh, inplace=not torch.is_grad_enabled())
