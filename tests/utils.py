"""Shared test helpers: every parameter random, so no wrong mapping can hide behind a zero or a one."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter of ``module`` with seeded random values (in place).

    Matrices and convolution kernels get N(0, 1/fan_in) so activations stay O(1) through deep nets;
    vectors (biases, norm weights, embeddings' rows) get values around 0 or 1 with a random spread, so
    zero-initialised output layers and identity-initialised norms are random too.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        if p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            if "emb" in name and p.ndim == 2:
                fan_in = 1
            new = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
        elif name.endswith("weight"):  # norm scales
            new = 1.0 + 0.2 * torch.randn(p.shape, generator=gen)
        else:  # biases, norm shifts, scalars
            new = 0.1 * torch.randn(p.shape, generator=gen)
        p.copy_(new.to(p.dtype))
    return module


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()
