"""E, D and ε_θ: the autoencoders and the UNet (ModelMixin + ConfigMixin), and the one ε_θ(z_t, t, y) call.

``autoencoder_kl`` / ``autoencoder_vq`` (E, D) on the shared ``autoencoder_blocks``; ``unet`` (ε_θ) with
``attention`` and ``layers``; ``denoiser`` (the one call that stacks or cross-attends y, guided or not, for
sampling and training); ``first_stage`` (f and KL-vs-VQ, answered once); ``cpu_kernels`` (CPU speed tricks,
behind the plain forwards).

Imports: torch, diffusers' mixins, ``tiling``, ``loading``, ``hub_mixin`` — never pipelines, convert, training,
commands, demo, hub or evaluation (``from_single_file`` reaches the converter at call time, by name).
"""

from .._lazy import lazy_exports

_EXPORTS = {"AutoencoderKL": ".autoencoder_kl", "VQModel": ".autoencoder_vq", "LDMUNet": ".unet"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
