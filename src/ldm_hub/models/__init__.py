"""E, D and ε_θ: the autoencoders and the UNet (ModelMixin + ConfigMixin)."""

from .._lazy import lazy_exports

_EXPORTS = {"AutoencoderKL": ".autoencoder_kl", "VQModel": ".autoencoder_vq", "LDMUNet": ".unet"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
