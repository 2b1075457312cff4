"""Layers shared by every model: a Conv2d with the packed-weight CPU inference path of :mod:`.cpu_kernels`.

:class:`Conv2d` behaves exactly like ``torch.nn.Conv2d`` (same parameters, same state dict); for fp32 CPU
inference it runs :func:`.cpu_kernels.packed_conv2d`, which reorders the weight for oneDNN once instead of on every
call. ``LDM_HUB_CPU_PREPACK=0`` or :func:`set_cpu_prepacking` turns that off.
"""

from __future__ import annotations

import torch
from torch import nn

from . import cpu_kernels
from .cpu_kernels import set_cpu_prepacking

__all__ = ["Conv2d", "set_cpu_prepacking"]


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` that packs its weight once for oneDNN when running fp32 inference on a CPU.

    Example:
        >>> conv = Conv2d(8, 16, kernel_size=3, padding=1).eval()
        >>> x = torch.randn(2, 8, 5, 5)
        >>> with torch.no_grad():
        ...     torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = cpu_kernels.packed_conv2d(self, x)  # None unless fp32 CPU inference with a packable weight
        return super().forward(x) if out is None else out

    def __getstate__(self):
        return cpu_kernels.without_packed_weight(self.__dict__)

    def _apply(self, fn, *args, **kwargs):
        cpu_kernels.drop_packed_weight(self)  # .to() / .half() / .cuda(): the packed copy is stale
        return super()._apply(fn, *args, **kwargs)
