"""Speed of ldm_hub against diffusers on identical weights: ratio ldm_hub / diffusers per call.

Three cases (``--case``): one UNet call (diffusers' UNet2DConditionModel vs LDMUNet), one VAE decode (diffusers'
AutoencoderKL vs ours), and the whole text-to-image pipeline end to end (diffusers' LDMTextToImagePipeline vs
LDMPipeline: tokenizer, LDMBert, DDIM loop with classifier-free guidance, decode). The diffusers side is built
from a config and randomised; the same weights reach ldm_hub through the library's own loaders; outputs are
checked equal before any timing. Calls are interleaved (A B, B A, ...) in one process so drift and noise hit
both sides alike; the report gives the median of the per-round ratios and their spread (min-max and IQR).

    python benchmarks/bench_vs_diffusers.py --config tiny --rounds 7
    python benchmarks/bench_vs_diffusers.py --config text2im-large-256 --batch 2 --rounds 5 --json out.json
    python benchmarks/bench_vs_diffusers.py --case pipeline --config tiny --steps 50 --rounds 11
    python benchmarks/bench_vs_diffusers.py --case vae-decode --config text2im-large-256 --batch 1 --rounds 5

On a GPU (``--device cuda``, ``--dtype bf16|fp16|fp32``) each side runs in a chosen form: ``--ours eager|fast``
(fast: fused q/k/v, ``torch.compile(fullgraph=True)`` of ε_θ (and of D and τ_θ for the pipeline) in a mode
without CUDA graphs of its own, then CUDA-graph capture: the single call for a UNet case, the whole 50-step
loop with scheduler and guidance inside for the pipeline) and ``--theirs eager|best`` (best: diffusers' UNet
``torch.compile(mode="reduce-overhead")`` + channels_last, the best-tuned form of baselines.md). The pipeline
case then also reports the text encoder, the loop and the decoder separately, and every CUDA case the peak
memory of each side. ``--suite gpu`` runs the whole list of issue 7's GPU cases in one process and writes one
JSON file (benchmarks/gpu_suite.sh is the prepared script for a lent GPU machine).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = ("unet", "vae-decode", "pipeline")
PROMPT = "a red circle and a blue square"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

CONFIGS = {
    # block_out 32/64, one layer, 16x16 latents: the tiny config of baselines.md
    "tiny": dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ),
    # CompVis/ldm-text2im-large-256 (872M parameters)
    "text2im-large-256": dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1280,
        attention_head_dim=8,
    ),
    # CompVis/ldm-super-resolution-4x-openimages (concat-conditioned, no cross-attention): tests' SR_UNET
    "sr-4x": None,
    "tiny-sr": None,
}


def _test_builders():
    """tests/diffusers_repos.py: the diffusers-built LDM repos (random weights) the parity tests use."""
    sys.path.insert(0, str(ROOT / "tests"))
    import diffusers_repos

    return diffusers_repos


# ------------------------------------------------------------------------------------------------ set-up
class Setup:
    """Where and how the two sides run: device, dtype, ``ours`` in {eager, fast}, ``theirs`` in {eager, best}."""

    def __init__(self, device="cpu", dtype="fp32", ours="eager", theirs="eager", fuse_qkv=False,
                 compile_mode=None, compile_backend="inductor", channels_last=False):  # fmt: skip
        self.device = torch.device(device)
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.ours = ours
        self.theirs = theirs
        self.fuse_qkv = fuse_qkv or ours == "fast"
        self.cuda = self.device.type == "cuda"
        # ours "fast": inductor without its own CUDA graphs (we capture ourselves on CUDA)
        self.compile_mode = compile_mode or ("max-autotune-no-cudagraphs" if self.cuda else None)
        self.compile_backend = compile_backend
        self.channels_last = channels_last  # ldm_hub's UNet in channels_last (measured, not assumed, on a GPU)

    def compile_kwargs(self) -> dict:
        kwargs = {"backend": self.compile_backend}
        if self.compile_mode and self.compile_backend == "inductor":
            kwargs["mode"] = self.compile_mode
        return kwargs

    def theirs_best(self, module):
        """diffusers' best-tuned form: channels_last + torch.compile(mode="reduce-overhead") (CUDA graphs)."""
        module.to(memory_format=torch.channels_last)
        kwargs = {"backend": self.compile_backend}
        if self.compile_backend == "inductor":
            kwargs["mode"] = "reduce-overhead"
        return torch.compile(module, **kwargs)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)


