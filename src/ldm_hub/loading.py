"""Safe, loud file I/O for model folders: JSON configs, safetensors / weights-only .bin, atomic writes.

Every error names the file (and, for weights, the keys and shapes) so a broken download or a config that
does not match its weights is diagnosed at a glance. Nothing here ever unpickles arbitrary objects:
safetensors first, ``torch.load(..., weights_only=True)`` for legacy ``.bin`` files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch


class ModelFileError(OSError):
    """A model file is missing, unreadable, corrupt, or disagrees with its config."""


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON object from ``path``; a missing or malformed file raises :class:`ModelFileError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"corrupt JSON in {path}: {e}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data


def find_weights_file(folder: str | os.PathLike, stems: tuple[str, ...], variant: str | None = None) -> Path:
    """The weights file in ``folder``: ``<stem>[.<variant>].safetensors`` preferred, then ``.bin``."""
    folder = Path(folder)
    tried = []
    for stem in stems:
        name = f"{stem}.{variant}" if variant else stem
        for ext in (".safetensors", ".bin"):
            candidate = folder / f"{name}{ext}"
            tried.append(candidate.name)
            if candidate.is_file():
                return candidate
    raise ModelFileError(f"missing weights in {folder}: none of {tried} exists")


def load_safetensors_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file; a truncated or corrupt file raises :class:`ModelFileError` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"corrupt safetensors file {path}: {e}") from None


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load tensors from a .safetensors file, or a .bin/.ckpt/.pt with ``weights_only=True`` (never a pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"missing file: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors_file(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad pickle
        raise ModelFileError(
            f"could not load {path} with torch.load(weights_only=True): {type(e).__name__}: {e}"
        ) from None
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path} does not contain a state dict (found {type(obj).__name__})")
    return dict(obj)


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`ModelFileError` naming keys and shapes if ``state_dict`` does not fit ``model`` exactly."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:5]))
    if missing:
        problems.append(f"{len(missing)} key(s) missing from the weights: {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) in the weights the config has no place for: {unexpected[:5]}")
    if problems:
        raise ModelFileError(f"config and weights disagree in {source}: " + " | ".join(problems))


def load_model_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state_dict`` into ``model`` after :func:`check_state_dict`."""
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary sibling to write into, then move it into place.

    A new ``target`` appears in one rename. An existing ``target`` gets each written file by an atomic
    ``os.replace`` (files it has that were not rewritten are kept), so no reader ever sees a half-written
    file. If the body raises, the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
            return
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                dest = target / path.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
