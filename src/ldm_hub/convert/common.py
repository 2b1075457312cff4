"""The one loop every converter runs: rename keys through a table, check every key and every shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


class ConversionError(ValueError):
    """A foreign state dict does not fit the target model; the message names the key(s)."""


def convert_state_dict(
    source: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str],
    target: Mapping[str, torch.Tensor] | torch.nn.Module,
    *,
    source_name: str = "checkpoint",
    transforms: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ignore: Callable[[str], bool] | None = None,
) -> dict[str, torch.Tensor]:
    """Rename ``source`` keys to the target's names through ``key_map`` (source key -> target key).

    ``transforms`` maps a *target* key to a function applied to its tensor (e.g. squeezing a 1x1 conv
    to a linear weight). ``ignore(source_key)`` returning True drops a key on purpose. Every source key
    must be mapped or ignored, every target key must be produced, and every shape must match; otherwise
    a :class:`ConversionError` names the offending key(s) and shapes.
    """
    if isinstance(target, torch.nn.Module):
        target = target.state_dict()
    transforms = transforms or {}
    out: dict[str, torch.Tensor] = {}
    unknown = [k for k in source if k not in key_map and not (ignore and ignore(k))]
    if unknown:
        raise ConversionError(f"{source_name}: {len(unknown)} unexpected key(s) with no mapping, first: {unknown[:5]}")
    for src_key, dst_key in key_map.items():
        if src_key not in source:
            raise ConversionError(f"{source_name}: missing key {src_key!r} (needed for {dst_key!r})")
        if dst_key not in target:
            raise ConversionError(f"{source_name}: key {src_key!r} maps to {dst_key!r}, which the model does not have")
        tensor = source[src_key]
        if dst_key in transforms:
            tensor = transforms[dst_key](tensor)
        if tuple(tensor.shape) != tuple(target[dst_key].shape):
            raise ConversionError(
                f"{source_name}: shape mismatch for {src_key!r} -> {dst_key!r}: "
                f"checkpoint has {tuple(tensor.shape)}, model expects {tuple(target[dst_key].shape)}"
            )
        out[dst_key] = tensor
    missing = [k for k in target if k not in out]
    if missing:
        raise ConversionError(f"{source_name}: model keys not provided by the checkpoint, first: {missing[:5]}")
    return out
