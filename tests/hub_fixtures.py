"""Helpers that run the Hub clients (huggingface_hub, diffusers, transformers, datasets) against
:mod:`hub_server` instead of huggingface.co.

How the clients are pointed at the server, and why this way: ``huggingface_hub`` reads ``HF_ENDPOINT``,
``HF_HUB_OFFLINE`` and ``HF_HUB_DISABLE_XET`` once, at import time, into module constants (``constants.ENDPOINT``,
``constants.HUGGINGFACE_CO_URL_TEMPLATE``, ...); diffusers and datasets copy some of them into their own modules
(``diffusers.utils.constants.HUGGINGFACE_CO_RESOLVE_ENDPOINT``, ``datasets.config.HF_ENDPOINT``, ``from
huggingface_hub.constants import HF_HUB_OFFLINE`` in several places); the module-level ``HfApi()`` behind
``huggingface_hub.create_repo`` & co. copies ``ENDPOINT`` when it is built. In a pytest run all of them are
imported long before a Hub test starts (conftest sets ``HF_HUB_OFFLINE=1``; other test modules import diffusers
at collection), so setting the environment is not enough. :func:`running_hub` therefore, through
:func:`point_clients_at`,

1. sets the environment (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_OFFLINE`` unset, a
   fresh ``HF_HOME``) for whatever is imported later and for subprocesses (:func:`hub_env` for the CLI), and
2. patches, in a ``MonkeyPatch`` context undone when the module's tests are done, every already-imported module
   of those four libraries holding one of the names in :data:`_CACHED_NAMES`, the default ``HfApi`` instance,
   and fsspec's cache of ``HfFileSystem`` instances,

then asserts that no module of those libraries still holds the old endpoint under one of those names. The
server logs every request; with no network on the test machines, a request that escaped to huggingface.co
would fail loudly, never pass silently. A subprocess (the ``ldm-hub`` console script) needs none of this: it
gets the environment from :func:`hub_env` before anything is imported.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import HubServer

TOKEN = "hf_ldmhub_test_token"
USER = "tester"
OTHER_TOKEN = "hf_other_user_token"
OTHER_USER = "someone-else"

_LIBRARIES = ("huggingface_hub", "diffusers", "transformers", "datasets")
# Module-level names these libraries cache from the environment at import time.
_ENDPOINT_NAMES = (
    "ENDPOINT",
    "HF_ENDPOINT",
    "HUGGINGFACE_CO_RESOLVE_ENDPOINT",
    "HUGGINGFACE_CO_URL_TEMPLATE",
    "HUB_DATASETS_URL",
)
_OFFLINE_NAMES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "_is_offline_mode")
_CACHED_NAMES = _ENDPOINT_NAMES + _OFFLINE_NAMES + ("HF_HUB_DISABLE_XET",)


def _library_modules():
    for name, module in list(sys.modules.items()):
        if module is not None and name.split(".")[0] in _LIBRARIES:
            yield name, module


def point_clients_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str, home: Path) -> None:
    """Send every Hub client call of this test to ``endpoint`` with ``token``, caches under ``home``."""
    from huggingface_hub import constants

    old_endpoint = constants.ENDPOINT
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_DATASETS_CACHE": str(home / "datasets"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)

    for _, module in _library_modules():
        for name in _CACHED_NAMES:
            if name not in vars(module):
                continue
            value = vars(module)[name]
            if name in _ENDPOINT_NAMES and isinstance(value, str) and value.startswith(old_endpoint):
                monkeypatch.setattr(module, name, endpoint + value[len(old_endpoint) :])
            elif name in _OFFLINE_NAMES and isinstance(value, bool):
                monkeypatch.setattr(module, name, False)
            elif name == "HF_HUB_DISABLE_XET" and isinstance(value, bool):
                monkeypatch.setattr(module, name, True)
    host = endpoint.split("://", 1)[1].split(":")[0]
    hf_tqdm = sys.modules["huggingface_hub.utils.tqdm"]  # the module (the package re-exports a class of that name)
    for module in (constants, hf_tqdm):  # cosmetic: no upload/download bars in the test output
        monkeypatch.setattr(module, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    monkeypatch.setattr(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host}))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    from huggingface_hub import hf_api

    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    from huggingface_hub import HfFileSystem

    HfFileSystem.clear_instance_cache()
    if "datasets" in sys.modules:
        import datasets.config as dconfig

        monkeypatch.setattr(dconfig, "HF_DATASETS_CACHE", home / "datasets")
        monkeypatch.setattr(dconfig, "HF_HUB_CACHE", str(home / "hub"), raising=False)

    stale = [
        f"{name}.{attr}"
        for name, module in _library_modules()
        for attr in _ENDPOINT_NAMES
        if isinstance(vars(module).get(attr), str) and vars(module)[attr].startswith("https://huggingface.co")
    ]
    assert not stale, f"Hub endpoint still cached in {stale}"
    assert constants.ENDPOINT == endpoint and not constants.is_offline_mode()


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HF_HUB_OFFLINE=1`` for the rest of the test, in the environment and in every cached copy."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for _, module in _library_modules():
        for name in _OFFLINE_NAMES:
            if isinstance(vars(module).get(name), bool):
                monkeypatch.setattr(module, name, True)


@contextlib.contextmanager
def running_hub(root: Path) -> Iterator[HubServer]:
    """The Hub-protocol server on a free 127.0.0.1 port (blobs under ``root``), with every Hub client pointed at
    it and ``HF_HOME`` under ``root`` until the block ends; then the patches are undone and the server stops.
    A test module makes it its ``hub`` fixture (module scope: repos persist across the module's tests)."""
    server = HubServer(tokens={TOKEN: USER, OTHER_TOKEN: OTHER_USER}, storage=root / "hub-storage").start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            point_clients_at(mp, server.url, TOKEN, root / "hf-home")
            yield server
        assert not server.errors, "the test server hit a bug:\n" + "\n".join(server.errors)
    finally:
        server.stop()


def hub_env(server: HubServer, home: Path, token: str = TOKEN) -> dict[str, str]:
    """Environment for a subprocess (the ``ldm-hub`` CLI) talking to ``server``."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        HF_ENDPOINT=server.url,
        HF_TOKEN=token,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    return env
