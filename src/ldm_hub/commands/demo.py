"""``ldm-hub demo``: serve the Gradio demo (the app itself is :mod:`ldm_hub.demo`, shipped in the package).

The demo's options live here, with the rest of the command line: :func:`add_arguments` for ``ldm-hub demo`` and
:func:`main` for ``python demo/app.py`` (the Space entry point), both ending in :func:`ldm_hub.demo.serve`."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from ..options import DTYPES
from ._common import ENVIRONMENT, CommandError, check_device, check_number


def add_arguments(parser) -> None:
    """The demo's options; shared by ``ldm-hub demo`` and ``python demo/app.py``."""
    parser.add_argument(
        "--model",
        action="append",
        metavar="DIR_OR_REPO",
        help="model folder or Hub repo id; repeat it for one model per task "
        "(default: the models shipped with ldm_hub)",
    )
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="model dtype (default float32)")
    limits = parser.add_argument_group("limits (per request)")
    limits.add_argument("--max-steps", type=int, dest="max_steps", help="most sampling steps (default 200)")
    limits.add_argument("--max-images", type=int, dest="max_images", help="most images per request (default 4)")
    limits.add_argument("--max-side", type=int, dest="max_side", help="largest output side in pixels (default 1024)")
    limits.add_argument("--max-upload-mb", type=float, dest="max_upload_mb", help="largest upload (default 10 MB)")
    limits.add_argument(
        "--concurrency-limit",
        type=int,
        dest="concurrency_limit",
        help="sampling jobs run at once; the others wait in the queue (default 1)",
    )


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="serve the Gradio demo (needs the `demo` extra: pip install 'ldm_hub[demo]')")
    add_arguments(demo)


def check_arguments(args) -> None:
    """Before any model loads: the numbers, the device, the models' folders, and the port free to listen on."""
    import errno
    import os
    import socket

    check_number("--port", args.port, minimum=1, integer=True)
    if args.port is not None and args.port > 65535:
        raise CommandError(f"--port {args.port}: must be <= 65535")
    for flag, value in (
        ("--max-steps", args.max_steps), ("--max-images", args.max_images), ("--max-side", args.max_side),
        ("--concurrency-limit", args.concurrency_limit),
    ):  # fmt: skip
        check_number(flag, value, minimum=1, integer=True)
    check_number("--max-upload-mb", args.max_upload_mb, above=0)
    check_device("--device", args.device)
    port = args.port or os.environ.get("GRADIO_SERVER_PORT")  # without one gradio looks for a free port itself
    if port is None:
        return
    host = args.host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    flag = "--port" if args.port else "GRADIO_SERVER_PORT"
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, int(port)))
    except (OSError, ValueError) as e:
        if getattr(e, "errno", None) == errno.EADDRINUSE:
            raise CommandError(
                f"{flag} {port}: port {port} on {host} is in use (another server listens there); pass --port with a "
                "free port, or stop the other server",
                ENVIRONMENT,
            ) from None
        raise CommandError(f"{flag} {port}, --host {host}: cannot listen there: {e}", ENVIRONMENT) from None


def run(args) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise CommandError("the demo needs gradio: pip install 'ldm_hub[demo]'", ENVIRONMENT)
    check_arguments(args)
    from ..demo import serve

    return serve(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``python demo/app.py [--model M ...] [--port P] [--share]``: the same options as ``ldm-hub demo``."""
    from ..loading import ModelFileError

    parser = argparse.ArgumentParser(prog="app.py", description="The ldm_hub Gradio demo.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
        from ..demo import serve

        return serve(args)
    except CommandError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return e.exit_code
    except (ValueError, TypeError, ModelFileError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
