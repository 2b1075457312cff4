"""Reading and writing pipeline folders: ldm_hub's layout and diffusers', with diffusers' component renames.

A pipeline folder or repo written by :meth:`LDMPipeline.save_pretrained` / ``push_to_hub`` is a diffusers
pipeline layout (``model_index.json`` + one folder per component) plus three things, so that it loads with
ldm_hub **and** with plain diffusers (ldm_hub installed) as the same ``ldm_hub.LDMPipeline``, never as diffusers'
own unconditional ``LDMPipeline`` whose name ours shares:

==========================  ======================================================================================
file                        why
==========================  ======================================================================================
``pipeline.py``             diffusers' custom-pipeline entry file (:data:`PIPELINE_SOURCE`): exactly one pipeline
                            class, ``ldm_hub.LDMPipeline`` re-exported. ``DiffusionPipeline.from_pretrained(repo,
                            trust_remote_code=True)`` or ``custom_pipeline=repo`` load it. The same text is the
                            top-level ``pipelines/ldm_hub_pipeline/pipeline.py`` of the source tree; it ships inside
                            the package as this string, so a wheel install uploads it too.
``model_index.json``        ``"_class_name": ["pipeline", "LDMPipeline"]`` (diffusers then looks the class up in
                            ``pipeline.py`` instead of in diffusers); components ``["ldm_hub", "ClassName"]``.
``<component>/ldm_hub.py``  diffusers' custom-component convention: ``["ldm_hub", "LDMUNet"]`` for a Hub repo means
                            "class ``LDMUNet`` from ``unet/ldm_hub.py``" (diffusers 0.42 refuses any other library
                            name at download). The file only re-exports the installed ldm_hub's classes
                            (:data:`COMPONENT_SOURCE`).
``README.md``               the model card (:func:`model_card`), written on every push.
==========================  ======================================================================================

Extra facts travel in ``model_index.json`` under keys diffusers ignores (leading ``_``): ``_base_model`` (the Hub
repo a pipeline was converted from) and ``_training_info`` (a dict the trainer attaches as
``pipe.training_info``, e.g. ``{"dataset": "user/shapes", "steps": 20000, "batch_size": 64}``); both reach the
model card.

Imports: loading, the convert tables; never the pipeline (it calls this module).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..loading import ModelFileError, read_json
from .diffusers_format import COMPONENT_RENAMES, load_component

if TYPE_CHECKING:
    from ..pipelines.ldm_pipeline import LDMPipeline

PIPELINE_FILE_NAME = "pipeline.py"  # diffusers' CUSTOM_PIPELINE_FILE_NAME
PIPELINE_MODULE = PIPELINE_FILE_NAME.removesuffix(".py")
PIPELINE_CLASS_NAME = "LDMPipeline"
COMPONENT_FILE_NAME = "ldm_hub.py"  # diffusers resolves ["ldm_hub", X] in a Hub repo to <component>/ldm_hub.py
LIBRARY_NAME = "ldm_hub"
INFO_KEYS = {"base_model": "_base_model", "training_info": "_training_info"}  # pipe attribute -> model_index key

PIPELINE_SOURCE = '''\
"""ldm_hub's LDMPipeline as a diffusers custom pipeline: Latent Diffusion Models (Rombach et al., CVPR 2022).

With plain diffusers and ldm_hub installed (`pip install ldm_hub`), a repo pushed by ldm_hub loads as
ldm_hub.LDMPipeline, never as diffusers' own unconditional LDMPipeline whose name it shares:

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("user/repo", trust_remote_code=True)
    pipe = DiffusionPipeline.from_pretrained("user/repo", custom_pipeline="user/repo", trust_remote_code=True)

The one pipeline class here is ldm_hub.LDMPipeline itself, re-exported rather than copied, so the sampling
code is the installed ldm_hub's and the images equal `ldm_hub.LDMPipeline.from_pretrained("user/repo")`'s.
"""

from ldm_hub import LDMPipeline

__all__ = ["LDMPipeline"]
'''

COMPONENT_SOURCE = '''\
"""diffusers' custom-component hook for ldm_hub: model_index.json lists this component as ["ldm_hub", "ClassName"],
which diffusers resolves to this file. Nothing is defined here: the classes are the installed ldm_hub's."""

