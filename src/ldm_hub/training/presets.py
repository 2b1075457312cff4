"""Model sizes for training on the shapes dataset: a thin re-export of the one registry, :mod:`ldm_hub.presets`.

``*-shapes`` are the sizes the default models are trained at, ``*-tiny`` the sizes the tests train in seconds;
the tables accept the older names too (``tiny-text`` for ``unet-text-tiny``, ...). Published sizes are in the same
registry.
"""

from ..presets import (
    AUTOENCODER_PRESETS,
    LDM_PRESETS,
    NOISE_SCHEDULE,
    SAMPLER_CONFIG,
    TEXT_ENCODER_PRESETS,
    encoder_preset_for,
)

__all__ = [
    "AUTOENCODER_PRESETS",
    "LDM_PRESETS",
    "NOISE_SCHEDULE",
    "SAMPLER_CONFIG",
    "TEXT_ENCODER_PRESETS",
    "encoder_preset_for",
]