def _randomize(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # every parameter random, zero-initialised layers included
            p.normal_(0, 0.02 if p.ndim > 1 else 0.1)
    return model


_MASTERS: dict = {}


def _cached(key, build):
    """fp32 CPU masters built once per process (the full-size models take a while to randomise and convert);
    every case works on its own deep copy."""
    if key not in _MASTERS:
        _MASTERS[key] = build()
    return tuple(copy.deepcopy(m) for m in _MASTERS[key])


def build_pair(name: str, seed: int = 0):
    """(diffusers UNet, ldm_hub UNet) with identical random weights, both in eval mode, fp32, on the CPU."""
    return _cached(("unet", name, seed), lambda: _build_pair(name, seed))


def _build_pair(name: str, seed: int = 0):
    from diffusers import UNet2DConditionModel, UNet2DModel

    from ldm_hub.convert.diffusers_unet import unet_from_diffusers

    if CONFIGS[name] is None:  # the super-resolution UNet (UNet2DModel)
        repos = _test_builders()
        theirs = _randomize(UNet2DModel(**(repos.SR_UNET if name == "sr-4x" else repos.TINY_SR_UNET)), seed).eval()
    else:
        theirs = _randomize(UNet2DConditionModel(**CONFIGS[name]), seed).eval()
    ours = unet_from_diffusers(dict(theirs.config), theirs.state_dict()).eval()
    return theirs, ours


def inputs(model, batch: int, seed: int = 0, device="cpu", dtype=torch.float32):
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen)
    dim = getattr(cfg, "cross_attention_dim", None)
    context = None if dim is None else torch.randn(batch, 77, dim, generator=gen).to(device, dtype)
    return sample.to(device, dtype), torch.tensor(500, device=device), context


def timed(fn, setup: Setup | None = None) -> float:
    if setup is not None:
        setup.sync()
    start = time.perf_counter()
    fn()
    if setup is not None:
        setup.sync()
    return time.perf_counter() - start


def flops_per_call_fn(fn) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - FLOP counting is informative only
        return None


def forward(model, sample, t, context):
    """A UNet call; UNet2DModel (the SR UNet) takes no context argument."""
    return model(sample, t) if context is None else model(sample, t, encoder_hidden_states=context)


def flops_per_call(model, args) -> float | None:
    return flops_per_call_fn(lambda: forward(model, *args))


def _tolerance(setup: Setup) -> float:
    return 1e-4 if setup.dtype == torch.float32 else 5e-2  # half precision: same result to a few 1e-2


def _check(out, ref, setup: Setup, what: str) -> float:
    """max|diff| of the two timed forms; an error when not finite, or (fp32) when they differ (half precision: a
    number to report, the fp32 parity check before the cast is the correctness check)."""
    diff = (out.float() - ref.float()).abs().max().item()
    scale = max(1.0, ref.float().abs().max().item())
    if not (torch.isfinite(out).all() and torch.isfinite(ref).all()):
        raise AssertionError(f"{what}: non-finite output in {setup.dtype_name}")
    if setup.dtype == torch.float32 and not diff <= _tolerance(setup) * scale:
        raise AssertionError(f"{what}: ldm_hub and diffusers differ by {diff:.2e} (> {_tolerance(setup) * scale:.1e})")
    return diff


