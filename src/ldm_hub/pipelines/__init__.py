"""LDMPipeline: one sampling loop, every conditioning mode."""

from .._lazy import lazy_exports

_EXPORTS = {"LDMPipeline": ".ldm_pipeline"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
