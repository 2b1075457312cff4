"""Fast paths (issue 7): each gives the plain path's images, and each is shown to have actually run.

fused QKV (same output, fused matrix present and the separate projections unused, same state dict), the compiled
UNet (same images, no graph breaks), attention finite in fp16 / bf16 with large activations, and the memory-lean
decode (sliced == plain to 1e-5, tiled ≈ plain, decoder input bounded by the tile).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.latent_diffusion import pipeline_latent_diffusion
from diffusers_repos import TINY_BERT, TINY_SR_UNET, TINY_TEXT2IM_UNET, text2im_pipeline
from utils import randomize_

from ldm_hub import LDMPipeline
from ldm_hub.convert.diffusers_text import ldm_bert_from_diffusers
from ldm_hub.convert.diffusers_unet import unet_from_diffusers
from ldm_hub.models import AutoencoderKL, LDMUNet, VQModel
from ldm_hub.models.attention import Attention

PROMPT = "a red circle and a blue square"
STEPS = 4


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def tiny_unet(kind: str) -> LDMUNet:
    if kind == "cross":
        theirs = randomize_(UNet2DConditionModel(**TINY_TEXT2IM_UNET), 0)
    else:  # plain self-attention blocks (the SR UNet)
        theirs = randomize_(UNet2DModel(**TINY_SR_UNET), 0)
    return unet_from_diffusers(dict(theirs.config), theirs.state_dict()).eval()


def unet_inputs(unet: LDMUNet, batch: int = 2):
    gen = torch.Generator().manual_seed(1)
    cfg = unet.config
    sample = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen)
    context = (
        None if cfg.cross_attention_dim is None else torch.randn(batch, 7, cfg.cross_attention_dim, generator=gen)
    )
    return sample, torch.tensor(500), context


# ---------------------------------------------------------------- fused QKV
@pytest.mark.parametrize("kind", ["cross", "self"])
def test_fused_qkv_same_output_same_keys_and_used(kind, tmp_path):
    unet = tiny_unet(kind)
    sample, t, context = unet_inputs(unet)
    keys = list(unet.state_dict())
    with torch.no_grad():
        plain = unet(sample, t, encoder_hidden_states=context).sample

    unet.fuse_qkv_projections()
    attentions = [m for m in unet.modules() if isinstance(m, Attention)]
    assert attentions and all(a.is_fused for a in attentions)
    for a in attentions:  # [W_K; W_V] for cross-attention, [W_Q; W_K; W_V] otherwise
        parts = 2 if a.is_cross_attention else 3
        assert a.fused_weight.shape == (parts * a.heads * a.head_dim, a.k_proj.in_features)
    assert any(a.is_cross_attention for a in attentions) == (kind == "cross")

    # Proof the fused matrix is what runs: the separate projections it replaces are never called.
    called = []
    replaced = [a.k_proj for a in attentions] + [a.v_proj for a in attentions]
    replaced += [a.q_proj for a in attentions if not a.is_cross_attention]
    hooks = [p.register_forward_hook(lambda *_: called.append(1)) for p in replaced]
    with torch.no_grad():
        fused = unet(sample, t, encoder_hidden_states=context).sample
    for h in hooks:
        h.remove()
    assert not called
    print(f"\nfused QKV ({kind}) max|diff| {max_diff(fused, plain):.2e}")
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)

    # Saving keeps the unfused model's keys, and the reloaded model gives the same output.
    assert list(unet.state_dict()) == keys
    unet.save_pretrained(tmp_path)
    reloaded = LDMUNet.from_pretrained(tmp_path).eval()
    assert list(reloaded.state_dict()) == keys
    assert not any(a.is_fused for a in reloaded.modules() if isinstance(a, Attention))
    with torch.no_grad():
        again = reloaded(sample, t, encoder_hidden_states=context).sample
    torch.testing.assert_close(again, plain, rtol=1e-4, atol=1e-5)

    unet.unfuse_qkv_projections()
    assert not any(a.is_fused for a in attentions)
    with torch.no_grad():
        torch.testing.assert_close(unet(sample, t, encoder_hidden_states=context).sample, plain, rtol=0, atol=0)


# ---------------------------------------------------------------- pipeline fast paths
@pytest.fixture(scope="module")
def text_repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "repo"
    text2im_pipeline().save_pretrained(path)
    return path


def load(path) -> LDMPipeline:
    pipe = LDMPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images(pipe) -> torch.Tensor:
    return pipe(PROMPT, guidance_scale=3.0, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                output_type="pt").images  # fmt: skip


def test_pipeline_fused_qkv_same_images(text_repo):
    pipe = load(text_repo)
    plain = images(pipe)
    pipe.fuse_qkv_projections()
    assert all(a.is_fused for a in pipe.unet.modules() if isinstance(a, Attention))
    fused = images(pipe)
    print(f"\npipeline fused QKV max|diff| {max_diff(fused, plain):.2e}")
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
    pipe.unfuse_qkv_projections()
    torch.testing.assert_close(images(pipe), plain, rtol=0, atol=0)


@pytest.mark.parametrize("fuse", [False, True])
def test_enable_compile_same_images_no_graph_breaks(text_repo, fuse):
    from torch._dynamo.utils import counters

    pipe = load(text_repo)
    plain = images(pipe)
    torch._dynamo.reset()
    counters.clear()
    if fuse:
        pipe.fuse_qkv_projections()
    pipe.enable_compile(backend="eager")
    assert type(pipe.unet) is LDMUNet  # compiled in place: same module, same save_pretrained
    compiled = images(pipe)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 1  # the UNet really went through dynamo
    graphs = counters["stats"]["unique_graphs"]
    print(f"\ncompiled (fuse={fuse}) max|diff| {max_diff(compiled, plain):.2e}; graphs {graphs}")
    torch.testing.assert_close(compiled, plain, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


# ---------------------------------------------------------------- attention in half precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attention_finite_in_half_precision_with_large_activations(dtype):
    """Logits q·k of ~1e5 overflow fp16 (max 65504) if formed before scaling; SDPA must keep them finite."""
    torch.manual_seed(0)
    attn = Attention(query_dim=64, heads=2, head_dim=32, context_dim=48).eval()
    x = 150 * torch.randn(2, 16, 64)
    context = 150 * torch.randn(2, 9, 48)
    with torch.no_grad():
        q = attn.q_proj(x)
        k = attn.k_proj(context)
        assert (q[0, :, None] * k[0, None]).sum(-1).abs().max() > torch.finfo(torch.float16).max  # would overflow
        ref = attn(x, context)
        out = attn.to(dtype)(x.to(dtype), context.to(dtype))
    assert torch.isfinite(out).all()
    err = max_diff(out, ref) / ref.abs().max().item()
    print(f"\nattention {dtype}: relative max|diff| vs fp32 {err:.2e}")
    assert err < 0.05


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ldm_bert_finite_in_half_precision(dtype):
    theirs = randomize_(
        pipeline_latent_diffusion.LDMBertModel(pipeline_latent_diffusion.LDMBertConfig(**TINY_BERT)), 0
    )
    with torch.no_grad():  # large activations: the token embeddings scaled up
        theirs.model.embed_tokens.weight.mul_(200)
    ours = ldm_bert_from_diffusers(dict(theirs.config.to_dict()), theirs.state_dict()).eval()
    ids = torch.randint(0, TINY_BERT["vocab_size"], (2, 77), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = ours(ids).last_hidden_state
        out = ours.to(dtype)(ids).last_hidden_state
    assert torch.isfinite(ref).all() and torch.isfinite(out).all()
    print(f"\nLDMBert {dtype}: max|diff| vs fp32 {max_diff(out, ref):.2e} (max |ref| {ref.abs().max():.1f})")


# ---------------------------------------------------------------- memory-lean decode
def tiny_vae(kind: str):
    common = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8)
    if kind == "kl":
        vae = AutoencoderKL(**common)
    else:
        vae = VQModel(**common, num_vq_embeddings=32)
    return randomize_(vae, 3).eval()


class DecoderInputs:
    """Records the shape of every input the decoder D sees."""

    def __init__(self, vae):
        self.shapes = []
        self.handle = vae.decoder.register_forward_pre_hook(lambda _, args: self.shapes.append(tuple(args[0].shape)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_sliced_decode_equals_plain_one_image_at_a_time(kind):
    vae = tiny_vae(kind)
    z = torch.randn(3, vae.config.latent_channels, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = vae.decode(z).sample
        vae.enable_slicing()
        with DecoderInputs(vae) as seen:
            sliced = vae.decode(z).sample
    assert [s[0] for s in seen.shapes] == [1, 1, 1]
    print(f"\nsliced ({kind}) max|diff| {max_diff(sliced, plain):.2e}")
    # one image per call may take torch's native small-input convolution (see models.layers), rounding differently
    torch.testing.assert_close(sliced, plain, rtol=0, atol=1e-5)
    vae.disable_slicing()


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_tiled_decode_close_to_plain_and_bounded(kind):
    vae = tiny_vae(kind)
    f = vae.downsampling_factor
    z = torch.randn(2, vae.config.latent_channels, 40, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = vae.decode(z).sample
        vae.enable_tiling(tile_size=16 * f, tile_overlap=8 * f)
        with DecoderInputs(vae) as seen:
            tiled = vae.decode(z).sample
        # one tile covering the latent: exactly the plain decode
        vae.enable_tiling(tile_size=40 * f, tile_overlap=8 * f)
        whole = vae.decode(z).sample
    assert tiled.shape == plain.shape
    assert len(seen.shapes) > 1 and max(max(s[-2:]) for s in seen.shapes) <= 16
    torch.testing.assert_close(whole, plain, rtol=0, atol=0)
    diff = max_diff(tiled, plain)
    mean = (tiled - plain).abs().mean().item()
    print(f"\ntiled ({kind}) max|diff| {diff:.2e}, mean {mean:.2e}, output range {plain.abs().max():.2f}")
    assert mean < 0.05 * plain.abs().max().item()  # GroupNorm and mid attention see one tile: approximate
    vae.disable_tiling()


def test_tiling_rejects_bad_sizes():
    vae = tiny_vae("kl")
    with pytest.raises(ValueError, match="multiples of f=2"):
        vae.enable_tiling(tile_size=15)
    with pytest.raises(ValueError, match="tile_overlap < tile_size"):
        vae.enable_tiling(tile_size=16, tile_overlap=16)


# ---------------------------------------------------------------- in-place inference
@pytest.mark.parametrize("kind", ["cross", "self"])
def test_inference_in_place_updates_match_autograd_path_and_keep_inputs(kind):
    """Under no_grad the ResBlocks / transformer blocks add residuals into fresh buffers in place; the result must
    equal the autograd path's, and the caller's tensors must come back untouched."""
    unet = tiny_unet(kind)
    sample, t, context = unet_inputs(unet)
    sample_copy = sample.clone()
    context_copy = None if context is None else context.clone()
    with torch.no_grad():
        fast = unet(sample, t, encoder_hidden_states=context).sample
    with torch.enable_grad():
        plain = unet(sample, t, encoder_hidden_states=context).sample
    assert plain.requires_grad  # the autograd path really ran
    # (no_grad also pads heads narrower than 16 for the CPU attention kernel: equal up to rounding)
    torch.testing.assert_close(fast, plain.detach(), rtol=1e-4, atol=1e-5)
    assert torch.equal(sample, sample_copy)
    assert context is None or torch.equal(context, context_copy)


# ---------------------------------------------------------------- guidance as one batched call
def test_guidance_is_one_batched_unet_call_per_step(text_repo):
    pipe = load(text_repo)
    batches = []
    handle = pipe.unet.register_forward_pre_hook(lambda _, args: batches.append(args[0].shape[0]))
    try:
        images(pipe)
    finally:
        handle.remove()
    assert batches == [2] * STEPS  # [uncond; cond] stacked: one ε_θ call per step, never two


# ---------------------------------------------------------------- no host sync anywhere in a call
@pytest.mark.parametrize(
    "scheduler_name", ["DDIMScheduler", "PLMSScheduler", "DPMSolverMultistepScheduler", "DDPMScheduler"]
)
def test_whole_call_runs_on_the_meta_device(text_repo, scheduler_name):
    """On the meta device tensors have no values: any .item(), bool(), int() or copy to the host raises. A call that
    completes there (text encoding, guided loop, scheduler updates) provably reads nothing back from the device."""
    import ldm_hub

    pipe = load(text_repo)
    pipe.scheduler = getattr(ldm_hub, scheduler_name).from_config(pipe.scheduler.config)
    pipe.to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.zeros(1, device="meta").item()  # the premise: a host read fails here
    out = pipe(PROMPT, guidance_scale=3.0, num_inference_steps=STEPS, output_type="latent").images
    assert out.device.type == "meta" and out.shape == (1, 4, 8, 8)


# ---------------------------------------------------------------- whole-loop graph capture
class RerunGraph:
    """CPU stand-in for ``torch.cuda.CUDAGraph`` (no CUDA here): ``replay`` re-runs the captured function on the
    static buffers into the static output, which is what replaying the recorded kernels does."""

    def __init__(self):
        self.loop = None
        self.run = None

    def replay(self):
        self.loop.static_output.copy_(self.run(*self.loop.static_inputs))


def test_captured_loop_bookkeeping_matches_the_plain_loop(text_repo):
    from contextlib import nullcontext

    from ldm_hub.pipelines.cuda_graph import CapturedLoop, GraphCache

    pipe = load(text_repo)
    gen = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)

    def plain(z):
        return pipe(PROMPT, guidance_scale=3.0, num_inference_steps=STEPS, latents=z, output_type="latent").images

    with torch.no_grad():
        context = _guided_context(pipe, torch.device("cpu"))
        run = pipe._loop_runner(STEPS, 3.0, {"eta": 0.0}, torch.device("cpu"))
        graph = RerunGraph()
        loop = CapturedLoop(
            run, [z1, context, None], warmup=1, graph_factory=lambda: graph, capture=lambda g: nullcontext()
        )
        graph.loop, graph.run = loop, run
        first = loop(z1, context, None)
        second = loop(z2, context, None)
    assert loop.replays == 2
    assert pipe.scheduler.step_index is None  # the runs stepped private scheduler copies, not the pipeline's
    torch.testing.assert_close(first, plain(z1), rtol=1e-5, atol=1e-6)  # same kernels, same order
    torch.testing.assert_close(second, plain(z2), rtol=1e-5, atol=1e-6)  # new inputs reached the static buffers
    assert not torch.equal(first, second)  # results are clones, not the shared static output
    with pytest.raises(ValueError, match="captured for shape"):
        loop(torch.randn(2, 4, 8, 8), context, None)

    cache = GraphCache(size=2)
    built = []
    for key in ["a", "b", "a", "c", "a", "b"]:
        cache.get(key, lambda key=key: built.append(key) or key)
    assert built == ["a", "b", "c", "b"] and cache.captures == 4  # LRU: "b" was dropped when "c" came in


def test_enable_cuda_graph_off_cuda_runs_the_plain_loop(text_repo, caplog):
    pipe = load(text_repo)
    plain = images(pipe)
    pipe.enable_cuda_graph()
    with caplog.at_level("WARNING", logger="ldm_hub.pipelines.ldm_pipeline"):
        again = images(pipe)
    assert "not CUDA" in caplog.text
    torch.testing.assert_close(again, plain, rtol=0, atol=0)
    pipe.disable_cuda_graph()
    with pytest.raises(ValueError, match="own CUDA graphs"):
        pipe.enable_compile(backend="eager", mode="reduce-overhead")
        pipe.enable_cuda_graph()
    torch._dynamo.reset()

    other = load(text_repo)  # the other order: graphs first, then a compile mode with CUDA graphs of its own
    other.enable_cuda_graph()
    for mode in ("reduce-overhead", "max-autotune"):
        with pytest.raises(ValueError, match="CUDA graphs of its own"):
            other.enable_compile(backend="eager", mode=mode)
    other.enable_compile(backend="eager", mode="max-autotune-no-cudagraphs")  # allowed
    torch._dynamo.reset()


def test_enable_compile_text_encoder_and_decoder_no_graph_breaks(text_repo):
    from torch._dynamo.utils import counters

    pipe = load(text_repo)
    plain = images(pipe)
    torch._dynamo.reset()
    counters.clear()
    pipe.enable_compile(("unet", "vae", "cond_encoder"), backend="eager")
    compiled = images(pipe)
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 3  # ε_θ, D and τ_θ each went through dynamo
    torch.testing.assert_close(compiled, plain, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown component"):
        pipe.enable_compile(("text",))
    torch._dynamo.reset()


# ---------------------------------------------------------------- CUDA only
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_graph_loop_same_images_captured_once_replayed(text_repo):
    pipe = load(text_repo).to("cuda")
    plain = images(pipe)
    pipe.enable_cuda_graph()
    first, second = images(pipe), images(pipe)
    assert pipe._cuda_graphs.captures == 1
    (loop,) = pipe._cuda_graphs.loops.values()
    assert loop.replays == 2
    torch.testing.assert_close(first, plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


@cuda
def test_cuda_loop_has_no_device_syncs(text_repo):
    pipe = load(text_repo).to("cuda")
    pipe(PROMPT, guidance_scale=3.0, num_inference_steps=STEPS, output_type="latent")  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            context = _guided_context(pipe, torch.device("cuda"))
            run = pipe._loop_runner(STEPS, 3.0, {"eta": 0.0}, torch.device("cuda"))
            run(torch.randn(1, 4, 8, 8, device="cuda"), context, None)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_finite_and_close_to_fp32(text_repo, dtype):
    ref = images(load(text_repo).to("cuda"))
    pipe = LDMPipeline.from_pretrained(text_repo, torch_dtype=dtype).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    out = images(pipe)
    assert torch.isfinite(out).all()
    assert max_diff(out, ref) < 0.05


# ---------------------------------------------------------------- small heads on the CPU
@pytest.mark.parametrize("head_dim", [4, 8, 12])
def test_small_heads_padded_for_the_cpu_kernel_same_attention(head_dim, monkeypatch):
    """Heads narrower than 16 attending over >= 128 keys are zero-padded to 16 for torch's CPU flash kernel (faster
    there); the attention equals unpadded SDPA's, the padded call is what ran, and a short context stays unpadded."""
    import ldm_hub.models.attention as attention_module

    torch.manual_seed(0)
    self_attn = Attention(query_dim=8 * head_dim, heads=8, head_dim=head_dim).eval()
    cross_attn = Attention(query_dim=8 * head_dim, heads=8, head_dim=head_dim, context_dim=24).eval()
    x, context = torch.randn(2, 128, 8 * head_dim), torch.randn(2, 9, 24)
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.shape[-1], kwargs.get("scale")))
        return real(q, k, v, **kwargs)

    with torch.no_grad():
        q, k, v = (self_attn._split_heads(p(x)) for p in (self_attn.q_proj, self_attn.k_proj, self_attn.v_proj))
        reference = real(q, k, v)
        monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
        padded = attention_module._sdpa(q, k, v)
        assert seen == [(16, head_dim**-0.5)]
        out = self_attn(x)  # the module goes the same way
        cross_attn(x, context)  # 9 keys: unpadded
    assert seen[1][0] == 16 and seen[2] == (head_dim, None)
    torch.testing.assert_close(padded, reference, rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    with torch.enable_grad():  # autograd keeps plain SDPA
        plain = self_attn(x)
    torch.testing.assert_close(out, plain.detach(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- channels_last
@pytest.mark.parametrize("kind", ["cross", "self"])
def test_channels_last_unet_same_output(kind):
    """The UNet runs with channels_last weights and input (a GPU layout option, measured by the benchmark's
    --channels-last) and gives the contiguous model's output."""
    unet = tiny_unet(kind)
    sample, t, context = unet_inputs(unet)
    with torch.no_grad():
        plain = unet(sample, t, encoder_hidden_states=context).sample
        unet.to(memory_format=torch.channels_last)
        assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        out = unet(sample.contiguous(memory_format=torch.channels_last), t, encoder_hidden_states=context).sample
    torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scheduler_name", ["DDIMScheduler", "PLMSScheduler", "DPMSolverMultistepScheduler"])
def test_loop_runner_repeatable_and_equal_to_the_plain_loop(text_repo, scheduler_name):
    """The function a CUDA graph records: run twice (warm-up, capture) it gives the plain loop's latents each time
    (fresh step state per run; multistep schedulers' history included), sharing the scheduler's tables."""
    import ldm_hub

    pipe = load(text_repo)
    pipe.scheduler = getattr(ldm_hub, scheduler_name).from_config(pipe.scheduler.config)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        plain = pipe(PROMPT, guidance_scale=3.0, num_inference_steps=STEPS, latents=z, output_type="latent").images
        context = _guided_context(pipe, torch.device("cpu"))
        run = pipe._loop_runner(STEPS, 3.0, {}, torch.device("cpu"))
        first, second = run(z, context, None), run(z, context, None)
    torch.testing.assert_close(first, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    runs = dict(zip(run.__code__.co_freevars, (c.cell_contents for c in run.__closure__)))["runs"]
    assert runs[0] is not runs[1] and runs[0].timesteps is runs[1].timesteps  # own state, shared tables


def _guided_context(pipe, device):
    """τ_θ of PROMPT with the unconditional half first, (2, L, d), as the pipeline's text conditioner makes it."""
    y = {"prompt": PROMPT}
    kwargs = dict(num_images_per_prompt=1, batch_size=1, generator=None, height=None, width=None, device=device)
    return pipe.conditioner.prepare(y, guide=True, **kwargs).context
