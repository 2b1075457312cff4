"""LDMPipeline: one sampling loop, every conditioning mode.

``ldm_pipeline`` (``__call__`` as numbered steps; it asks the conditioner, never switches on a mode),
``checks`` (the call's model-free checks), ``image_to_image`` (SDEdit's start), ``acceleration`` (fused QKV,
``torch.compile``, the whole-loop CUDA graph), ``cuda_graph`` (recording and replay).

Imports: models, schedulers, conditioning, convert, hub, the low-level helpers — never training, commands, demo
or evaluation.
"""

import logging

from .._lazy import lazy_exports


class _EmptyFp32ModulesFilter(logging.Filter):
    """diffusers 0.42 warns on every ``model.to(dtype)`` even when no module must stay in fp32 (the list
    it prints is empty); drop exactly that message, keep every other one."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("There are modules in") and "kept in float32: []." in message)


logging.getLogger("diffusers.models.modeling_utils").addFilter(_EmptyFp32ModulesFilter())


_EXPORTS = {"LDMPipeline": ".ldm_pipeline"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
