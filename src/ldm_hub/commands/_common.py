"""What the commands share: the one-line errors of the command line and the checks that need no model.

Every failure of ``ldm-hub`` is one line ``ldm-hub <cmd>: error: ...`` naming the flag and what to do (see
:func:`ldm_hub.cli.main`); a command raises :class:`CommandError` with the exit status it means: 2 for a bad input
(:data:`BAD_INPUT`), 1 for the environment (:data:`ENVIRONMENT`: no CUDA, no token, a port in use, a full disk).
The checks here run before any model is loaded, so a mistake costs no loading time. Not a command (the leading
underscore keeps it out of :func:`ldm_hub.cli.build_parser`'s discovery).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
from pathlib import Path

BAD_INPUT = 2
ENVIRONMENT = 1


class CommandError(Exception):
    """A failure the command line reports as one line and ``exit_code`` (no traceback without ``--debug``)."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------------------------------- numbers
def check_number(flag: str, value, *, minimum=None, above=None, integer: bool = False, hint: str = "") -> None:
    """``value`` of ``flag`` is a finite number (an int when ``integer``) ≥ ``minimum`` / > ``above``."""
    if value is None:
        return
    wanted = "an integer" if integer else "a finite number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise CommandError(f"{flag} {value!r}: must be {wanted}{hint}")
    if minimum is not None and value < minimum:
        raise CommandError(f"{flag} {value!r}: must be >= {minimum}{hint}")
    if above is not None and value <= above:
        raise CommandError(f"{flag} {value!r}: must be > {above}{hint}")


# ---------------------------------------------------------------------------------------------- files
def check_input_file(flag: str, path: str | None) -> None:
    """``path`` given to ``flag`` is an existing regular file."""
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise CommandError(f"{flag} {path}: no such file")
    if not p.is_file():
        raise CommandError(f"{flag} {path}: not a file")


