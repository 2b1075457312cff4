"""Layers shared by every model: a Conv2d with a fast CPU inference path.

On a CPU, oneDNN convolutions spend much of their time reordering the weight into its blocked layout on
every call (for a 1280→1280 3×3 convolution on an 8×8 map that is over half the call). :class:`Conv2d` does
that reorder once and keeps the packed weight, the way inference engines and torch.compile's freezing do,
and otherwise behaves exactly like ``torch.nn.Conv2d`` (same parameters, same state dict). The packed path
runs only for fp32 CPU inference (no autograd, not under torch.compile) of convolutions wider than 1×1 (a
1×1 convolution is a plain GEMM, faster on torch's own path, as are a single small input and a convolution into
or out of fewer than 16 channels); the cache is dropped whenever the weight changes
or moves. Set ``LDM_HUB_CPU_PREPACK=0`` to turn it off.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn

_PREPACK = {"enabled": os.environ.get("LDM_HUB_CPU_PREPACK", "1") != "0"}
# torch itself runs a single small input (batch 1, at most this many elements) through its native im2col + GEMM
# convolution instead of oneDNN, which is faster there; the packed path leaves those to torch too.
_NATIVE_MAX_NUMEL = 20480
# A convolution into or out of a handful of channels (a UNet's conv_in / conv_out on 4 latent channels) has a tiny
# weight to reorder; torch's own path was faster there (2 x 4 -> 32 channels, 16 x 16: 54 vs 70 us).
_PACK_MIN_CHANNELS = 16


def set_cpu_prepacking(enabled: bool) -> None:
    """Turn the packed-weight CPU convolution path on or off for every :class:`Conv2d`."""
    _PREPACK["enabled"] = bool(enabled)


@functools.cache
def _prepack_available() -> bool:
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
    )


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` that packs its weight once for oneDNN when running fp32 inference on a CPU.

    Example:
        >>> conv = Conv2d(8, 16, kernel_size=3, padding=1).eval()
        >>> x = torch.randn(2, 8, 5, 5)
        >>> with torch.no_grad():
        ...     torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5)
        True
    """

    def _use_packed(self, x: torch.Tensor) -> bool:
        return (
            _PREPACK["enabled"]
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and self.padding_mode == "zeros"
            and self.kernel_size != (1, 1)
            and min(self.in_channels, self.out_channels) >= _PACK_MIN_CHANNELS
            and (x.shape[0] > 1 or x.numel() > _NATIVE_MAX_NUMEL)
            and not isinstance(self.padding, str)
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and not torch.compiler.is_compiling()
        )

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, tuple(x.shape))
        cache = self.__dict__.get("_packed")
        if cache is None or cache[0] != key:
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.detach().to_mkldnn(),
                list(self.padding),
                list(self.stride),
                list(self.dilation),
                self.groups,
                list(x.shape),
            )
            cache = (key, packed)
            self.__dict__["_packed"] = cache
        return cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_packed(x) and _prepack_available():
            try:
                out = torch.ops.mkldnn._convolution_pointwise(
                    x,
                    self._packed_weight(x),
                    self.bias,  # no autograd here (see _use_packed)
                    list(self.padding),
                    list(self.stride),
                    list(self.dilation),
                    self.groups,
                    "none",
                    [],
                    "",
                )
            except RuntimeError:  # an oneDNN build without this path: fall back for good
                set_cpu_prepacking(False)
            else:
                return out.contiguous()
        return super().forward(x)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_packed", None)  # an opaque oneDNN tensor: never copied or pickled, rebuilt on demand
        return state

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_packed", None)  # .to() / .half() / .cuda(): the packed copy is stale
        return super()._apply(fn, *args, **kwargs)
