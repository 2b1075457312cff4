"""Load one component folder of a diffusers-format repo into ldm_hub's own classes.

A diffusers pipeline folder is ``model_index.json`` plus one subfolder per component, each naming its class as
``[library, ClassName]``. This module is the table from those foreign names to ldm_hub's classes, config
translators and key maps (the translators live beside it: ``diffusers_unet``, ``diffusers_autoencoder``,
``diffusers_text``); ``LDMPipeline.from_pretrained`` calls :func:`load_component` for every entry.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..loading import (
    ModelFileError,
    find_weights_file,
    load_model_weights,
    load_state_dict_file,
    read_json,
)

# diffusers' pipelines name the components differently; ldm_hub's LDMPipeline has one set of names.
COMPONENT_RENAMES = {"vqvae": "vae", "bert": "cond_encoder", "text_encoder": "cond_encoder"}

# Weight file stems: diffusers models, then transformers models.
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model",)
TRANSFORMERS_WEIGHTS = ("model", "pytorch_model")


@dataclass(frozen=True)
class ForeignModel:
    """How to turn one foreign model class into ours: our class, a config translator, a key mapper."""

    target: str  # "module:ClassName" inside ldm_hub
    convert_config: str  # "module:function"
    convert_state_dict: str  # "module:function"
    weights: tuple[str, ...] = DIFFUSERS_WEIGHTS


_UNET = ForeignModel(
    "ldm_hub.models.unet:LDMUNet",
    "ldm_hub.convert.diffusers_unet:convert_unet_config",
    "ldm_hub.convert.diffusers_unet:convert_unet_state_dict",
)
FOREIGN_MODELS: dict[str, ForeignModel] = {
    "UNet2DConditionModel": _UNET,
    "UNet2DModel": _UNET,
    "AutoencoderKL": ForeignModel(
        "ldm_hub.models.autoencoder_kl:AutoencoderKL",
        "ldm_hub.convert.diffusers_autoencoder:convert_autoencoder_kl_config",
        "ldm_hub.convert.diffusers_autoencoder:convert_autoencoder_state_dict",
    ),
    "VQModel": ForeignModel(
        "ldm_hub.models.autoencoder_vq:VQModel",
        "ldm_hub.convert.diffusers_autoencoder:convert_vq_model_config",
        "ldm_hub.convert.diffusers_autoencoder:convert_autoencoder_state_dict",
    ),
    "LDMBertModel": ForeignModel(
        "ldm_hub.conditioning.text:LDMBertModel",
        "ldm_hub.convert.diffusers_text:convert_ldm_bert_config",
        "ldm_hub.convert.diffusers_text:convert_ldm_bert_state_dict",
        weights=TRANSFORMERS_WEIGHTS,
    ),
}

# diffusers schedulers with an ldm_hub twin: loaded as ours from the same scheduler_config.json.
FOREIGN_SCHEDULERS = {
    "DDIMScheduler": "DDIMScheduler",
    "DDPMScheduler": "DDPMScheduler",
    "PNDMScheduler": "PLMSScheduler",
    "DPMSolverMultistepScheduler": "DPMSolverMultistepScheduler",
}


# ---------------------------------------------------------------------------------------------- config values
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config_values(config: dict, where: str) -> None:
    """Refuse config values that would load and then fail or give NaN images at the first call, naming the field:
    ``scaling_factor`` (s, a positive finite number: 0 gives NaN images), ``num_train_timesteps`` (T ≥ 1),
    ``beta_start`` / ``beta_end`` (in (0, 1)). ``where`` is the file, for the message."""
    s = config.get("scaling_factor")
    if "scaling_factor" in config and s is not None and not (_is_number(s) and math.isfinite(s) and s > 0):
        raise ModelFileError(
            f"{where}: `scaling_factor` must be a positive finite number (the latent scale s, e.g. 0.18215), got {s!r}"
        )
    t = config.get("num_train_timesteps")
    # (diffusers' UNet2DModel config carries num_train_timesteps: null, meaning "not set")
    if t is not None and not (isinstance(t, int) and not isinstance(t, bool) and t >= 1):
        raise ModelFileError(f"{where}: `num_train_timesteps` must be an integer >= 1, got {t!r}")
    for name in ("beta_start", "beta_end"):
        beta = config.get(name)
        if beta is not None and not (_is_number(beta) and 0 < beta < 1):
            raise ModelFileError(f"{where}: `{name}` must be a number in (0, 1), got {beta!r}")


def _resolve(spec: str) -> Callable:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _config_without_meta(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def load_model_folder(folder: Path, cls: type, *, variant: str | None = None, weights=DIFFUSERS_WEIGHTS):
    """Build ``cls`` from ``folder/config.json`` and load its weights strictly (errors name file and keys)."""
    config = read_json(folder / "config.json")
    check_config_values(config, str(folder / "config.json"))
    try:
        model = cls.from_config(_config_without_meta(config))
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{folder / 'config.json'} is not a valid {cls.__name__} config: {e}") from None
    path = find_weights_file(folder, weights, variant)
    state_dict = load_state_dict_file(path)
    load_model_weights(model, state_dict, str(path))
    return model


def load_foreign_model(folder: Path, class_name: str, *, variant: str | None = None):
    """Load a diffusers / latent_diffusion model folder into the matching ldm_hub class."""
    spec = FOREIGN_MODELS[class_name]
    cls = _resolve(spec.target)
    config_path = folder / "config.json"
    config = read_json(config_path)
    check_config_values(config, str(config_path))
    try:
        ours = _resolve(spec.convert_config)(config)
        model = cls.from_config(ours)
    except (TypeError, ValueError, KeyError) as e:
        raise ModelFileError(f"cannot translate {config_path} ({class_name}) to {cls.__name__}: {e}") from None
    path = find_weights_file(folder, spec.weights, variant)
    state_dict = load_state_dict_file(path)
    from .common import ConversionError

    try:
        converted = _resolve(spec.convert_state_dict)(state_dict, model)
    except ConversionError as e:
        raise ModelFileError(f"config and weights disagree in {path}: {e}") from None
    load_model_weights(model, converted, str(path))
    return model


def load_component(
    folder: Path,
    library: str,
    class_name: str,
    *,
    variant: str | None = None,
    torch_dtype: torch.dtype | None = None,
):
    """Load the component stored in ``folder`` whose model_index entry is ``[library, class_name]``."""
    if not folder.is_dir():
        raise ModelFileError(f"missing component folder: {folder} (listed in model_index.json)")
    if library == "ldm_hub" or library.startswith("ldm_hub."):
        import ldm_hub

        cls = getattr(ldm_hub, class_name, None)
        if not isinstance(cls, type):
            raise ModelFileError(f"{folder}: model_index.json names unknown ldm_hub class {class_name!r}")
        from diffusers import ModelMixin, SchedulerMixin

        if issubclass(cls, SchedulerMixin):
            return load_scheduler(folder, cls)
        if not issubclass(cls, ModelMixin):  # a config-only component (LayoutTokenizer): its own from_pretrained
            return load_config_component(folder, cls)
        component = load_model_folder(folder, cls, variant=variant)
    elif class_name in FOREIGN_MODELS and library in ("diffusers", "latent_diffusion"):
        component = load_foreign_model(folder, class_name, variant=variant)
    elif library == "diffusers" and class_name.endswith("Scheduler"):
        import diffusers

        import ldm_hub

        ours = FOREIGN_SCHEDULERS.get(class_name)
        cls = getattr(ldm_hub, ours) if ours else getattr(diffusers, class_name, None)
        if cls is None or not isinstance(cls, type):
            raise ModelFileError(
                f"{folder}: model_index.json names scheduler class {class_name!r}, which diffusers "
                f"{diffusers.__version__} does not have (ldm_hub loads {sorted(FOREIGN_SCHEDULERS)} and diffusers' "
                "other schedulers)"
            )
        return load_scheduler(folder, cls)
    elif library == "transformers":
        import transformers

        cls = getattr(transformers, class_name, None)
        if cls is None:
            raise ModelFileError(f"{folder}: unknown transformers class {class_name!r}")
        kwargs = {"variant": variant} if variant and issubclass(cls, transformers.PreTrainedModel) else {}
        try:
            component = cls.from_pretrained(str(folder), **kwargs)  # a model's *.fp16.safetensors with variant=
        except (OSError, ValueError) as e:
            raise ModelFileError(f"cannot load {class_name} from {folder}: {e}") from None
    else:
        raise ModelFileError(f"{folder}: don't know how to load [{library!r}, {class_name!r}]")
    if torch_dtype is not None and isinstance(component, torch.nn.Module):
        component = component.to(torch_dtype)
    if isinstance(component, torch.nn.Module):
        component.eval()
    return component


def load_scheduler(folder: Path, cls: type):
    """A scheduler from ``folder/scheduler_config.json`` (either library's file works for either class)."""
    config = read_json(folder / "scheduler_config.json")
    check_config_values(config, str(folder / "scheduler_config.json"))
    if cls.__name__ == "PLMSScheduler" and config.get("_class_name") == "PNDMScheduler":
        if not config.get("skip_prk_steps", False):
            import warnings

            warnings.warn(
                f"{folder}: PNDMScheduler with Runge-Kutta warm-up steps is loaded as PLMSScheduler "
                "(skip_prk_steps=True), the CompVis PLMS sampler",
                stacklevel=3,
            )
    try:
        return cls.from_config(config)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{folder / 'scheduler_config.json'} is not a valid {cls.__name__} config: {e}") from None


def load_config_component(folder: Path, cls: type):
    """A weightless ldm_hub component (a ConfigMixin such as LayoutTokenizer) from its own config file."""
    read_json(folder / cls.config_name)  # a missing or corrupt file is named
    try:
        return cls.from_pretrained(folder)
    except (OSError, TypeError, ValueError) as e:
        raise ModelFileError(f"{folder / cls.config_name} is not a valid {cls.__name__} config: {e}") from None
