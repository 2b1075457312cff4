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
import time
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


class OutputExistsError(FileExistsError, ValueError):
    """The output folder already holds something that a write would replace (pass ``--overwrite``)."""


class OutputWriteError(ModelFileError):
    """Writing an output failed (disk full, permission denied, a path under a regular file); the previous files
    are intact and no temporary files are left."""


def check_output_folder(path: str | os.PathLike, *, overwrite: bool = False, flag: str = "--output") -> Path:
    """Refuse a ``path`` that is a file, lies under a regular file, or is a non-empty folder (unless
    ``overwrite``); :class:`OutputExistsError` / :class:`OutputWriteError` name ``flag`` and the path."""
    path = Path(path)
    _check_parents(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{flag} {path}: exists and is not a folder")
    if path.is_dir() and not overwrite and any(path.iterdir()):
        raise OutputExistsError(
            f"{flag} {path} is not empty; pass --overwrite to replace what it holds, or choose another folder"
        )
    return path


def _check_parents(path: Path) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputWriteError(f"cannot write {path}: {parent} is a file, not a folder")
            return


# A write in progress holds an exclusive lock on this file inside its temporary folder; the lock dies with the
# writer (even SIGKILL), so a temporary sibling whose lock can be taken is a leftover of a killed save.
WRITER_LOCK = ".ldm_hub-writer.lock"
STALE_AFTER_SECONDS = 3600.0


def _lock(folder: Path):
    """Take the writer lock of ``folder``; the lock file appears under its name only once it is locked."""
    handle = open(folder / f"{WRITER_LOCK}.new", "w")  # noqa: SIM115 - held for the whole write
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(folder / f"{WRITER_LOCK}.new", folder / WRITER_LOCK)
    return handle


def _writer_exited(folder: Path) -> bool | None:
    """True if the lock of ``folder`` can be taken (its writer is gone), False if held, None if unknown."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        with open(folder / WRITER_LOCK, "r+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(handle, fcntl.LOCK_UN)
            return True
    except OSError:
        return None  # no lock file: a folder written by an older ldm_hub, or one about to be published


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.tmp-*`` siblings of ``target`` left by killed saves: those whose writer has exited,
    and those of an unknown writer older than an hour. One in use is never touched. Returns what was removed."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for candidate in target.parent.glob(f".{target.name}.tmp-*"):
        if not candidate.is_dir() or candidate.is_symlink():
            continue
        exited = _writer_exited(candidate)
        with contextlib.suppress(OSError):
            old = time.time() - candidate.stat().st_mtime > STALE_AFTER_SECONDS
            if exited or (exited is None and old):
                shutil.rmtree(candidate)
                removed.append(candidate)
    return removed


def listed_components(index_file: Path) -> set[str]:
    """The component folders a model_index.json lists (not its ``[null, null]`` entries); empty when there is
    none or it is unreadable."""
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(index, dict):
        return set()
    return {
        k
        for k, v in index.items()
        if not k.startswith("_") and "/" not in k and isinstance(v, list) and len(v) == 2 and None not in v
    }


def _write_error(target: Path, e: OSError) -> OutputWriteError:
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return OutputWriteError(f"could not write {target}: {e.strerror or e}{where}; the previous files are unchanged")


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Write a folder atomically: yield a temporary sibling to write into, then move it into place.

    A new ``target`` appears in one rename. An existing ``target`` gets each written file by an atomic
    ``os.replace`` (files it has that were not rewritten are kept), so no reader ever sees a half-written
    file. If the body raises, the temporary folder is removed and ``target`` is left as it was; an OSError (disk
    full, permission denied, a path under a regular file) becomes an :class:`OutputWriteError` naming ``target``.

    For a pipeline folder (the new files hold a ``model_index.json``), the component folders the previous
    ``model_index.json`` listed and the new one does not are removed afterwards; nothing else is ever deleted
    (``checkpoints/``, ``logs/``, ``samples/``, ``.git`` stay). Temporary siblings of killed saves are removed
    first (:func:`remove_stale_temporaries`).
    """
    target = Path(target).resolve()
    _check_parents(target)
    if target.exists() and not target.is_dir():
        raise OutputWriteError(f"cannot write {target}: it exists and is not a folder")
    missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        _remove_empty(missing)
        raise _write_error(target, e) from None
    published = False
    try:
        lock = _lock(tmp)
        try:
            yield tmp
        finally:
            lock.close()
        (tmp / WRITER_LOCK).unlink(missing_ok=True)
        if not target.exists():
            os.replace(tmp, target)
            published = True
            return
        _check_writable(tmp, target)
        stale = listed_components(target / "model_index.json") - listed_components(tmp / "model_index.json")
        if not (tmp / "model_index.json").is_file():
            stale = set()
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                dest = target / path.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
        published = True
        for name in sorted(stale):  # only what the old index listed and the new one does not
            if (target / name).is_dir() and not (target / name).is_symlink():
                shutil.rmtree(target / name)
    except OSError as e:
        if isinstance(e, ModelFileError):
            raise
        raise _write_error(target, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not published:
            _remove_empty(missing)


def _check_writable(tmp: Path, target: Path) -> None:
    """Before any file of ``target`` is replaced: every folder that will receive one must be writable."""
    folders = {target / p.parent.relative_to(tmp) for p in tmp.rglob("*") if p.is_file()}
    for folder in sorted(folders):
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(existing))


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first: the parents this write created
        with contextlib.suppress(OSError):
            folder.rmdir()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename; on failure
    the previous file is intact, nothing is left behind and an :class:`OutputWriteError` names ``path``."""
    path = Path(path)
    _check_parents(path)
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _remove_empty(missing)
        if isinstance(e, OSError) and not isinstance(e, ModelFileError):
            raise _write_error(path, e) from None
        raise
