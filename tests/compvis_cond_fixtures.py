"""Random ``cond_stage_model.*`` weights in the original CompVis key layout, for any ``cond_stage_config``.

The original condition encoders are not all importable (x-transformers' BERTEmbedder is not in the PyPI copy of
``ldm/``), so this builds *stand-in* module trees with the original attribute names and shapes — parameters only,
no forward — and randomises every parameter with :func:`utils.randomize_`. Their ``state_dict()`` is what a
CompVis checkpoint stores under ``cond_stage_model.``; the BERT stand-in also serves as the module object that
diffusers' ``convert_ldm_bert_checkpoint`` reads attributes from.

Example (for a Lightning-style test checkpoint)::

    from compvis_cond_fixtures import TINY_COND_STAGE_CONFIGS, cond_stage_state_dict
    sd = cond_stage_state_dict(TINY_COND_STAGE_CONFIGS["layout2img-openimages256"], seed=0,
                               prefix="cond_stage_model.")
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from utils import randomize_

from ldm_hub.convert.compvis_cond import (
    BERT_EMBEDDER_PARAMS,
    CLASS_EMBEDDER_PARAMS,
    COMPVIS_ENCODERS,
    SPATIAL_RESCALER_PARAMS,
    XTRANSFORMERS_DIM_HEAD,
    XTRANSFORMERS_FF_MULT,
    XTRANSFORMERS_HEADS,
)

BERT = COMPVIS_ENCODERS + "BERTEmbedder"
CLASS = COMPVIS_ENCODERS + "ClassEmbedder"
RESCALER = COMPVIS_ENCODERS + "SpatialRescaler"

# The published cond_stage_configs (CompVis/latent-diffusion YAMLs), by zoo name.
COND_STAGE_CONFIGS: dict[str, Any] = {
    "txt2img-1p4B": {"target": BERT, "params": {"n_embed": 1280, "n_layer": 32}},
    "text2img256": {"target": BERT, "params": {"n_embed": 640, "n_layer": 32}},
    "layout2img-openimages256": {
        "target": BERT,
        "params": {"n_embed": 512, "n_layer": 16, "vocab_size": 8192, "max_seq_len": 92, "use_tokenizer": False},
    },
    "semantic_synthesis256": {"target": RESCALER, "params": {"n_stages": 2, "in_channels": 182, "out_channels": 3}},
    "semantic_synthesis512": {"target": RESCALER, "params": {"n_stages": 2, "in_channels": 182, "out_channels": 3}},
    "bsr_sr": {"target": "torch.nn.Identity"},
    "inpainting_big": "__is_first_stage__",
    "cin256": {"target": CLASS, "params": {"embed_dim": 512, "key": "class_label"}},
    "cin256-v2": {"target": CLASS, "params": {"n_classes": 1001, "embed_dim": 512, "key": "class_label"}},
    "celeba256": "__is_unconditional__",
    "ffhq256": "__is_unconditional__",
    "lsun_beds256": "__is_unconditional__",
    "lsun_churches256": "__is_unconditional__",
}

# Scaled-down versions with the same structure: the BERTs keep their vocabulary, positions and 8 × 64 heads (an
# x-transformers default the YAML cannot change) and shrink width and depth; class / semantic shrink the width.
# The UNet's context_dim must equal the BERT's n_embed / the ClassEmbedder's embed_dim.
TINY_COND_STAGE_CONFIGS: dict[str, Any] = {
    **COND_STAGE_CONFIGS,
    "txt2img-1p4B": {"target": BERT, "params": {"n_embed": 32, "n_layer": 2}},
    "text2img256": {"target": BERT, "params": {"n_embed": 40, "n_layer": 2}},
    "layout2img-openimages256": {
        "target": BERT,
        "params": {"n_embed": 32, "n_layer": 2, "vocab_size": 8192, "max_seq_len": 92, "use_tokenizer": False},
    },
    "cin256": {"target": CLASS, "params": {"embed_dim": 32, "key": "class_label"}},
    "cin256-v2": {"target": CLASS, "params": {"n_classes": 1001, "embed_dim": 32, "key": "class_label"}},
}


def _params(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {**defaults, **dict(config.get("params") or {})}


class _Holder(nn.Module):
    """An attribute bag: a module whose children are given as keyword arguments."""

    def __init__(self, **children: nn.Module):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


def _x_attention(dim: int) -> nn.Module:
    inner = XTRANSFORMERS_HEADS * XTRANSFORMERS_DIM_HEAD
    return _Holder(
        to_q=nn.Linear(dim, inner, bias=False),
        to_k=nn.Linear(dim, inner, bias=False),
        to_v=nn.Linear(dim, inner, bias=False),
        to_out=nn.Linear(inner, dim),
    )


def _x_feed_forward(dim: int) -> nn.Module:
    inner = XTRANSFORMERS_FF_MULT * dim
    return _Holder(
        net=nn.Sequential(nn.Sequential(nn.Linear(dim, inner), nn.GELU()), nn.Dropout(0.0), nn.Linear(inner, dim))
    )


def bert_embedder_standin(params: Mapping[str, Any]) -> nn.Module:
    """``BERTEmbedder(**params)``'s attribute tree: ``.transformer`` = an x-transformers ``TransformerWrapper``."""
    p = {**BERT_EMBEDDER_PARAMS, **params}
    dim, depth, vocab, length = p["n_embed"], p["n_layer"], p["vocab_size"], p["max_seq_len"]
    layers = nn.ModuleList()
    for _ in range(depth):  # each x-transformers layer is [norm, block, residual (no parameters)]
        layers.append(nn.ModuleList([nn.LayerNorm(dim), _x_attention(dim), nn.Identity()]))
        layers.append(nn.ModuleList([nn.LayerNorm(dim), _x_feed_forward(dim), nn.Identity()]))
    transformer = _Holder(
        token_emb=nn.Embedding(vocab, dim),
        pos_emb=_Holder(emb=nn.Embedding(length, dim)),
        attn_layers=_Holder(layers=layers),
        norm=nn.LayerNorm(dim),
        to_logits=nn.Linear(dim, vocab),
    )
    return _Holder(transformer=transformer)


