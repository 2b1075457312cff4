"""ldm_hub: Latent Diffusion Models (Rombach et al., CVPR 2022) as a Hugging Face-native library.

Example:
    >>> from ldm_hub import LDMPipeline
    >>> pipe = LDMPipeline.from_pretrained("path/to/model")  # doctest: +SKIP
    >>> image = pipe("a red circle and a blue square").images[0]  # doctest: +SKIP
"""

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "LDMPipeline": ".pipelines.ldm_pipeline",
    "AutoencoderKL": ".models.autoencoder_kl",
    "VQModel": ".models.autoencoder_vq",
    "LDMUNet": ".models.unet",
    "LDMBertModel": ".conditioning.text",
    "LayoutTokenizer": ".conditioning.layout",
    "LayoutPlanner": ".conditioning.layout_planner",
    "ClassEmbedder": ".conditioning.class_label",
    "SemanticMapEncoder": ".conditioning.semantic_map",
    "DDPMScheduler": ".schedulers.ddpm",
    "DDIMScheduler": ".schedulers.ddim",
    "PLMSScheduler": ".schedulers.plms",
    "DPMSolverMultistepScheduler": ".schedulers.dpm_solver",
    "default_model_path": ".defaults",
}
__all__ = sorted(_EXPORTS)
# diffusers' pipeline loader looks its loadable base classes up in a component's library (getattr(ldm_hub,
# "ModelMixin")) to check components passed to DiffusionPipeline.from_pretrained: serve them, not as public API.
_LOADER_BASES = {"ModelMixin": "diffusers", "SchedulerMixin": "diffusers"}
__getattr__ = lazy_exports(__name__, {**_EXPORTS, **_LOADER_BASES})


def __dir__():
    return sorted(list(globals()) + __all__)