# ------------------------------------------------------------------------------------------------ cases
def unet_case(config: str, batch: int, setup: Setup):
    """(call ours, call theirs, parity max|diff|, FLOP per call or None) for one UNet call."""
    theirs, ours = build_pair(config)
    theirs.to(setup.device)
    ours.to(setup.device)
    args = inputs(theirs, batch, device=setup.device)
    with torch.no_grad():  # parity in fp32 first: the same function before any cast or fast path
        ref = forward(theirs, *args).sample
        out = forward(ours, *args).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 if setup.device.type == "cpu" else 2e-3)
    flops = flops_per_call(theirs, args)
    del args, ref, out

    theirs.to(setup.device, setup.dtype)
    ours.to(setup.device, setup.dtype)
    sample, t, context = inputs(theirs, batch, device=setup.device, dtype=setup.dtype)
    if setup.fuse_qkv:
        ours.fuse_qkv_projections()
    if setup.channels_last:
        ours.to(memory_format=torch.channels_last)
        sample = sample.contiguous(memory_format=torch.channels_last)
    run_theirs = setup.theirs_best(theirs) if setup.theirs == "best" else theirs

    def eager_ours(x, c):
        return forward(ours, x, t, c).sample

    run_ours = eager_ours
    if setup.ours == "fast":
        ours.compile(fullgraph=True, **setup.compile_kwargs())
        if setup.cuda:  # the compiled call recorded as one CUDA graph, replayed with one launch
            from ldm_hub.pipelines.cuda_graph import CapturedLoop

            with torch.no_grad():
                run_ours = CapturedLoop(eager_ours, [sample, context])

    def call_ours():
        with torch.no_grad():
            return run_ours(sample, context)

    def call_theirs():
        with torch.no_grad():
            return forward(run_theirs, sample, t, context).sample

    parity = _check(call_ours(), call_theirs(), setup, "UNet call")  # the timed forms agree too
    return call_ours, call_theirs, parity, flops


