"""Conversion: the only code that knows foreign key names and file layouts.

``compvis`` (original CompVis ``.ckpt`` + YAML; with ``compvis_config``, ``compvis_keys``, ``compvis_cond`` and
``checkpoint``, the safe file reader), ``diffusers_format`` (model folders and diffusers' component renames) and
``diffusers_*`` (diffusers' / transformers' weights → ours). A converter returns components and configs; it may
import models, conditioning, schedulers and the low-level helpers, never the pipeline (the pipeline calls it).
"""
