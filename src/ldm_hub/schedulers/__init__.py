"""Samplers turning ε predictions into samples (SchedulerMixin + ConfigMixin), diffusers' API and config fields.

Imports: torch, diffusers' mixins, ``hub_mixin`` — never pipelines, convert, training, commands, demo, hub or
evaluation.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "DDPMScheduler": ".ddpm",
    "DDIMScheduler": ".ddim",
    "PLMSScheduler": ".plms",
    "DPMSolverMultistepScheduler": ".dpm_solver",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
