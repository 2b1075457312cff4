"""Model sizes for training on the shapes dataset (64×64 images, f4 autoencoder, 16×16 latents).

``*-shapes`` are the sizes the default models are trained at (about the sizes of the calibration run in issue 4:
a 0.9M-parameter f4 autoencoder, 6.7M-parameter text / layout UNets with a 0.8M LDMBert, a 4.4M super-resolution
UNet, so that text + super-resolution + autoencoder fit 30 MB in fp16); ``*-tiny`` the sizes the tests train in
seconds.
Published sizes live in :mod:`ldm_hub.presets`.
"""

from __future__ import annotations

from typing import Any

AUTOENCODER_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    # f4: 64×64×3 → 16×16×4.
    "kl-f4-shapes": (
        "AutoencoderKL",
        dict(
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=16,
            mid_block_attention=False,
            scaling_factor=1.0,
            sample_size=64,
        ),
    ),
    "vq-f4-shapes": (
        "VQModel",
        dict(
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            latent_channels=3,
            num_vq_embeddings=1024,
            norm_num_groups=16,
            mid_block_attention=False,
            sample_size=64,
        ),
    ),
    "kl-f4-tiny": (
        "AutoencoderKL",
        dict(
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            mid_block_attention=False,
            scaling_factor=1.0,
            sample_size=64,
        ),
    ),
    "vq-f4-tiny": (
        "VQModel",
        dict(
            block_out_channels=(8, 16, 16),
            layers_per_block=1,
            latent_channels=3,
            num_vq_embeddings=64,
            norm_num_groups=4,
            mid_block_attention=False,
            sample_size=64,
        ),
    ),
}

# The UNet per conditioning; in_channels, out_channels and cross_attention_dim are filled in from the
# autoencoder and the condition encoder.
LDM_PRESETS: dict[str, dict[str, Any]] = {
    "shapes-text": dict(
        sample_size=16,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        attention_levels=(False, True, True),
        num_attention_heads=4,
        transformer_depth=1,
    ),
    "shapes-layout": dict(
        sample_size=16,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        attention_levels=(True, True, True),
        num_attention_heads=4,
        transformer_depth=1,
    ),
    "shapes-superres": dict(
        sample_size=16,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        attention_levels=(False, False, True),
        num_attention_heads=None,
        attention_head_dim=32,
        attention_norm_eps=1e-5,
    ),
    "shapes-semantic": dict(
        sample_size=16,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        attention_levels=(False, True, True),
        num_attention_heads=None,
        attention_head_dim=32,
        attention_norm_eps=1e-5,
    ),
    "shapes-unconditional": dict(
        sample_size=16,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        attention_levels=(False, False, True),
        num_attention_heads=None,
        attention_head_dim=32,
        attention_norm_eps=1e-5,
    ),
    "tiny-text": dict(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(False, True),
        num_attention_heads=2,
        norm_num_groups=8,
    ),
    "tiny-layout": dict(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(False, True),
        num_attention_heads=2,
        norm_num_groups=8,
    ),
    "tiny-superres": dict(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(False, True),
        num_attention_heads=None,
        attention_head_dim=16,
        norm_num_groups=8,
        attention_norm_eps=1e-5,
    ),
    "tiny-semantic": dict(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(False, True),
        num_attention_heads=None,
        attention_head_dim=16,
        norm_num_groups=8,
        attention_norm_eps=1e-5,
    ),
    "tiny-unconditional": dict(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(False, True),
        num_attention_heads=None,
        attention_head_dim=16,
        norm_num_groups=8,
        attention_norm_eps=1e-5,
    ),
}

# τ_θ for text and layout when trained from scratch (LDMBertModel; vocab_size and max_position_embeddings come
# from the tokenizer). Keyed by the UNet preset's size prefix.
TEXT_ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "shapes": dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, attention_head_dim=32, intermediate_size=512
    ),
    "tiny": dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, attention_head_dim=16, intermediate_size=64
    ),
}

# The noise schedule of the LDM KL models (CompVis "linear" = diffusers "scaled_linear"), T = 1000 steps.
NOISE_SCHEDULE: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
)
# The sampler saved with a trained pipeline: DDIM on the same betas, the settings of the released LDMs.
SAMPLER_CONFIG: dict[str, Any] = dict(NOISE_SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def encoder_preset_for(unet_preset: str) -> dict[str, Any]:
    prefix = unet_preset.split("-")[0]
    return dict(TEXT_ENCODER_PRESETS.get(prefix, TEXT_ENCODER_PRESETS["shapes"]))
