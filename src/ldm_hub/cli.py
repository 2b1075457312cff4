"""The ``ldm-hub`` command line. Each subcommand is a module in :mod:`ldm_hub.commands` with
``add_parser(subparsers)`` and ``run(args) -> int``; modules are discovered, so a new command is a new file.
Heavy imports (torch, diffusers) happen inside ``run``, so ``ldm-hub --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield info.name, importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="ldm-hub", description="Latent Diffusion Models (Rombach et al., 2022) on Hugging Face."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    runners = {}
    for name, module in _command_modules():
        module.add_parser(sub)
        runners[name.replace("_", "-")] = module.run
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    from .loading import ModelFileError

    try:
        return runners[args.command](args)
    except (ValueError, TypeError, ModelFileError) as e:
        print(f"ldm-hub {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
