"""Speed of ldm_hub against diffusers on identical weights: ratio ldm_hub / diffusers per UNet call.

diffusers' UNet2DConditionModel is built from a config and randomised; the same weights are converted into
ldm_hub's LDMUNet through the library's own loader; outputs are checked equal before any timing. Calls are
interleaved (A B, B A, ...) in one process so drift and noise hit both sides alike; the report gives the
median of the per-round ratios and their spread (min-max and IQR).

    python benchmarks/bench_vs_diffusers.py --config tiny --rounds 7
    python benchmarks/bench_vs_diffusers.py --config text2im-large-256 --batch 2 --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

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
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*args[:2], encoder_hidden_states=args[2])
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - FLOP counting is informative only
        return None


def run(config: str, batch: int, rounds: int, warmup: int, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    theirs, ours = build_pair(config)
    args = inputs(theirs, batch)
    with torch.no_grad():
        ref = theirs(args[0], args[1], encoder_hidden_states=args[2]).sample
        out = ours(args[0], args[1], encoder_hidden_states=args[2]).sample
    parity = (out - ref).abs().max().item()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)

    def call_ours():
        with torch.no_grad():
            ours(args[0], args[1], encoder_hidden_states=args[2])

    def call_theirs():
        with torch.no_grad():
            theirs(args[0], args[1], encoder_hidden_states=args[2])

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
    flops = flops_per_call(theirs, args)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    result = {
        "config": config,
        "batch": batch,
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
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--batch", type=int, default=2, help="UNet batch (2 = one image with guidance)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.config, args.batch, args.rounds, args.warmup, args.threads)
    print(
        f"[{result['config']} batch {result['batch']}, {result['rounds']} interleaved rounds, "
        f"{result['threads']} threads] ldm_hub {result['ms_ldm_hub_median']:.1f} ms, "
        f"diffusers {result['ms_diffusers_median']:.1f} ms per UNet call; ratio ldm_hub/diffusers median "
        f"{result['ratio_median']:.3f} (min {result['ratio_min']:.3f}, max {result['ratio_max']:.3f}, "
        f"IQR {result['ratio_iqr'][0]:.3f}-{result['ratio_iqr'][1]:.3f}); parity max|diff| "
        f"{result['parity_max_abs_diff']:.1e}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
