"""The ``ldm-hub`` command line. Each subcommand is a module in :mod:`ldm_hub.commands` with
``add_parser(subparsers)`` and ``run(args) -> int``; modules are discovered, so a new command is a new file.
Heavy imports (torch, diffusers) happen inside ``run``, so ``ldm-hub --help`` stays fast.

A failure is one line on stderr, ``ldm-hub <cmd>: error: ...``, naming the flag and what to do; the exit status
is 2 for a bad input, 1 for the environment (no CUDA, no Hub token, a port in use, a full disk), 130 for Ctrl-C.
``--debug`` (or ``LDM_HUB_DEBUG=1``) shows the traceback instead."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys

from . import commands
from .commands._common import BAD_INPUT, ENVIRONMENT, CommandError, original_os_error, os_hint, os_reason

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
DEBUG_ENV = "LDM_HUB_DEBUG"
# a value that argparse would take for an option: -1, -1e-4, -.5, -inf, -nan
_NEGATIVE_NUMBER = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) pointing to ``--help``."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield info.name, importlib.import_module(f"{commands.__name__}.{info.name}")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _add_debug(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=default, help=f"show the traceback of an error (or {DEBUG_ENV}=1)"
    )
    for child in {id(p): p for p in _subparsers(parser).values()}.values():
        _add_debug(child, argparse.SUPPRESS)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = _Parser(prog="ldm-hub", description="Latent Diffusion Models (Rombach et al., 2022) on Hugging Face.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    runners = {}
    for name, module in _command_modules():
        module.add_parser(sub)
        runners[name.replace("_", "-")] = module.run
    _add_debug(parser, False)
    return parser, runners


def _is_numeric(action: argparse.Action) -> bool:
    kind = action.type
    return kind in (int, float) or getattr(kind, "__name__", None) in ("int", "float")


def negative_numbers_as_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--learning-rate -1e-4`` → ``--learning-rate=-1e-4`` for numeric options, so argparse reads the number
    (it takes ``-1e-4`` for a flag) and the command's range check can answer."""
    out, current, i = [], parser, 0
    while i < len(argv):
        token = argv[i]
        children = _subparsers(current)
        if token in children:
            current = children[token]
        numeric = {s for a in current._actions if a.nargs is None and _is_numeric(a) for s in a.option_strings}
        if token in numeric and i + 1 < len(argv) and _NEGATIVE_NUMBER.match(argv[i + 1]):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def describe_error(error: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that reached the command line."""
    from .loading import ModelFileError

    if isinstance(error, CommandError):
        code, message = error.exit_code, str(error)
    elif isinstance(error, ModelFileError) and os_hint(original_os_error(error)):  # a write failed: disk full, ...
        code, message = ENVIRONMENT, f"{error}{os_hint(original_os_error(error))}"
    elif isinstance(error, (ValueError, TypeError, ModelFileError)):
        code, message = BAD_INPUT, str(error)
    elif isinstance(error, (ImportError, MemoryError)):
        code, message = ENVIRONMENT, str(error) or type(error).__name__
    elif isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        code, message = ENVIRONMENT, f"{where}{os_reason(error)}"
    elif type(error).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        first = str(error).splitlines()[0] if str(error) else "CUDA"
        code, message = ENVIRONMENT, f"out of memory ({first}); try fewer images, a smaller size or --tile-size"
    else:  # not a user's mistake: say so, and where to look
        code = ENVIRONMENT
        message = f"internal error: {type(error).__name__}: {error} (rerun with --debug for the traceback)"
    return code, " ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    argv = negative_numbers_as_values(parser, list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")
    prog = f"ldm-hub {args.command}"
    try:
        return runners[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as e:  # noqa: BLE001 - every failure becomes one line (the traceback with --debug)
        if debug:
            raise
        code, message = describe_error(e)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
