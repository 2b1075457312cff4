"""Parity of ldm_hub's AutoencoderKL / VQModel against diffusers' with identical, fully random weights.

Every parameter of the diffusers model is randomised (tests/utils.randomize_) before conversion, so zero-init
output convs and identity norms cannot hide a wrong mapping. fp32 throughout; run with ``-s`` to see the max abs
differences reached.
"""

from __future__ import annotations

import json
import time

import diffusers
import pytest
import torch
from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer
from utils import max_abs_diff, randomize_

from ldm_hub.convert.common import ConversionError
from ldm_hub.convert.diffusers_autoencoder import (
    autoencoder_kl_from_diffusers,
    convert_autoencoder_kl_config,
    convert_autoencoder_state_dict,
    convert_vq_model_config,
    vq_model_from_diffusers,
)
from ldm_hub.models.autoencoder_blocks import Decoder, Encoder, VectorQuantizer
from ldm_hub.models.autoencoder_kl import AutoencoderKL
from ldm_hub.models.autoencoder_vq import VQModel

RTOL = 1e-4
ATOL_TINY = 1e-5  # tiny configs
ATOL_FULL = 1e-4  # published full-size configs (deeper, wider sums)

D, AD = "DownEncoderBlock2D", "AttnDownEncoderBlock2D"
UP_TYPE = {D: "UpDecoderBlock2D", AD: "AttnUpDecoderBlock2D"}


def diffusers_config(block_out_channels, down_types, **extra) -> dict:
    """A diffusers AutoencoderKL / VQModel config whose decoder mirrors ``down_types``."""
    return dict(
        block_out_channels=tuple(block_out_channels),
        down_block_types=tuple(down_types),
        up_block_types=tuple(UP_TYPE[t] for t in reversed(down_types)),
        **extra,
    )


# name: (diffusers config, image side). Tiny but structure-preserving: every block kind, shortcut, resample.
KL_CASES = {
    "kl_f2": (diffusers_config((32, 64), (D, D), layers_per_block=1, norm_num_groups=8), 16),
    "kl_f4_attn_levels": (diffusers_config((32, 64, 64), (D, AD, AD), layers_per_block=2, norm_num_groups=8), 32),
    "kl_f4_no_mid_attn": (
        diffusers_config(
            (32, 64, 64), (D, D, D), layers_per_block=2, norm_num_groups=8, mid_block_add_attention=False
        ),
        32,
    ),
    "kl_f8": (diffusers_config((32, 32, 64, 64), (D,) * 4, layers_per_block=1, norm_num_groups=8), 32),
}
VQ_CASES = {
    "vq_f2": (diffusers_config((32, 64), (D, D), layers_per_block=1, norm_num_groups=8, num_vq_embeddings=64), 16),
    "vq_f4": (
        diffusers_config((32, 64, 64), (D,) * 3, layers_per_block=2, norm_num_groups=8, num_vq_embeddings=64),
        32,
    ),
    "vq_f4_no_mid_attn": (
        diffusers_config(
            (32, 64, 64),
            (D,) * 3,
            layers_per_block=2,
            norm_num_groups=8,
            num_vq_embeddings=64,
            mid_block_add_attention=False,
        ),
        32,
    ),
    "vq_f4_embed_dim_attn": (
        diffusers_config(
            (32, 64, 64),
            (D, D, AD),
            layers_per_block=1,
            norm_num_groups=8,
            num_vq_embeddings=64,
            latent_channels=3,
            vq_embed_dim=4,
        ),
        32,
    ),
}

# The published configs (reference/ldm-zoo.md "Hub configs in diffusers format").
TEXT2IM_LARGE_256_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SUPER_RESOLUTION_VQ = {
    "_class_name": "VQModel",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "in_channels": 3,
    "latent_channels": 3,
    "layers_per_block": 2,
    "num_vq_embeddings": 8192,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "vq_embed_dim": None,
}


def check(label: str, ours: torch.Tensor, theirs: torch.Tensor, atol: float = ATOL_TINY) -> float:
    """assert_close with the stated tolerance, printing the max abs difference actually reached."""
    diff = max_abs_diff(ours, theirs)
    print(f"[parity] {label}: max abs diff {diff:.3e} (atol {atol:g}, |theirs| max {theirs.abs().max():.3g})")
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=atol)
    return diff


def build_kl(config: dict, seed: int = 0):
    theirs = randomize_(diffusers.AutoencoderKL(**config), seed).eval()
    ours = autoencoder_kl_from_diffusers(theirs.config, theirs.state_dict())
    return ours, theirs


def build_vq(config: dict, seed: int = 0):
    theirs = randomize_(diffusers.VQModel(**config), seed).eval()
    ours = vq_model_from_diffusers(theirs.config, theirs.state_dict())
    return ours, theirs