def class_embedder_standin(params: Mapping[str, Any]) -> nn.Module:
    p = {**CLASS_EMBEDDER_PARAMS, **params}
    return _Holder(embedding=nn.Embedding(p["n_classes"], p["embed_dim"]))


def spatial_rescaler_standin(params: Mapping[str, Any]) -> nn.Module:
    p = {**SPATIAL_RESCALER_PARAMS, **params}
    return _Holder(channel_mapper=nn.Conv2d(p["in_channels"], p["out_channels"], 1, bias=p["bias"]))


STANDINS = {BERT: bert_embedder_standin, CLASS: class_embedder_standin, RESCALER: spatial_rescaler_standin}


def original_cond_stage(cond_stage_config: Any, seed: int = 0) -> nn.Module | None:
    """A randomised stand-in with the original attribute names, or None when the model stores no cond stage
    of its own (Identity, unconditional, and the inpainting model's aliased first stage)."""
    if isinstance(cond_stage_config, str) or cond_stage_config["target"] not in STANDINS:
        return None
    module = STANDINS[cond_stage_config["target"]](dict(cond_stage_config.get("params") or {}))
    return randomize_(module, seed).eval()


def cond_stage_state_dict(cond_stage_config: Any, seed: int = 0, prefix: str = "") -> dict[str, torch.Tensor]:
    """Random ``cond_stage_model.*`` tensors for ``cond_stage_config`` (keys prefixed with ``prefix``).

    Empty for Identity / unconditional / ``__is_first_stage__`` (the inpainting checkpoint's aliased copies of
    ``first_stage_model.*`` are the autoencoder's business).
    """
    module = original_cond_stage(cond_stage_config, seed)
    if module is None:
        return {}
    return {prefix + key: value.detach().clone() for key, value in module.state_dict().items()}


def import_original_encoders():
    """The sdkit ``ldm.modules.encoders.modules``, imported with a stub ``open_clip`` (imported there, unused by
    ClassEmbedder); sys.modules is restored afterwards."""
    names = ("open_clip", "ldm.modules.encoders.modules")
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules["open_clip"] = types.ModuleType("open_clip")
    try:
        return importlib.import_module("ldm.modules.encoders.modules")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
