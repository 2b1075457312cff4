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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = ("unet", "vae-decode", "pipeline")
PROMPT = "a red circle and a blue square"

CONFIGS = {
    # block_out 32/64, one layer, 16x16 latents: the tiny config of baselines.md
    "tiny": dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ),
    # CompVis/ldm-text2im-large-256 (872M parameters)
    "text2im-large-256": dict(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1280, attention_head_dim=8,
    ),
}


def build_pair(name: str, seed: int = 0):
    """(diffusers UNet, ldm_hub UNet) with identical random weights, both in eval mode, fp32."""
    from diffusers import UNet2DConditionModel

    from ldm_hub.convert.diffusers_unet import unet_from_diffusers

    torch.manual_seed(seed)
    theirs = UNet2DConditionModel(**CONFIGS[name]).eval()
    with torch.no_grad():
        for p in theirs.parameters():  # every parameter random, zero-initialised layers included
            p.normal_(0, 0.02 if p.ndim > 1 else 0.1)
    ours = unet_from_diffusers(dict(theirs.config), theirs.state_dict()).eval()
    return theirs, ours


def inputs(model, batch: int, seed: int = 0):
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen)
    context = torch.randn(batch, 77, cfg.cross_attention_dim, generator=gen)
    timestep = torch.tensor(500)
    return sample, timestep, context


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_per_call(model, args) -> float | None:
    return flops_per_call_fn(lambda: model(*args[:2], encoder_hidden_states=args[2]))


def unet_case(config: str, batch: int, fuse_qkv: bool):
    """(call ours, call theirs, parity max|diff|, FLOP per call or None) for one UNet call."""
    theirs, ours = build_pair(config)
    if fuse_qkv:
        ours.fuse_qkv_projections()
    args = inputs(theirs, batch)
    with torch.no_grad():
        ref = theirs(args[0], args[1], encoder_hidden_states=args[2]).sample
        out = ours(args[0], args[1], encoder_hidden_states=args[2]).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)

    def call_ours():
        with torch.no_grad():
            ours(args[0], args[1], encoder_hidden_states=args[2])

    def call_theirs():
        with torch.no_grad():
            theirs(args[0], args[1], encoder_hidden_states=args[2])

    return call_ours, call_theirs, (out - ref).abs().max().item(), flops_per_call(theirs, args)


def _test_builders():
    """tests/diffusers_repos.py: the diffusers-built LDM repos (random weights) the parity tests use."""
    sys.path.insert(0, str(ROOT / "tests"))
    import diffusers_repos

    return diffusers_repos


def vae_decode_case(config: str, batch: int):
    """One decode D(z) of the text2im autoencoder (f = 8; tiny or the published kl-f8)."""
    from diffusers import AutoencoderKL

    from ldm_hub.convert.diffusers_autoencoder import autoencoder_kl_from_diffusers

    repos = _test_builders()
    vae_config = repos.TINY_KL if config == "tiny" else repos.TEXT2IM_VAE
    theirs = repos.randomize_(AutoencoderKL(**vae_config), 0).eval()
    ours = autoencoder_kl_from_diffusers(dict(theirs.config), theirs.state_dict())
    f = 2 ** (len(vae_config["block_out_channels"]) - 1)
    side = vae_config["sample_size"] // f
    z = torch.randn(batch, vae_config["latent_channels"], side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = theirs.decode(z).sample
        out = ours.decode(z).sample
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)

    def call_ours():
        with torch.no_grad():
            ours.decode(z)

    def call_theirs():
        with torch.no_grad():
            theirs.decode(z)

    flops = flops_per_call_fn(lambda: theirs.decode(z))
    return call_ours, call_theirs, (out - ref).abs().max().item(), flops


def pipeline_case(config: str, batch: int, steps: int, guidance_scale: float, fuse_qkv: bool):
    """The text-to-image pipeline end to end: ``batch`` images from one prompt, ``steps`` DDIM steps with
    classifier-free guidance, decoded to numpy (diffusers' LDMTextToImagePipeline vs LDMPipeline loaded from the
    folder diffusers saved)."""
    from ldm_hub import LDMPipeline

    theirs = _test_builders().text2im_pipeline(full=config != "tiny")
    with tempfile.TemporaryDirectory() as folder:
        theirs.save_pretrained(folder)
        ours = LDMPipeline.from_pretrained(folder)
    ours.set_progress_bar_config(disable=True)
    if fuse_qkv:
        ours.fuse_qkv_projections()
    prompts = [PROMPT] * batch

    def call(pipe):
        return pipe(prompts, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images  # fmt: skip

    ref, out = call(theirs), call(ours)
    parity = float(abs(out.astype("float64") - ref.astype("float64")).max())
    if parity > 2 / 255:
        raise AssertionError(f"pipeline images differ by {parity:.2e} > 2/255")
    return (lambda: call(ours)), (lambda: call(theirs)), parity, None


def flops_per_call_fn(fn) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - FLOP counting is informative only
        return None


def run(
    config: str,
    batch: int,
    rounds: int,
    warmup: int,
    threads: int | None,
    case: str = "unet",
    steps: int = 50,
    guidance_scale: float = 3.0,
    fuse_qkv: bool = False,
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    if case == "unet":
        call_ours, call_theirs, parity, flops = unet_case(config, batch, fuse_qkv)
    elif case == "vae-decode":
        call_ours, call_theirs, parity, flops = vae_decode_case(config, batch)
    else:
        call_ours, call_theirs, parity, flops = pipeline_case(config, batch, steps, guidance_scale, fuse_qkv)

    for _ in range(warmup):
        call_ours()
        call_theirs()
    t_ours, t_theirs, ratios = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            a, b = timed(call_ours), timed(call_theirs)
        else:
            b, a = timed(call_theirs), timed(call_ours)
        t_ours.append(a)
        t_theirs.append(b)
        ratios.append(a / b)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    result = {
        "case": case,
        "config": config,
        "batch": batch,
        "steps": steps if case == "pipeline" else None,
        "fuse_qkv": fuse_qkv,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
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
    }
    return result


def main(argv=None) -> int:
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
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    batch = args.batch if args.batch is not None else (2 if args.case == "unet" else 1)
    result = run(args.config, batch, args.rounds, args.warmup, args.threads, args.case, args.steps,
                 args.guidance_scale, args.fuse_qkv)  # fmt: skip
    what = {"unet": "UNet call", "vae-decode": "VAE decode", "pipeline": f"pipeline call ({args.steps} steps)"}
    print(
        f"[{result['case']} {result['config']} batch {result['batch']}, {result['rounds']} interleaved rounds, "
        f"{result['threads']} threads] ldm_hub {result['ms_ldm_hub_median']:.1f} ms, "
        f"diffusers {result['ms_diffusers_median']:.1f} ms per {what[args.case]}; ratio ldm_hub/diffusers median "
        f"{result['ratio_median']:.3f} (min {result['ratio_min']:.3f}, max {result['ratio_max']:.3f}, "
        f"IQR {result['ratio_iqr'][0]:.3f}-{result['ratio_iqr'][1]:.3f}); parity max|diff| "
        f"{result['parity_max_abs_diff']:.1e}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
