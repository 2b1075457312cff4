"""LDMPipeline: one sampling loop, every conditioning mode.

``ldm_pipeline`` (``__call__`` as numbered steps; it asks the conditioner, never switches on a mode),
``acceleration`` (fused QKV, ``torch.compile``, the whole-loop CUDA graph), ``cuda_graph`` (recording and replay).

Imports: models, schedulers, conditioning, convert, hub, the low-level helpers — never training, commands, demo
or evaluation.
"""

from .._lazy import lazy_exports

_EXPORTS = {"LDMPipeline": ".ldm_pipeline"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