def check_output_path(flag: str, path: str | os.PathLike | None, *, folder: bool = False) -> None:
    """A file (or, with ``folder``, a folder) can be written at ``path``: no regular file stands where a folder
    must be, and the nearest existing folder above it is writable."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and (p.is_dir() != folder):
        kind = "a folder" if p.is_dir() else "a file"
        want = "a folder" if folder else "a file name"
        raise CommandError(f"{flag} {path}: {p} is {kind}; give {want} there")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CommandError(f"{flag} {path}: {parent} is a file, not a folder; choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        message = f"{flag} {path}: permission denied writing into {parent}; choose another {flag}"
        raise CommandError(message, ENVIRONMENT)


def write_file(flag: str, path: Path, data: bytes) -> None:
    """Write ``data`` atomically (no partial file after Ctrl-C or a full disk); an OSError names the path."""
    from ..loading import atomic_write_bytes

    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        message = str(e) if str(path) in str(e) else f"cannot write {path}: {e.strerror or e}"
        hint = os_hint(original_os_error(e))
        raise CommandError(f"{flag}: {message}{hint}", ENVIRONMENT if hint else BAD_INPUT) from e


def original_os_error(error: OSError) -> OSError:
    """The OSError with the errno behind one that rewords it (ldm_hub's write errors keep it as their context)."""
    while error.errno is None and isinstance(error.__context__, OSError):
        error = error.__context__
    return error


# what to do about an OSError of the environment, by errno
_OS_HINTS = {
    errno.ENOSPC: " (the disk is full: free some space or write elsewhere)",
    errno.EDQUOT: " (the disk quota is used up: free some space or write elsewhere)",
    errno.EACCES: " (write elsewhere, or fix the folder's permissions)",
    errno.EPERM: " (write elsewhere, or fix the folder's permissions)",
    errno.EROFS: " (the file system is read-only: write elsewhere)",
    errno.EIO: " (an I/O error of the disk)",
}


def os_hint(error: OSError) -> str:
    """What to do about an OSError of the environment (a full disk, no permission), or "" for another one."""
    return _OS_HINTS.get(error.errno, "")


def os_reason(error: OSError) -> str:
    """What an OSError means for the user, in words, with what to do."""
    return f"{error.strerror or error}{os_hint(original_os_error(error))}"


# ---------------------------------------------------------------------------------------------- devices
def check_device(flag: str, device: str) -> None:
    """``device`` is a torch device this machine has (CUDA / MPS available, the index in range)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise CommandError(f"{flag} {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(
                f"{flag} {device}: CUDA is not available on this machine (no GPU, or a CPU-only torch); "
                f"use {flag} cpu",
                ENVIRONMENT,
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise CommandError(f"{flag} {device}: this machine has {count} CUDA device(s) (cuda:0 … cuda:{count - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise CommandError(f"{flag} {device}: MPS is not available on this machine; use {flag} cpu", ENVIRONMENT)
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        if not hasattr(torch, dev.type) or not getattr(getattr(torch, dev.type), "is_available", lambda: False)():
            raise CommandError(f"{flag} {device}: no {dev.type} device on this machine; use {flag} cpu", ENVIRONMENT)


# ---------------------------------------------------------------------------------------------- python names → flags
def name_flags(message: str, flags: dict[str, str]) -> str:
    """A library error in the command line's words: ``use guidance_scale=1`` → ``use --guidance-scale 1``, and the
    message prefixed with the flag of the first argument it names in backticks (`` `height`=60 ...`` →
    ``--height: `height`=60 ...``); unchanged when it names a flag already."""
    for name, flag in flags.items():
        message = re.sub(rf"(?<![\w`-]){re.escape(name)}=(\S+)", rf"{flag} \1", message)
    if re.search(r"(?<![\w-])--\w", message):
        return message
    found = [(message.find(f"`{name}`"), flag) for name, flag in flags.items() if f"`{name}`" in message]
    if not found:  # a bare field name: one with an underscore, or the message's first word
        words = re.finditer(r"\b(\w+)\b", message)
        found = [(m.start(), flags[w]) for m in words if (w := m.group(1)) in flags and ("_" in w or m.start() == 0)]
    if not found:
        return message
    return f"{min(found)[1]}: {message}"


# ---------------------------------------------------------------------------------------------- training settings
def _scalar_type(annotation) -> tuple[type, bool]:
    """(scalar type, optional?) of a settings field's annotation such as ``int | None``."""
    import types
    import typing

    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(a for a in args if a is not type(None)), type(None) in args
    return annotation, False


def typed_config_values(cls, values: dict, source: str) -> dict:
    """The values of a ``--config`` file checked against the settings' types, so a wrong one names its key
    (``batch_size: "32x"``) instead of failing later; YAML's ``1e-4`` (read as a string) becomes the number."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    checked = dict(values)
    for key, value in values.items():
        if key not in names:  # unknown keys are named by build_config
            continue
        scalar, optional = _scalar_type(hints[key])
        if value is None and optional:
            continue
        if scalar is float and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = checked[key] = float(value)
        ok = {
            bool: isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            str: isinstance(value, str),
        }.get(scalar, True)
        if not ok:
            kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[scalar]
            kind += " or null" if optional else ""
            raise CommandError(
                f"{source}: key '{key}' must be {kind}, got {type(value).__name__} {value!r} "
                f"(the file's keys are the flags' names: '{key}' is --{key.replace('_', '-')})"
            )
    return checked


def training_config_from_args(cls, args):
    """The settings of ``cls`` from the flags and the ``--config`` file (flags win), each error naming the flag or
    the file's key: the command line's :func:`ldm_hub.training.config.config_from_args`."""
    import dataclasses

    from ..training import config as training_config

    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    file_values = None
    if getattr(args, "config", None):
        check_input_file("--config", args.config)
        try:
            file_values = training_config.read_config_file(args.config)
        except ValueError as e:
            raise CommandError(f"--config: {e}") from None
        file_values = typed_config_values(cls, file_values, f"--config {args.config}")
    try:
        return training_config.build_config(cls, file_values, given)
    except (ValueError, TypeError) as e:
        raise CommandError(name_flags(str(e), {name: "--" + name.replace("_", "-") for name in sorted(names)})) from e
