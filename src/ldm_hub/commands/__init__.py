"""Subcommands of ``ldm-hub``: one module each, discovered by :mod:`ldm_hub.cli`; the only place argparse lives.

Imports: anything below (pipelines, convert, training, demo, evaluation, hub); nothing imports commands but the CLI.
"""
