"""Subcommands of ``ldm-hub``: one module each, discovered by :mod:`ldm_hub.cli`."""
