"""The names a user picks from, shared by the CLI and the demo: samplers (``--scheduler``, the demo's dropdown)
and model dtypes (``--dtype``). Plain tables and one lookup, no argparse; imports the schedulers only when a class
is asked for, so the CLI's ``--help`` stays fast. Imported by ``commands`` and ``demo``; imports nothing above
``schedulers``."""

from __future__ import annotations

# user-facing sampler name → ldm_hub scheduler class
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "plms": "PLMSScheduler",
    "ddpm": "DDPMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}

# user-facing dtype name → torch attribute (getattr(torch, DTYPES[name]))
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def scheduler_class(name: str) -> type:
    """The ldm_hub scheduler class for a user-facing sampler name (a key of :data:`SCHEDULERS`).

    Example:
        >>> scheduler_class("dpm++").__name__
        'DPMSolverMultistepScheduler'
    """
    from .schedulers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, PLMSScheduler

    classes = {cls.__name__: cls for cls in (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, PLMSScheduler)}
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(sorted(SCHEDULERS))}")
    return classes[SCHEDULERS[name]]
