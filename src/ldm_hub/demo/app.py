"""The app: the tabs of the loaded models (:func:`build_demo`), starting it (:func:`launch`), and loading the
models to serve (:func:`load_pipelines`, :func:`serve`). The command line that calls :func:`serve` is
``ldm-hub demo`` (:mod:`ldm_hub.commands.demo`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import gradio as gr
import torch

from ..options import DTYPES
from .settings import DEFAULT_TASKS, MODES, DemoSettings
from .tabs import _TABS


# ---------------------------------------------------------------------------------------------- the app
def _by_mode(pipelines: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any]:
    if isinstance(pipelines, Mapping):
        items = list(pipelines.values())
    else:
        items = list(pipelines)
    by_mode: dict[str, Any] = {}
    for pipe in items:  # each model's own conditioning first
        mode = pipe.conditioning
        if mode not in MODES:
            raise ValueError(f"the demo has no tab for conditioning {mode!r}")
        if mode in by_mode:
            raise ValueError(f"two models do {mode!r}; load one model per task")
        by_mode[mode] = pipe
    for pipe in items:  # then what a model also serves (a planner-backed map model: text, layout)
        for task in getattr(pipe, "tasks", (pipe.conditioning,)):
            by_mode.setdefault(task, pipe)
    if not by_mode:
        raise ValueError("no model to serve")
    return by_mode


def build_demo(
    pipelines: Mapping[str, Any] | Iterable[Any],
    settings: DemoSettings | None = None,
    *,
    model_names: Mapping[str, str] | None = None,
    title: str = "ldm_hub: latent diffusion",
) -> gr.Blocks:
    """The Gradio app: one tab per conditioning mode of ``pipelines`` (LDMPipelines, one per mode).

    ``model_names`` (mode → folder or Hub id) is shown in the header. The returned Blocks already has its
    queue (one shared concurrency limit for every sampling endpoint); start it with :func:`launch`, which
    also applies the upload size limit.

    Example:
        ```py
        >>> from ldm_hub.demo import build_demo
        >>> from ldm_hub.presets import build_pipeline
        >>> demo = build_demo([build_pipeline("text2im-tiny"), build_pipeline("superres-tiny")])  # doctest: +SKIP
        >>> demo.launch()  # doctest: +SKIP
        ```
    """
    settings = settings or DemoSettings()
    by_mode = _by_mode(pipelines)
    model_names = dict(model_names or {})
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        lines = [
            f"# {title}",
            (
                "Latent Diffusion Models (Rombach et al., CVPR 2022, "
                "[arXiv 2112.10752](https://arxiv.org/abs/2112.10752)), served by ldm_hub. "
                "Results download as PNG."
            ),
        ]
        if model_names:
            lines.append(
                "Models: "
                + "; ".join(
                    f"**{MODES[m][0]}**: `{model_names[m]}`" for m in MODES if m in by_mode and m in model_names
                )
            )
        gr.Markdown("\n\n".join(lines))
        with gr.Tabs():
            for mode, (tab_title, api_name) in MODES.items():
                if mode not in by_mode:
                    continue
                with gr.Tab(tab_title, id=mode, elem_id=f"tab-{mode}"):
                    _TABS[api_name](by_mode[mode], settings)
    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=settings.max_queue_size)
    demo.ldm_settings = settings
    return demo


def launch(
    demo: gr.Blocks,
    *,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    settings: DemoSettings | None = None,
    **kwargs,
):
    """Start the app (``prevent_thread_lock=True`` in ``kwargs`` returns at once). ``host``/``port`` default
    to gradio's (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``, else 127.0.0.1:7860)."""
    settings = settings or getattr(demo, "ldm_settings", None) or DemoSettings()
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=settings.max_upload_bytes,
        show_error=False,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------- models
def default_models() -> dict[str, str]:
    """The shipped default model of each task (``ldm_hub.default_model_path(task)``), where it exists."""
    import ldm_hub

    if not hasattr(ldm_hub, "default_model_path"):
        return {}
    found: dict[str, str] = {}
    for task in DEFAULT_TASKS:
        try:
            path = ldm_hub.default_model_path(task)
        except (ValueError, KeyError, OSError, NotImplementedError):
            continue
        if path and str(path) not in found.values():
            found[task] = str(path)
    return found


def load_pipelines(
    models: Sequence[str] | None = None, *, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[dict[str, Any], dict[str, str]]:
    """Load each model (folder or Hub id) → ({mode: pipeline}, {mode: model name}).

    Without ``models`` the shipped defaults are used (see :func:`default_models`).
    """
    from .. import LDMPipeline

    names = list(models) if models else list(default_models().values())
    if not names:
        raise ValueError(
            "no model to serve: pass --model DIR_OR_REPO (repeat it for one model per task); "
            "this install ships no default model"
        )
    pipelines, model_names = {}, {}
    for name in dict.fromkeys(str(n) for n in names):
        pipe = LDMPipeline.from_pretrained(name).to(device, dtype)
        mode = pipe.conditioning
        if mode in pipelines:
            raise ValueError(f"{name} and {model_names[mode]} are both {mode!r} models; pass one model per task")
        pipelines[mode], model_names[mode] = pipe, name
    for mode, pipe in list(pipelines.items()):
        for task in pipe.tasks:
            model_names.setdefault(task, model_names[mode])
    return pipelines, model_names


def _settings_from_args(args) -> DemoSettings:
    overrides = {
        f.name: getattr(args, f.name) for f in fields(DemoSettings) if getattr(args, f.name, None) is not None
    }
    return DemoSettings(**overrides)


def serve(args) -> int:
    """Load the models named by parsed ``ldm-hub demo`` arguments and serve the app until interrupted."""
    settings = _settings_from_args(args)
    pipelines, names = load_pipelines(args.model, device=args.device, dtype=getattr(torch, DTYPES[args.dtype]))
    demo = build_demo(pipelines, settings, model_names=names)
    launch(demo, host=args.host, port=args.port, share=args.share, settings=settings)
    return 0
