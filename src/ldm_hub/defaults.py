"""The default models shipped inside the package, so ``ldm-hub generate`` works offline on a fresh install.

They were trained with ``ldm-hub train`` on the procedural shapes dataset (:mod:`ldm_hub.data.shapes`); the
README records the commands, the time taken, the measured quality and the weights' sha256. One model serves
``"text"`` and ``"layout"`` (a semantic-map LDM whose :class:`~ldm_hub.LayoutPlanner` turns captions and boxes
into its input map); another serves ``"superres"`` (4×, 16² → 64²). Both share one f4 KL autoencoder. The
weights are stored in fp16 and load as fp32.

Example:
    >>> from ldm_hub import LDMPipeline, default_model_path
    >>> pipe = LDMPipeline.from_pretrained(default_model_path("text"))  # doctest: +SKIP
    >>> image = pipe("a red circle and a blue square").images[0]  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

# task → the folder under ldm_hub/default_models/ that serves it.
DEFAULT_MODELS: dict[str, str] = {
    "text": "shapes-text-layout",
    "layout": "shapes-text-layout",
    "superres": "shapes-superres",
}
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent / "default_models"


def default_model_path(task: str = "text") -> Path:
    """The shipped model folder for ``task`` (``"text"``, ``"layout"`` or ``"superres"``), for
    :meth:`LDMPipeline.from_pretrained <ldm_hub.LDMPipeline.from_pretrained>`.

    Raises ValueError for another task and FileNotFoundError when this install lacks the weights (a source
    checkout without them, or a wheel built without package data).
    """
    if task not in DEFAULT_MODELS:
        raise ValueError(f"no default model for task {task!r}; choose one of {sorted(set(DEFAULT_MODELS))}")
    folder = DEFAULT_MODELS_DIR / DEFAULT_MODELS[task]
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the default {task!r} model is missing from this install ({folder}); "
            "reinstall ldm_hub, or pass a model folder or Hub id"
        )
    return folder
