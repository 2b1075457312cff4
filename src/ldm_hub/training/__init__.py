"""Training with accelerate: the autoencoder (E, D) and the latent diffusion model (ε_θ, τ_θ).

=================  ===========================================================================
module             what
=================  ===========================================================================
``config``         the settings of both trainers (dataclasses; flags and JSON/YAML files)
``data``           datasets → checked, decoded, transformed batches in a resumable order
``losses``         L1, LPIPS (given weights), PatchGAN + adaptive weight, KL / VQ terms
``ema``            exponential moving average of the weights
``checkpoint``     atomic checkpoints with exact resume
``autoencoder``    :func:`train_autoencoder` (``ldm-hub train autoencoder``)
``ldm``            :func:`train_ldm` (``ldm-hub train ldm``)
``presets``        model sizes for the shapes dataset
=================  ===========================================================================

The per-mode side of training (which columns a row needs, τ_θ to build, y dropped for guidance) is the
conditioner's (:mod:`ldm_hub.conditioning`); ε_θ is called through :mod:`ldm_hub.models.denoiser`.
Imports: models, schedulers, conditioning, convert, pipelines, data, hub — never commands or demo.

Example:
    >>> from ldm_hub.training import LDMTrainingConfig, train_ldm
    >>> cfg = LDMTrainingConfig(output_dir="out", autoencoder="ae", conditioning="text", max_steps=100)
    >>> train_ldm(cfg)  # doctest: +SKIP
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "AutoencoderTrainingConfig": ".config",
    "LDMTrainingConfig": ".config",
    "BadRowError": ".data",
    "train_autoencoder": ".autoencoder",
    "train_ldm": ".ldm",
}
__all__ = ["AutoencoderTrainingConfig", "BadRowError", "LDMTrainingConfig", "train_autoencoder", "train_ldm"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