def vae_decode_case(config: str, batch: int, setup: Setup):
    """One decode D(z) of the text2im autoencoder (f = 8; tiny or the published kl-f8)."""
    from diffusers import AutoencoderKL

    from ldm_hub.convert.diffusers_autoencoder import autoencoder_kl_from_diffusers

    repos = _test_builders()
    vae_config = repos.TINY_KL if config.startswith("tiny") else repos.TEXT2IM_VAE
    theirs = repos.randomize_(AutoencoderKL(**vae_config), 0).eval()
    ours = autoencoder_kl_from_diffusers(dict(theirs.config), theirs.state_dict()).eval()
    f = 2 ** (len(vae_config["block_out_channels"]) - 1)
    side = vae_config["sample_size"] // f
    z = torch.randn(batch, vae_config["latent_channels"], side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = theirs.decode(z).sample
        out = ours.decode(z).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    flops = flops_per_call_fn(lambda: theirs.decode(z))

    theirs.to(setup.device, setup.dtype)
    ours.to(setup.device, setup.dtype)
    z = z.to(setup.device, setup.dtype)
    if setup.theirs == "best":
        theirs.decoder = setup.theirs_best(theirs.decoder)

    def decode_ours(x):
        return ours.decode(x).sample

    if setup.ours == "fast":
        ours.decoder.compile(fullgraph=True, **setup.compile_kwargs())
        if setup.cuda:
            from ldm_hub.pipelines.cuda_graph import CapturedLoop

            with torch.no_grad():
                decode_ours = CapturedLoop(decode_ours, [z])

    def call_ours():
        with torch.no_grad():
            return decode_ours(z)

    def call_theirs():
        with torch.no_grad():
            return theirs.decode(z).sample

    parity = _check(call_ours(), call_theirs(), setup, "VAE decode")
    return call_ours, call_theirs, parity, flops


class Phases:
    """Per-phase seconds of one pipeline call: text encoder, loop, decoder (loop = total - the other two)."""

    def __init__(self):
        self.encode, self.decode, self.total = [], [], []

    def summary(self) -> dict:
        med = statistics.median
        if not self.total:
            return {}
        encode, decode, total = med(self.encode), med(self.decode), med(self.total)
        return {"ms_text_encoder": 1e3 * encode, "ms_decode": 1e3 * decode, "ms_loop": 1e3 * (total - encode - decode),
                "ms_total": 1e3 * total}  # fmt: skip


def pipeline_case(config: str, batch: int, steps: int, guidance_scale: float, setup: Setup):
    """The text-to-image pipeline end to end: ``batch`` images from one prompt, ``steps`` DDIM steps with
    classifier-free guidance, decoded to numpy (diffusers' LDMTextToImagePipeline vs LDMPipeline loaded from the
    folder diffusers saved). Also returns per-phase timers: text encoder, decoder (each timed on its own call)
    and the whole call."""
    from ldm_hub import LDMPipeline

    def build():
        theirs = _test_builders().text2im_pipeline(full=not config.startswith("tiny"))
        with tempfile.TemporaryDirectory() as folder:
            theirs.save_pretrained(folder)
            ours = LDMPipeline.from_pretrained(folder)
        return theirs, ours

    theirs, ours = _cached(("pipeline", config), build)
    ours.set_progress_bar_config(disable=True)
    theirs.set_progress_bar_config(disable=True)
    prompts = [PROMPT] * batch
    dev = setup.device

    def call(pipe):
        gen = torch.Generator(dev).manual_seed(0)
        with torch.no_grad():
            return pipe(prompts, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="np",
                        generator=gen).images  # fmt: skip

    theirs.to(dev)
    ours.to(dev)
    ref, out = call(theirs), call(ours)  # parity in fp32, before any cast or fast path
    parity = float(abs(out.astype("float64") - ref.astype("float64")).max())
    if parity > 2 / 255:
        raise AssertionError(f"pipeline images differ by {parity:.2e} > 2/255")
    theirs.to(setup.device, setup.dtype)
    ours.to(setup.device, setup.dtype)
    if setup.fuse_qkv:
        ours.fuse_qkv_projections()
    if setup.ours == "fast":
        ours.enable_compile(("unet", "vae", "cond_encoder"), **setup.compile_kwargs())
        if setup.cuda:
            ours.enable_cuda_graph()
    if setup.theirs == "best":
        theirs.unet = setup.theirs_best(theirs.unet)
    ref, out = call(theirs), call(ours)  # the timed forms: finite, and recorded how far apart (information)
    if not (abs(out).max() < float("inf") and abs(ref).max() < float("inf")):
        raise AssertionError("non-finite images in the timed form")
    call.timed_form_diff = float(abs(out.astype("float64") - ref.astype("float64")).max())

    # phase inputs, made once
    z = torch.randn(
        batch, 4, ours.unet.config.sample_size, ours.unet.config.sample_size, device=dev, dtype=setup.dtype
    )
    phases = {"ours": Phases(), "theirs": Phases()}

    def encode_ours():
        with torch.no_grad():
            ours.conditioner.prepare(
                {"prompt": prompts}, guide=guidance_scale != 1, num_images_per_prompt=1, batch_size=1,
                generator=None, height=None, width=None, device=dev,
            )  # fmt: skip

    def encode_theirs():  # what LDMTextToImagePipeline does: tokenize [""] * B and the prompts, run LDMBert on each
        with torch.no_grad():
            for texts in ([""] * batch, prompts):
                ids = theirs.tokenizer(texts, padding="max_length", max_length=77, truncation=True,
                                       return_tensors="pt").input_ids  # fmt: skip
                theirs.bert(ids.to(dev))[0]

    def decode_ours():
        with torch.no_grad():
            ours.decode_latents(z)

    def decode_theirs():
        with torch.no_grad():
            theirs.vqvae.decode(z / theirs.vqvae.config.scaling_factor)

    def call_ours():
        ph = phases["ours"]
        ph.encode.append(timed(encode_ours, setup))
        ph.decode.append(timed(decode_ours, setup))
        ph.total.append(timed(lambda: call(ours), setup))

    def call_theirs():
        ph = phases["theirs"]
        ph.encode.append(timed(encode_theirs, setup))
        ph.decode.append(timed(decode_theirs, setup))
        ph.total.append(timed(lambda: call(theirs), setup))

    call_ours.phases = phases["ours"]
    call_theirs.phases = phases["theirs"]
    call_ours.timed_form_diff = call.timed_form_diff
    return call_ours, call_theirs, parity, None


def peak_memory(fn, setup: Setup) -> float | None:
    """Peak bytes allocated during one call above what was allocated before it (CUDA only)."""
    if not setup.cuda:
        return None
    setup.sync()
    before = torch.cuda.memory_allocated(setup.device)
    torch.cuda.reset_peak_memory_stats(setup.device)
    fn()
    setup.sync()
    return float(torch.cuda.max_memory_allocated(setup.device) - before)


# ------------------------------------------------------------------------------------------------ driver
def run(
    config: str,
    batch: int,
    rounds: int,
    warmup: int,
    threads: int | None,
    case: str = "unet",
    steps: int = 50,
    guidance_scale: float = 3.0,
    *,
    setup: Setup,
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    if case == "unet":
        call_ours, call_theirs, parity, flops = unet_case(config, batch, setup=setup)
    elif case == "vae-decode":
        call_ours, call_theirs, parity, flops = vae_decode_case(config, batch, setup=setup)
    else:
        call_ours, call_theirs, parity, flops = pipeline_case(config, batch, steps, guidance_scale, setup=setup)
    is_pipeline = case == "pipeline"
    clock = None if is_pipeline else setup  # the pipeline case syncs inside its own phase timers

    for _ in range(warmup):
        call_ours()
        call_theirs()
    if is_pipeline:  # warm-up calls are not results
        for fn in (call_ours, call_theirs):
            fn.phases.__init__()
    t_ours, t_theirs, ratios = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            a, b = timed(call_ours, clock), timed(call_theirs, clock)
        else:
            b, a = timed(call_theirs, clock), timed(call_ours, clock)
        if is_pipeline:  # the whole call only, not the phase calls made beside it
            a, b = call_ours.phases.total[-1], call_theirs.phases.total[-1]
        t_ours.append(a)
        t_theirs.append(b)
        ratios.append(a / b)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    result = {
        "case": case,
        "config": config,
        "batch": batch,
        "steps": steps if is_pipeline else None,
        "fuse_qkv": setup.fuse_qkv,
        "device": str(setup.device) if not setup.cuda else torch.cuda.get_device_name(setup.device),
        "dtype": setup.dtype_name,
        "ours": setup.ours,
        "theirs": setup.theirs,
        "compile_mode": setup.compile_mode if setup.ours == "fast" else None,
        "channels_last_ldm_hub": setup.channels_last,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "rounds": rounds,
        "parity_max_abs_diff": parity,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_iqr": [q[0], q[2]],
        "ms_ldm_hub_median": 1000 * statistics.median(t_ours),
        "ms_diffusers_median": 1000 * statistics.median(t_theirs),
        "gflop_per_call": flops / 1e9 if flops else None,
        "tflops_ldm_hub": flops / statistics.median(t_ours) / 1e12 if flops else None,
        "tflops_diffusers": flops / statistics.median(t_theirs) / 1e12 if flops else None,
    }
    if is_pipeline:
        result["timed_form_max_abs_diff"] = call_ours.timed_form_diff
        result["phases_ldm_hub"] = call_ours.phases.summary()
        result["phases_diffusers"] = call_theirs.phases.summary()
    if setup.cuda:
        result["peak_bytes_ldm_hub"] = peak_memory(call_ours, setup)
        result["peak_bytes_diffusers"] = peak_memory(call_theirs, setup)
    return result


def describe(result: dict) -> str:
    what = {"unet": "UNet call", "vae-decode": "VAE decode", "pipeline": f"pipeline call ({result['steps']} steps)"}
    line = (
        f"[{result['case']} {result['config']} batch {result['batch']}, {result['dtype']} on {result['device']}, "
        f"ldm_hub {result['ours']}{' + fused QKV' if result['fuse_qkv'] and result['ours'] == 'eager' else ''}"
        f"{' + channels_last' if result.get('channels_last_ldm_hub') else ''} vs "
        f"diffusers {result['theirs']}, {result['rounds']} interleaved rounds, "
        f"{result['threads']} threads] ldm_hub {result['ms_ldm_hub_median']:.1f} ms, "
        f"diffusers {result['ms_diffusers_median']:.1f} ms per {what[result['case']]}; ratio ldm_hub/diffusers "
        f"median {result['ratio_median']:.3f} (min {result['ratio_min']:.3f}, max {result['ratio_max']:.3f}, "
        f"IQR {result['ratio_iqr'][0]:.3f}-{result['ratio_iqr'][1]:.3f}); parity max|diff| "
        f"{result['parity_max_abs_diff']:.1e}"
    )
    if result.get("tflops_ldm_hub"):
        line += f"; {result['tflops_ldm_hub']:.2f} vs {result['tflops_diffusers']:.2f} TFLOP/s"
    if "phases_ldm_hub" in result:
        a, b = result["phases_ldm_hub"], result["phases_diffusers"]
        line += "; " + ", ".join(
            f"{k[3:]} {a[k]:.1f}/{b[k]:.1f} ms" for k in ("ms_text_encoder", "ms_loop", "ms_decode")
        )
    if result.get("peak_bytes_ldm_hub") is not None:
        line += (
            f"; peak {result['peak_bytes_ldm_hub'] / 2**30:.2f} vs {result['peak_bytes_diffusers'] / 2**30:.2f} GiB"
        )
    return line


# The GPU cases of issue 7: (case, config, batch, dtype, ours, theirs), the targets' cases first so that a
# time budget cuts the least important ones.
GPU_SUITE = [
    ("pipeline", "text2im-large-256", 1, "bf16", "fast", "best"),  # target: <= 150 ms per guided image
    ("pipeline", "text2im-large-256", 8, "bf16", "fast", "best"),  # target: 8 images <= 350 ms
    ("unet", "text2im-large-256", 16, "bf16", "fast", "best"),  # target: >= 55% of the bf16 peak
    ("unet", "text2im-large-256", 2, "bf16", "fast", "best"),
    ("unet", "sr-4x", 1, "bf16", "fast", "best"),
    ("vae-decode", "text2im-large-256", 1, "bf16", "fast", "best"),
    ("pipeline", "text2im-large-256", 1, "bf16", "eager", "eager"),
    ("unet", "text2im-large-256", 2, "bf16", "eager", "eager"),
    ("unet", "text2im-large-256", 16, "bf16", "eager", "eager"),
    ("unet", "sr-4x", 1, "bf16", "eager", "eager"),
    ("vae-decode", "text2im-large-256", 1, "bf16", "eager", "eager"),
    ("unet", "text2im-large-256", 2, "fp16", "eager", "eager"),
    ("pipeline", "text2im-large-256", 1, "fp16", "eager", "eager"),
    ("unet", "text2im-large-256", 16, "bf16", "fast+channels_last", "best"),  # does channels_last pay for ldm_hub?
]
# The same list at toy size: proves the suite's code paths on any device (CI runs it on the CPU).
TOY = {"text2im-large-256": "tiny", "sr-4x": "tiny-sr"}


def bf16_peak_tflops(device) -> float | None:
    """Dense bf16 matmul rate of this GPU (8192³, mean of 10 after 3 warm-ups), the 100% of "% of peak"."""
    if torch.device(device).type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize(device)
    return 2 * 8192**3 * 10 / (time.perf_counter() - start) / 1e12


def run_suite(args, toy: bool) -> list[dict]:
    results = []
    start = time.perf_counter()
    peak = bf16_peak_tflops(args.device)
    for case, config, batch, dtype, ours, theirs in GPU_SUITE:
        if args.budget_s and time.perf_counter() - start > args.budget_s:
            results.append({"case": case, "config": config, "batch": batch, "dtype": dtype, "ours": ours,
                            "theirs": theirs, "skipped": f"time budget of {args.budget_s} s spent"})  # fmt: skip
            print(f"skipped {case} {config} batch {batch} {dtype} {ours}/{theirs}: time budget spent", flush=True)
            continue
        if toy:
            config = TOY[config]
            dtype = dtype if args.device != "cpu" else "fp32"
        setup = Setup(args.device, dtype, ours.split("+")[0], theirs, compile_mode=args.compile_mode,
                      compile_backend=args.compile_backend, channels_last=ours.endswith("+channels_last"))  # fmt: skip
        try:
            result = run(config, batch, args.rounds, args.warmup, args.threads, case, args.steps,
                         args.guidance_scale, setup=setup)  # fmt: skip
            if peak and result.get("tflops_ldm_hub"):
                result["bf16_peak_tflops"] = peak
                result["percent_of_peak_ldm_hub"] = 100 * result["tflops_ldm_hub"] / peak
                result["percent_of_peak_diffusers"] = 100 * result["tflops_diffusers"] / peak
            print(describe(result), flush=True)
        except Exception as e:  # noqa: BLE001 - one failing case must not lose the others' numbers
            traceback.print_exc()
            result = {"case": case, "config": config, "batch": batch, "dtype": dtype, "ours": ours, "theirs": theirs,
                      "error": f"{type(e).__name__}: {e}"}  # fmt: skip
            if args.strict:
                raise
        results.append(result)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        torch._dynamo.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results


def main(argv=None) -> int:
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # its dtype-cast notices would drown the results
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, default="unet", help="what one timed call is")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument(
        "--batch", type=int, default=None,
        help="UNet batch (default 2 = one image with guidance); images per call for vae-decode / pipeline (default 1)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=50, help="pipeline case: DDIM steps")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="pipeline case: classifier-free guidance")
    parser.add_argument("--fuse-qkv", action="store_true", help="ldm_hub side with fused q/k/v projections")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--ours", choices=("eager", "fast"), default="eager", help="ldm_hub side: plain or fast paths")
    parser.add_argument("--theirs", choices=("eager", "best"), default="eager",
                        help="diffusers side: eager, or compile(mode='reduce-overhead') + channels_last")  # fmt: skip
    parser.add_argument("--compile-mode", default=None, help="ldm_hub fast path's torch.compile mode")
    parser.add_argument("--channels-last", action="store_true", help="unet case: ldm_hub's UNet in channels_last")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of both sides")
    parser.add_argument("--suite", choices=("gpu", "toy"), help="run issue 7's list of GPU cases (toy: at tiny size)")
    parser.add_argument("--strict", action="store_true", help="suite: stop at the first failing case")
    parser.add_argument("--budget-s", type=float, default=None, help="suite: skip the cases left after this long")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the result(s) here")
    args = parser.parse_args(argv)
    if args.suite:
        results = run_suite(args, toy=args.suite == "toy")
        return 1 if any("error" in r for r in results) else 0
    batch = args.batch if args.batch is not None else (2 if args.case == "unet" else 1)
    setup = Setup(args.device, args.dtype, args.ours, args.theirs, args.fuse_qkv, args.compile_mode,
                  args.compile_backend, args.channels_last)  # fmt: skip
    result = run(args.config, batch, args.rounds, args.warmup, args.threads, args.case, args.steps,
                 args.guidance_scale, setup=setup)  # fmt: skip
    print(describe(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