def image(side: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------------ KL parity
def assert_kl_parity(name: str, ours: AutoencoderKL, theirs, x: torch.Tensor, atol: float) -> None:
    with torch.no_grad():
        post, ref = ours.encode(x).latent_dist, theirs.encode(x).latent_dist
        check(f"{name} encode mean", post.mean, ref.mean, atol)
        check(f"{name} encode std", post.std, ref.std, atol)
        check(f"{name} encode logvar", post.logvar, ref.logvar, atol)
        check(f"{name} encode mode", post.mode(), ref.mode(), atol)
        z = post.sample(generator=torch.Generator().manual_seed(7))
        z_ref = ref.sample(generator=torch.Generator().manual_seed(7))
        check(f"{name} posterior.sample", z, z_ref, atol)
        check(f"{name} kl", post.kl(), ref.kl(), atol * 100)  # sums over c·h·w terms
        check(f"{name} nll", post.nll(z_ref), ref.nll(z_ref), atol * 100)

        latents = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
        check(f"{name} decode", ours.decode(latents).sample, theirs.decode(latents).sample, atol)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        check(
            f"{name} forward(sample_posterior)",
            ours(x, sample_posterior=True, generator=g1).sample,
            theirs(x, sample_posterior=True, generator=g2).sample,
            atol,
        )


@pytest.mark.parametrize("name", list(KL_CASES))
def test_kl_parity(name):
    config, side = KL_CASES[name]
    ours, theirs = build_kl(config)
    f = 2 ** (len(config["block_out_channels"]) - 1)
    assert ours.downsampling_factor == f
    x = image(side)
    assert_kl_parity(name, ours, theirs, x, ATOL_TINY)
    assert ours.encode(x).latent_dist.mean.shape == (2, 4, side // f, side // f)


def test_kl_attention_levels_and_mid_attention_reach_the_model():
    ours, _ = build_kl(KL_CASES["kl_f4_attn_levels"][0])
    assert ours.config.attention_levels == (False, True, True)
    assert len(ours.encoder.down[1].attentions[0].state_dict()) > 0
    assert len(ours.encoder.down[0].attentions[0].state_dict()) == 0
    assert len(ours.decoder.up[2].attentions[2].state_dict()) > 0  # decoder level 2 = diffusers up_blocks.0
    no_mid, _ = build_kl(KL_CASES["kl_f4_no_mid_attn"][0])
    assert len(no_mid.encoder.mid.attn.state_dict()) == 0 and len(no_mid.decoder.mid.attn.state_dict()) == 0


# ------------------------------------------------------------------------------------------------ VQ parity
def assert_vq_parity(name: str, ours: VQModel, theirs, x: torch.Tensor, atol: float, min_codes: int) -> None:
    with torch.no_grad():
        latents, latents_ref = ours.encode(x).latents, theirs.encode(x).latents
        check(f"{name} encode (pre-quant latents)", latents, latents_ref, atol)

        _, _, indices = ours.quantize(latents_ref)
        _, _, (_, _, indices_ref) = theirs.quantize(latents_ref)
        used = indices.unique().numel()
        print(f"[parity] {name}: latents use {used} distinct codes of {ours.config.num_vq_embeddings}")
        assert used >= min_codes, f"only {used} distinct codes hit; the quantiser test would be vacuous"
        mismatched = int((indices.flatten() != indices_ref.flatten()).sum())
        assert mismatched == 0, f"{mismatched} latent vectors picked a different code"

        out, out_ref = ours.decode(latents_ref), theirs.decode(latents_ref)
        check(f"{name} decode (quantised)", out.sample, out_ref.sample, atol)
        check(f"{name} commit_loss", out.commit_loss, out_ref.commit_loss, atol)
        raw = ours.decode(latents_ref, force_not_quantize=True).sample
        raw_ref = theirs.decode(latents_ref, force_not_quantize=True).sample
        check(f"{name} decode (force_not_quantize)", raw, raw_ref, atol)
        assert max_abs_diff(raw, out.sample) > 1e-3, "quantisation should change the decode"
        check(f"{name} forward", ours(x).sample, theirs(x).sample, atol)


@pytest.mark.parametrize("name", list(VQ_CASES))
def test_vq_parity(name):
    config, side = VQ_CASES[name]
    ours, theirs = build_vq(config)
    assert_vq_parity(name, ours, theirs, image(side), ATOL_TINY, min_codes=8)


@pytest.mark.parametrize("legacy", [True, False])
def test_vector_quantizer_loss_and_gradients_match_diffusers(legacy):
    ours = VectorQuantizer(num_embeddings=32, embedding_dim=4, beta=0.25, legacy=legacy)
    theirs = DiffusersVectorQuantizer(32, 4, beta=0.25, legacy=legacy)
    randomize_(theirs, 3)
    ours.load_state_dict(theirs.state_dict())
    z = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    q, loss, indices = ours(z1)
    q_ref, loss_ref, (_, _, indices_ref) = theirs(z2)
    assert indices.shape == (2, 5, 5) and torch.equal(indices.flatten(), indices_ref.flatten())
    check(f"VectorQuantizer(legacy={legacy}) z_q", q, q_ref)
    check(f"VectorQuantizer(legacy={legacy}) loss", loss, loss_ref)
    (q.square().sum() + loss).backward()
    (q_ref.square().sum() + loss_ref).backward()
    check(f"VectorQuantizer(legacy={legacy}) dL/dz (straight-through)", z1.grad, z2.grad)
    check(f"VectorQuantizer(legacy={legacy}) dL/dcodebook", ours.embedding.weight.grad, theirs.embedding.weight.grad)
    torch.testing.assert_close(ours.get_codebook_entry(indices), q.detach(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ save / load, compile
@pytest.mark.parametrize(
    "model",
    [
        lambda: AutoencoderKL(
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            attention_levels=(False, True),
            scaling_factor=0.5,
        ),
        lambda: VQModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            num_vq_embeddings=16,
            mid_block_attention=False,
            vq_embed_dim=5,
        ),
    ],
    ids=["kl", "vq"],
)
def test_save_pretrained_round_trip(model, tmp_path):
    ours = randomize_(model(), 4).eval()
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["_class_name"] == type(ours).__name__
    assert saved["block_out_channels"] == [32, 64]
    loaded = type(ours).from_pretrained(tmp_path).eval()
    public = lambda config: json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))  # noqa: E731
    assert public(loaded.config) == public(ours.config)
    x = image(16, batch=1)
    with torch.no_grad():
        assert torch.equal(loaded(x).sample, ours(x).sample)
    for k, v in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_modules_trace_with_fullgraph_compile():
    """No graph breaks (dynamo tracing only; the eager backend keeps this fast on CPU)."""
    kl = AutoencoderKL(
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, attention_levels=(False, True)
    ).eval()
    vq = VQModel(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, num_vq_embeddings=16).eval()
    x = image(16, batch=1)
    with torch.no_grad():
        for fn, arg in [
            (kl.encoder, x),
            (kl.decoder, torch.randn(1, 4, 8, 8)),
            (lambda x: kl(x, sample_posterior=True).sample, x),  # posterior sampling with the global RNG
            (lambda x: kl(x).sample, x),
            (lambda x: vq(x).sample, x),
            (lambda x: vq.decode(vq.encode(x).latents, force_not_quantize=True).sample, x),
        ]:
            compiled = torch.compile(fn, fullgraph=True, backend="eager")
            assert compiled(arg).shape[0] == 1
        torch._dynamo.reset()


def test_encoder_decoder_shapes_and_attention_levels_validation():
    enc = Encoder(3, 4, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8)
    dec = Decoder(4, 3, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8)
    assert enc(torch.randn(1, 3, 16, 16)).shape == (1, 8, 4, 4)
    assert dec(torch.randn(1, 4, 4, 4)).shape == (1, 3, 16, 16)
    assert len(dec.up[0].resnets) == 2  # layers_per_block + 1
    with pytest.raises(ValueError, match="attention_levels has 2 entries but block_out_channels has 3"):
        AutoencoderKL(block_out_channels=(32, 64, 64), norm_num_groups=8, attention_levels=(True, False))


# ------------------------------------------------------------------------------------------ the converter
def test_config_translation_of_published_configs():
    kl = convert_autoencoder_kl_config(TEXT2IM_LARGE_256_VAE)
    assert kl == dict(
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        norm_eps=1e-6,
        mid_block_attention=True,
        attention_levels=None,
        scaling_factor=0.18215,
        sample_size=256,
    )
    assert AutoencoderKL(**kl).downsampling_factor == 8
    vq = convert_vq_model_config(SUPER_RESOLUTION_VQ)
    assert vq["block_out_channels"] == (128, 256, 512) and vq["num_vq_embeddings"] == 8192
    assert vq["latent_channels"] == 3 and vq["vq_embed_dim"] is None and vq["commitment_beta"] == 0.25
    assert vq["scaling_factor"] == 0.18215  # what diffusers' VQModel assumes when config.json has none
    noattn = convert_vq_model_config({**SUPER_RESOLUTION_VQ, "mid_block_add_attention": False, "force_upcast": True})
    assert noattn["mid_block_attention"] is False
    attn = convert_vq_model_config(
        {
            **SUPER_RESOLUTION_VQ,
            "down_block_types": [D, D, AD],
            "up_block_types": [UP_TYPE[AD], UP_TYPE[D], UP_TYPE[D]],
        }
    )
    assert attn["attention_levels"] == (False, False, True)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"norm_type": "spatial"}, "norm_type"),
        ({"act_fn": "gelu"}, "act_fn"),
        ({"lookup_from_codebook": True}, "lookup_from_codebook"),
        (
            {"down_block_types": ["DownEncoderBlock2D", "CrossAttnDownBlock2D", "DownEncoderBlock2D"]},
            "down_block_types",
        ),
        ({"up_block_types": ["UpDecoderBlock2D"] * 2}, "up_block_types"),
        ({"up_block_types": ["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}, "up_block_types"),
        ({"quantizer_type": "fsq"}, "quantizer_type"),
    ],
)
def test_vq_config_translation_rejects_what_we_cannot_represent(change, field):
    with pytest.raises(ValueError, match=field):
        convert_vq_model_config({**SUPER_RESOLUTION_VQ, **change})


@pytest.mark.parametrize(
    "change, field",
    [
        ({"use_quant_conv": False}, "use_quant_conv"),
        ({"use_post_quant_conv": False}, "use_post_quant_conv"),
        ({"shift_factor": 0.1159}, "shift_factor"),
        ({"latents_mean": [0.0] * 4}, "latents_mean"),
    ],
)
def test_kl_config_translation_rejects_what_we_cannot_represent(change, field):
    with pytest.raises(ValueError, match=field):
        convert_autoencoder_kl_config({**TEXT2IM_LARGE_256_VAE, **change})


def test_converter_names_a_missing_key():
    ours, theirs = build_kl(KL_CASES["kl_f2"][0])
    state = dict(theirs.state_dict())
    del state["decoder.up_blocks.1.resnets.0.conv_shortcut.weight"]
    with pytest.raises(
        ConversionError, match=r"missing key 'decoder\.up_blocks\.1\.resnets\.0\.conv_shortcut\.weight'"
    ):
        convert_autoencoder_state_dict(state, ours)


def test_converter_names_a_shape_mismatch():
    ours, theirs = build_vq(VQ_CASES["vq_f2"][0])
    state = dict(theirs.state_dict())
    state["quantize.embedding.weight"] = torch.zeros(128, 3)
    with pytest.raises(
        ConversionError, match=r"shape mismatch for 'quantize\.embedding\.weight'.*\(128, 3\).*\(64, 3\)"
    ):
        convert_autoencoder_state_dict(state, ours)


def test_converter_names_an_unexpected_key():
    ours, theirs = build_kl(KL_CASES["kl_f4_no_mid_attn"][0])
    _, with_attention = build_kl({**KL_CASES["kl_f4_no_mid_attn"][0], "mid_block_add_attention": True})
    with pytest.raises(ConversionError, match=r"unexpected key.*mid_block\.attentions\.0"):
        convert_autoencoder_state_dict(with_attention.state_dict(), ours)


def test_converter_reads_legacy_attention_names():
    """Old Hub files (CompVis/ldm-*) store the attention as query/key/value/proj_attn."""
    ours, theirs = build_kl(KL_CASES["kl_f4_attn_levels"][0])
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    legacy = {}
    for key, value in theirs.state_dict().items():
        for new, old in renames.items():
            key = key.replace(new, old)
        legacy[key] = value
    converted = convert_autoencoder_state_dict(legacy, ours)
    for key, value in ours.state_dict().items():
        assert torch.equal(converted[key], value), key


# ---------------------------------------------------------------------------------- published full-size configs
@pytest.mark.slow
def test_full_size_ldm_text2im_large_256_kl():
    config = {k: v for k, v in TEXT2IM_LARGE_256_VAE.items() if not k.startswith("_")}
    start = time.perf_counter()
    ours, theirs = build_kl(config)
    assert ours.config.scaling_factor == 0.18215 and ours.downsampling_factor == 8
    x = image(256, batch=1)
    assert_kl_parity("text2im-large-256 KL f8", ours, theirs, x, ATOL_FULL)
    print(f"[time] full-size KL f8 parity at 256²: {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
def test_full_size_super_resolution_vq_f4():
    config = {k: v for k, v in SUPER_RESOLUTION_VQ.items() if not k.startswith("_")}
    start = time.perf_counter()
    ours, theirs = build_vq(config)
    x = image(256, batch=1)
    with torch.no_grad():
        assert ours.encode(x).latents.shape == (1, 3, 64, 64)
    assert_vq_parity("SR/celebahq VQ f4", ours, theirs, x, ATOL_FULL, min_codes=64)
    print(f"[time] full-size VQ f4 parity at 256²: {time.perf_counter() - start:.1f} s")