from ldm_hub import *  # noqa: F401,F403
'''

VARIANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------- saving
@contextlib.contextmanager
def cast_for_variant(pipe: LDMPipeline | torch.nn.Module, variant: str | None) -> Iterator[None]:
    """While saving ``variant="fp16"`` / ``"bf16"``, give every floating tensor of the pipeline's models (or of one
    model) that dtype.

    The fp32 tensors are set aside, not converted back, so the in-memory pipeline is bit-identical afterwards.
    Other variant names (e.g. ``"ema"``) save the weights as they are.
    """
    dtype = VARIANT_DTYPES.get(variant or "")
    if dtype is None:
        yield
        return
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            components = [pipe] if isinstance(pipe, torch.nn.Module) else pipe.components.values()
            for component in components:
                if not isinstance(component, torch.nn.Module):
                    continue
                for tensor in [*component.parameters(), *component.buffers()]:
                    if tensor.is_floating_point() and tensor.dtype != dtype:
                        saved.append((tensor, tensor.data))
                        tensor.data = tensor.data.to(dtype)
        yield
    finally:
        for tensor, data in saved:
            tensor.data = data


def clear_tokenizer_call_state(pipe: LDMPipeline) -> None:
    """Forget the padding / truncation a fast tokenizer keeps from its last call.

    transformers' tokenizers leave the last call's settings in the Rust backend, and ``save_pretrained`` writes
    them into tokenizer.json (the next call without them clears them again, so they carry no meaning). Clearing
    them before saving makes saving, and pushing, an unchanged pipeline give the same bytes whatever it sampled
    in between.
    """
    backend = getattr(getattr(pipe, "tokenizer", None), "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "no_padding") and hasattr(backend, "no_truncation"):
        backend.no_padding()
        backend.no_truncation()


def write_loader_files(pipe: LDMPipeline, folder: str | os.PathLike) -> None:
    """Make a folder written by ``DiffusionPipeline.save_pretrained`` loadable by plain diffusers too.

    Writes ``pipeline.py``, a ``ldm_hub.py`` into every folder of an ldm_hub component, and rewrites
    ``model_index.json`` with ``_class_name = ["pipeline", "LDMPipeline"]`` plus ``_base_model`` /
    ``_training_info`` when the pipeline has them.
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["_class_name"] = [PIPELINE_MODULE, PIPELINE_CLASS_NAME]
    for attribute, key in INFO_KEYS.items():
        value = getattr(pipe, attribute, None)
        if value:
            index[key] = value
        else:
            index.pop(key, None)
    for name, entry in index.items():
        ours = not name.startswith("_") and isinstance(entry, list) and entry[:1] == [LIBRARY_NAME]
        if ours and (folder / name).is_dir():
            (folder / name / COMPONENT_FILE_NAME).write_text(COMPONENT_SOURCE, encoding="utf-8")
    (folder / PIPELINE_FILE_NAME).write_text(PIPELINE_SOURCE, encoding="utf-8")
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def read_pipeline_info(index: dict) -> dict[str, Any]:
    """``{"base_model": ..., "training_info": ...}`` stored in a model_index.json by :func:`write_loader_files`."""
    return {attribute: index[key] for attribute, key in INFO_KEYS.items() if index.get(key)}


# ---------------------------------------------------------------------------------------------- reading
# The components an LDMPipeline folder may list (after diffusers' renames), and those it must.
PIPELINE_COMPONENTS = ("vae", "unet", "scheduler", "cond_encoder", "tokenizer", "layout_planner")
REQUIRED_COMPONENTS = ("vae", "unet", "scheduler")
# diffusers pipelines whose VQ first stage is used without a scale factor, whatever its config says.
UNSCALED_DIFFUSERS_PIPELINES = {"LDMSuperResolutionPipeline", "LDMPipeline"}


def is_ldm_hub_index(folder: Path) -> bool:
    """Whether the folder's model_index.json was written by ldm_hub (its components are ldm_hub classes)."""
    index = read_json(Path(folder) / "model_index.json")
    return any(isinstance(v, list) and v[:1] == [LIBRARY_NAME] for k, v in index.items() if not k.startswith("_"))


# What a component given to from_pretrained must be (checked before anything is read): a model is a torch module,
# a scheduler has diffusers' sampling API, a config component (tokenizer, layout planner) is an object, not a name;
# an optional component may be None.
_MODEL_COMPONENTS = ("vae", "unet", "cond_encoder")
_SCHEDULER_METHODS = ("set_timesteps", "step")


def check_overrides(overrides: dict[str, Any]) -> None:
    """A component passed by keyword (``scheduler=DDIMScheduler()``) is an object of the right kind, not its name
    (``scheduler="ddim"``) or a path; a TypeError names the argument."""
    unknown = set(overrides) - set(PIPELINE_COMPONENTS)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {sorted(unknown)}; components are {sorted(PIPELINE_COMPONENTS)}"
        )
    for name, value in overrides.items():
        got = f"got {type(value).__name__} {value!r}" if isinstance(value, (str, os.PathLike)) else ""
        got = got or f"got {type(value).__name__}"
        if value is None:
            if name in REQUIRED_COMPONENTS:
                raise TypeError(f"`{name}` is a required component; it cannot be None")
        elif name == "scheduler":
            if isinstance(value, type) or not all(callable(getattr(value, m, None)) for m in _SCHEDULER_METHODS):
                raise TypeError(
                    f"`scheduler` must be a scheduler object (e.g. DDIMScheduler.from_config(pipe.scheduler.config)), "
                    f"{got}"
                )
        elif name in _MODEL_COMPONENTS and not isinstance(value, torch.nn.Module):
            raise TypeError(f"`{name}` must be a model (a torch.nn.Module such as the loaded pipeline's), {got}")
        elif isinstance(value, (str, bytes, os.PathLike, int, float)):  # the tokenizer, the layout planner
            raise TypeError(f"`{name}` must be a loaded {name} object, not a name or path, {got}")


def check_torch_dtype(torch_dtype) -> None:
    """``torch_dtype`` is None, a floating torch.dtype, or a dict of them by component name (``"default"`` for the
    rest, as diffusers takes it); a TypeError names it and shows the spelling."""
    if isinstance(torch_dtype, dict):
        unknown = sorted(set(torch_dtype) - {*PIPELINE_COMPONENTS, "default"})
        if unknown:
            raise TypeError(f"`torch_dtype` names no component {unknown}; components are {list(PIPELINE_COMPONENTS)}")
        for value in torch_dtype.values():
            check_torch_dtype(value)
        return
    if torch_dtype is None or (isinstance(torch_dtype, torch.dtype) and torch_dtype.is_floating_point):
        return
    if isinstance(torch_dtype, str):
        known = getattr(torch, torch_dtype, None)
        hint = f"torch.{torch_dtype}" if isinstance(known, torch.dtype) else "torch.float16 or torch.bfloat16"
        raise TypeError(f"`torch_dtype` must be a torch.dtype such as {hint}, got the string {torch_dtype!r}")
    raise TypeError(
        f"`torch_dtype` must be a floating torch.dtype (torch.float32, torch.float16, ...), got {torch_dtype!r}"
    )


def read_pipeline_folder(
    folder: Path, overrides: dict[str, Any], *, variant: str | None = None, torch_dtype=None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A folder with model_index.json, in ldm_hub's layout or diffusers', → (components, pipeline info).

    Every entry is loaded into ldm_hub's classes (:func:`~ldm_hub.convert.diffusers_format.load_component`) under
    ldm_hub's component names (``bert`` → ``cond_encoder``, ``vqvae`` → ``vae``); entries named in ``overrides``
    are not read, the given objects are used. ``torch_dtype`` is one dtype for every model or, as in diffusers, a
    dict by component name with a ``"default"`` for the others. diffusers' unconditional and super-resolution
    pipelines use their VQ first stage unscaled, so such a vae gets ``scaling_factor=1``. The info is
    ``base_model`` / ``training_info`` as :func:`write_loader_files` stored them.
    """
    check_overrides(overrides)
    check_torch_dtype(torch_dtype)
    index_file = folder / "model_index.json"
    index = read_json(index_file)
    pipeline_class = index.get("_class_name")
    if isinstance(pipeline_class, list):  # ["pipeline", "LDMPipeline"]: a custom-pipeline entry
        pipeline_class = pipeline_class[-1]
    loaded: dict[str, Any] = {}
    for name, entry in index.items():
        if name.startswith("_"):
            continue
        target = COMPONENT_RENAMES.get(name, name)
        if target not in PIPELINE_COMPONENTS:
            raise ModelFileError(f"{index_file}: unknown component {name!r}")
        if target in overrides:
            continue
        if not isinstance(entry, list) or len(entry) != 2:
            raise ModelFileError(f"{index_file}: entry {name!r} should be [library, class]")
        library, class_name = entry
        if library is None or class_name is None:
            loaded[target] = None
            continue
        dtype = torch_dtype.get(target, torch_dtype.get("default")) if isinstance(torch_dtype, dict) else torch_dtype
        loaded[target] = load_component(folder / name, library, class_name, variant=variant, torch_dtype=dtype)
    loaded.update(overrides)
    missing = set(REQUIRED_COMPONENTS) - set(loaded)
    if missing:
        raise ModelFileError(f"{index_file} lists no {sorted(missing)}")
    vae_entry = index.get("vqvae") or index.get("vae")
    if pipeline_class in UNSCALED_DIFFUSERS_PIPELINES and vae_entry and vae_entry[0] == "diffusers":
        loaded["vae"].register_to_config(scaling_factor=1.0)
    return loaded, read_pipeline_info(index)
