"""Reading an original checkpoint file safely: a Lightning ``.ckpt`` (a pickle) or a ``.safetensors``.

A ``.ckpt`` is read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers; a
file that needs more (Lightning callbacks, OmegaConf objects) is refused with an explanation unless
``allow_unsafe_pickle=True``. Imports nothing of ldm_hub but :mod:`ldm_hub.loading`.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from ..loading import ModelFileError, load_safetensors_file


def load_checkpoint(path: str | os.PathLike, *, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of an original checkpoint: a Lightning ``.ckpt`` (its ``state_dict``) or a ``.safetensors``.

    ``.ckpt`` files are unpickled with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
    containers. A file that needs more is refused, saying why, unless ``allow_unsafe_pickle=True`` (only for
    files you trust: unpickling can run arbitrary code).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"missing checkpoint: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors_file(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not allow_unsafe_pickle:
            reason = str(e).strip().splitlines()
            reason = next((line for line in reason if "Unsupported" in line or "global" in line), reason[0])
            raise ModelFileError(
                f"refusing to load {path}: torch.load(weights_only=True) failed because the file holds Python "
                f"objects other than tensors ({reason.strip()}). A .ckpt is a pickle, and unpickling it can run "
                "arbitrary code. If you trust this file, allow it explicitly with allow_unsafe_pickle=True "
                "(CLI: --allow-unsafe-pickle), or convert it to .safetensors once and use that."
            ) from None
        obj = _unsafe_load(path)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a broken file
        raise ModelFileError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path} holds no state dict (found {type(obj).__name__})")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelFileError(f"{path}: state dict entries that are not tensors: {not_tensors[:5]}")
    return dict(obj)


def _unsafe_load(path: Path):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from None
