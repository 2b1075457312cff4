"""The ldm_hub Gradio demo: one tab per conditioning mode of the loaded models.

Each loaded :class:`~ldm_hub.LDMPipeline` says what it does through ``pipe.tasks`` (its ``conditioning``, plus
text and layout for a semantic-map model with a :class:`~ldm_hub.LayoutPlanner`); the app shows the matching
tabs and names each API endpoint after the task:

=================  ==============================  ====================================================
``conditioning``   tab                             API endpoint (main input first)
=================  ==============================  ====================================================
``"text"``         Text → image                    ``/text_to_image`` (prompt)
``"layout"``       Layout → image                  ``/layout_to_image`` (table of label, x0, y0, x1, y1)
``"class"``        Class → image                   ``/class_to_image`` (class id)
``"semantic"``     Semantic map → image            ``/semantic_to_image`` (index-map PNG)
``"inpaint"``      Inpainting                      ``/inpaint`` (image editor value: image + brush layer)
``"superres"``     Super-resolution 4×             ``/super_resolution`` (low-resolution image)
``"unconditional"`` Unconditional samples           ``/unconditional`` (number of images)
=================  ==============================  ====================================================

Every endpoint runs with its defaults given only its main input, returns a gallery of PNGs and (where a seed
is used) the seed, and fails with a :class:`gradio.Error` message, never a stack trace. :class:`DemoSettings`
holds the caps (steps, image size, batch, upload size, queue) that keep one visitor from taking the machine.

Example:
    ```py
    >>> from ldm_hub.demo import build_demo, launch
    >>> from ldm_hub.presets import build_pipeline
    >>> demo = build_demo({"text": build_pipeline("text2im-tiny")})  # doctest: +SKIP
    >>> launch(demo, port=7860)  # doctest: +SKIP
    ```

Run it with ``ldm-hub demo [--model DIR_OR_REPO ...]`` or ``python demo/app.py``.

The package: ``settings`` (the tab table :data:`MODES`, :class:`DemoSettings`), ``inputs`` (uploads, numbers, the
layout table), ``widgets`` (one request's sampling run, the shared controls), ``tabs`` (one builder per conditioner
endpoint, its ``api_name``) and ``app`` (:func:`build_demo`, :func:`launch`, loading the models). It may import
ldm_hub's public API and :mod:`ldm_hub.options`, never :mod:`ldm_hub.commands` (the command line imports the demo,
not the reverse).
"""

from .app import build_demo, default_models, launch, load_pipelines, serve
from .inputs import draw_layout, guard_upload, parse_layout
from .settings import DEFAULT_SCHEDULER, DEFAULT_TASKS, LAYOUT_HEADERS, MODES, DemoSettings
from .widgets import _sample  # noqa: F401 - tests drive one sampling run directly

__all__ = [
    "DEFAULT_SCHEDULER",
    "DEFAULT_TASKS",
    "LAYOUT_HEADERS",
    "MODES",
    "DemoSettings",
    "build_demo",
    "default_models",
    "draw_layout",
    "guard_upload",
    "launch",
    "load_pipelines",
    "parse_layout",
    "serve",
]
