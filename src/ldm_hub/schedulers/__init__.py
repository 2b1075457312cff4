"""Samplers turning ε predictions into samples (SchedulerMixin + ConfigMixin)."""

from .._lazy import lazy_exports

_EXPORTS = {
    "DDPMScheduler": ".ddpm",
    "DDIMScheduler": ".ddim",
    "PLMSScheduler": ".plms",
    "DPMSolverMultistepScheduler": ".dpm_solver",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
