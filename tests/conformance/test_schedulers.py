"""Scheduler conformance: what diffusers' own scheduler tests check of every scheduler (SchedulerCommonTest and
the per-scheduler files of diffusers' tests/schedulers/), written for ldm_hub's four and run against diffusers'
classes of the same name where a value is compared.

Covered: config save/load and round trips, ``from_config`` between ldm_hub's and diffusers' classes in both
directions with every field kept, ``compatibles``, step output shapes, dtypes and tuple/dict equivalence, the
public API (``init_noise_sigma``, ``scale_model_input``, ``order``, ``len``), ``add_noise`` and ``set_timesteps``
on a device (the meta device always, CUDA too when present), trained betas, config attribute access, and the
three rows of issue 13's table. No test here may be skipped (conftest.py turns a skip into a failure); each states
its tolerance.
"""

from __future__ import annotations

import inspect
import warnings

import diffusers
import numpy as np
import pytest
import torch

from ldm_hub.schedulers.ddim import DDIMScheduler
from ldm_hub.schedulers.ddpm import DDPMScheduler
from ldm_hub.schedulers.dpm_solver import DPMSolverMultistepScheduler
from ldm_hub.schedulers.plms import PLMSScheduler

# Same computation on both sides of a save/load: bit-identical outputs.
EXACT = dict(rtol=0, atol=0)
# ldm_hub against diffusers, fp32, O(1) values: the issue's bound.
PARITY = dict(rtol=0, atol=1e-6)

OURS = [DDPMScheduler, DDIMScheduler, PLMSScheduler, DPMSolverMultistepScheduler]
THEIRS = {
    DDPMScheduler: diffusers.DDPMScheduler,
    DDIMScheduler: diffusers.DDIMScheduler,
    PLMSScheduler: diffusers.PNDMScheduler,
    DPMSolverMultistepScheduler: diffusers.DPMSolverMultistepScheduler,
}
EXTRA = {PLMSScheduler: {"skip_prk_steps": True}}  # diffusers' PNDM defaults to the RK warm-up we don't have
DEVICES = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])
ids = pytest.mark.parametrize("cls", OURS, ids=lambda c: c.__name__)

# Every field at a value other than its default (the ones implemented), per class.
NON_DEFAULT = {
    DDPMScheduler: dict(
        num_train_timesteps=900, beta_start=0.0002, beta_end=0.015, beta_schedule="scaled_linear",
        variance_type="fixed_large", clip_sample=False, prediction_type="v_prediction", thresholding=True,
        dynamic_thresholding_ratio=0.9, clip_sample_range=2.0, sample_max_value=1.5, timestep_spacing="trailing",
        steps_offset=1, rescale_betas_zero_snr=True,
    ),
    DDIMScheduler: dict(
        num_train_timesteps=900, beta_start=0.0002, beta_end=0.015, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="sample", thresholding=True,
        dynamic_thresholding_ratio=0.9, clip_sample_range=2.0, sample_max_value=1.5, timestep_spacing="linspace",
        rescale_betas_zero_snr=True,
    ),
    PLMSScheduler: dict(
        num_train_timesteps=900, beta_start=0.0002, beta_end=0.015, beta_schedule="scaled_linear",
        set_alpha_to_one=True, prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=1,
    ),
    DPMSolverMultistepScheduler: dict(
        num_train_timesteps=900, beta_start=0.0002, beta_end=0.015, beta_schedule="squaredcos_cap_v2",
        solver_order=3, prediction_type="v_prediction", thresholding=True, dynamic_thresholding_ratio=0.9,
        sample_max_value=1.5, algorithm_type="sde-dpmsolver++", solver_type="heun", lower_order_final=False,
        euler_at_final=True, use_karras_sigmas=True, final_sigmas_type="sigma_min", lambda_min_clipped=-5.1,
        variance_type="learned_range", timestep_spacing="leading", steps_offset=1, rescale_betas_zero_snr=True,
    ),
}  # fmt: skip


def dummy_sample(dtype=torch.float32, device="cpu") -> torch.Tensor:
    """diffusers' deterministic dummy sample: (4, 3, 8, 8), values in [0, 1)."""
    n = 4 * 3 * 8 * 8
    return (torch.arange(n).reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2).to(device=device, dtype=dtype)


def model_output(scheduler, sample: torch.Tensor) -> torch.Tensor:
    """0.1 x (diffusers' dummy residual), with variance channels appended when the config expects them."""
    out = 0.1 * sample
    if scheduler.config.get("variance_type") in ("learned", "learned_range"):
        out = torch.cat([out, torch.tanh(sample)], dim=1)
    return out


def step_kwargs(scheduler, seed: int = 0) -> dict:
    params = inspect.signature(scheduler.step).parameters
    return {"generator": torch.Generator().manual_seed(seed)} if "generator" in params else {}


def first_steps(scheduler, n: int = 3, num_inference_steps: int = 10):
    """Outputs of the first ``n`` steps of a fresh loop on the dummy sample."""
    scheduler.set_timesteps(num_inference_steps)
    x, outs = dummy_sample(), []
    for t in scheduler.timesteps[:n]:
        x = scheduler.step(model_output(scheduler, x), t, x, **step_kwargs(scheduler, int(t))).prev_sample
        outs.append(x)
    return outs


# ------------------------------------------------------------------------------------------ configs
CONFIG_VARIANTS = (
    [(cls, {}) for cls in OURS]
    + [(cls, cfg) for cls, cfg in NON_DEFAULT.items()]
    + [
        (DDPMScheduler, dict(variance_type="learned_range", beta_schedule="laplace")),
        (DDIMScheduler, dict(timestep_spacing="trailing", prediction_type="v_prediction")),
        (DPMSolverMultistepScheduler, dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min", solver_order=1)),
        (DPMSolverMultistepScheduler, dict(thresholding=True, prediction_type="sample", euler_at_final=True)),
    ]
)


@pytest.mark.parametrize("cls,config", CONFIG_VARIANTS, ids=lambda v: getattr(v, "__name__", None) or str(len(v)))
def test_save_config_reload_steps_identically(cls, config, tmp_path):
    """diffusers' check_over_configs: save_config, from_pretrained, the same steps (tolerance: EXACT)."""
    scheduler = cls(**config)
    scheduler.save_config(tmp_path)
    reloaded = cls.from_pretrained(tmp_path)
    for a, b in zip(first_steps(scheduler), first_steps(reloaded)):
        torch.testing.assert_close(a, b, **EXACT)


@ids
@pytest.mark.parametrize("num_inference_steps", [5, 25])
def test_steps_over_forward_settings(cls, num_inference_steps, tmp_path):
    """diffusers' check_over_forward: per step count, a saved/reloaded scheduler steps identically (EXACT)."""
    scheduler = cls()
    scheduler.save_pretrained(tmp_path)
    reloaded = cls.from_pretrained(tmp_path)
    for a, b in zip(first_steps(scheduler, 2, num_inference_steps), first_steps(reloaded, 2, num_inference_steps)):
        torch.testing.assert_close(a, b, **EXACT)


@ids
def test_from_pretrained_config_equal(cls, tmp_path):
    """Saved and reloaded: the same config, ``_use_default_values`` aside (it is not saved)."""
    scheduler = cls(**NON_DEFAULT[cls])
    scheduler.save_pretrained(tmp_path)
    config = {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}
    assert dict(cls.from_pretrained(tmp_path).config) == config


@ids
def test_from_config_both_ways_keeps_every_field(cls, tmp_path):
    """ldm_hub → diffusers and diffusers → ldm_hub, in memory and through scheduler_config.json: every field of
    the diffusers class of the same name arrives with its (non-default) value."""
    config = {**NON_DEFAULT[cls], **EXTRA.get(cls, {})}
    ours, theirs = cls(**config), THEIRS[cls](**config)
    their_fields = set(inspect.signature(THEIRS[cls].__init__).parameters) - {"self"}
    assert their_fields <= set(ours.config), their_fields - set(ours.config)  # every diffusers field is ours too
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    for converted, source in [
        (THEIRS[cls].from_config(ours.config), ours),
        (THEIRS[cls].from_pretrained(tmp_path / "ours"), ours),
        (cls.from_config(theirs.config), theirs),
        (cls.from_pretrained(tmp_path / "theirs"), theirs),
    ]:
        for field in their_fields:
            assert converted.config[field] == source.config[field], field


@ids
def test_compatibles(cls):
    """Every compatible diffusers class builds from our config, and ours back from theirs with our config intact."""
    scheduler = cls()
    assert scheduler.compatibles and all(c is not None for c in scheduler.compatibles)
    loaded = []
    for comp in scheduler.compatibles:
        if comp.__module__.startswith("diffusers.utils.dummy_"):  # a placeholder for a missing optional package
            with pytest.raises(ImportError):
                comp.from_config(scheduler.config)
            continue
        loaded.append(comp.from_config(scheduler.config))
    assert THEIRS[cls] in [type(c) for c in loaded] or cls is PLMSScheduler
    for comp_scheduler in loaded:
        back = cls.from_config(comp_scheduler.config)
        kept = {k: v for k, v in back.config.items() if k in scheduler.config and not k.startswith("_")}
        assert kept == {k: v for k, v in scheduler.config.items() if not k.startswith("_")}, type(comp_scheduler)
        init_keys = set(inspect.signature(cls.__init__).parameters)
        assert not (set(back.config) - set(scheduler.config)) & init_keys


@ids
def test_no_kwargs_in_init(cls):
    """diffusers' test_deprecated_kwargs: no ``**kwargs`` in ``__init__`` and no deprecated kwargs declared."""
    assert "kwargs" not in inspect.signature(cls.__init__).parameters
    assert not cls._deprecated_kwargs


# ------------------------------------------------------------------------------------------- steps
def schedule_timesteps(scheduler) -> tuple[int, int]:
    """Two timesteps every scheduler accepts after set_timesteps(10): the first two of its schedule."""
    scheduler.set_timesteps(10)
    return int(scheduler.timesteps[0]), int(scheduler.timesteps[1])


@ids
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_step_shape_and_dtype(cls, dtype):
    """Two steps keep the sample's shape; the output has the model output's dtype (as in diffusers)."""
    scheduler = cls()
    t0, t1 = schedule_timesteps(scheduler)
    sample = dummy_sample(dtype)
    out0 = scheduler.step(model_output(scheduler, sample), t0, sample, **step_kwargs(scheduler)).prev_sample
    out1 = scheduler.step(model_output(scheduler, out0), t1, out0, **step_kwargs(scheduler)).prev_sample
    assert out0.shape == out1.shape == sample.shape
    assert out0.dtype == out1.dtype == dtype


@ids
def test_step_shape_at_timesteps_0_and_1(cls):
    """diffusers' test_step_shape steps at t = 0 and 1: DDPM before set_timesteps, DDIM at any t; the multistep
    schedulers at 1 and 0 of a schedule that has them (PLMS, whose schedule has 2 and 0 but not 1, refuses 1)."""
    scheduler, timesteps = cls(), (0, 1)
    if cls is DDIMScheduler:
        scheduler.set_timesteps(10)
    elif cls is PLMSScheduler:
        scheduler.set_timesteps(500)  # "leading", δ = 2: …, 4, 2, 0
        timesteps = (2, 0)
    elif cls is DPMSolverMultistepScheduler:
        scheduler.set_timesteps(timesteps=[1, 0])
        timesteps = (1, 0)
    sample = dummy_sample()
    for t in timesteps:
        out = scheduler.step(model_output(scheduler, sample), t, sample, **step_kwargs(scheduler)).prev_sample
        assert out.shape == sample.shape
    if cls is PLMSScheduler:
        with pytest.raises(ValueError, match="timestep=1 is not in this schedule"):
            scheduler.step(sample, 1, sample)


@pytest.mark.parametrize("cls,config", CONFIG_VARIANTS, ids=lambda v: getattr(v, "__name__", None) or str(len(v)))
def test_tuple_and_dict_outputs_equal(cls, config):
    """``return_dict=False`` gives the same tensors as the SchedulerOutput (EXACT; NaNs count as equal)."""
    a, b = cls(**config), cls(**config)
    t0, _ = schedule_timesteps(a)
    schedule_timesteps(b)
    sample = dummy_sample()
    as_dict = a.step(model_output(a, sample), t0, sample, **step_kwargs(a))
    as_tuple = b.step(model_output(b, sample), t0, sample, return_dict=False, **step_kwargs(b))
    assert isinstance(as_tuple, tuple)
    for x, y in zip(as_tuple, as_dict.values()):
        torch.testing.assert_close(x, y, equal_nan=True, **EXACT)


@ids
def test_public_api(cls):
    """init_noise_sigma, scale_model_input (identity, same shape), order, len, step, as diffusers' schedulers."""
    scheduler, theirs = cls(), THEIRS[cls](**EXTRA.get(cls, {}))
    sample = dummy_sample()
    assert scheduler.init_noise_sigma == theirs.init_noise_sigma == 1.0
    assert scheduler.scale_model_input(sample, 0.0).shape == sample.shape
    assert torch.equal(scheduler.scale_model_input(sample, 0), theirs.scale_model_input(sample, 0))
    assert scheduler.order == theirs.order == 1
    assert len(scheduler) == len(theirs) == 1000
    assert callable(scheduler.step) and callable(scheduler.set_timesteps)


@ids
@pytest.mark.parametrize("device", DEVICES)
def test_add_noise_and_set_timesteps_on_device(cls, device):
    """set_timesteps(device) puts timesteps there; add_noise on the device keeps shape and device, and on the
    host equals diffusers' (PARITY)."""
    scheduler = cls()
    scheduler.set_timesteps(100, device=device)
    assert scheduler.timesteps.device.type == device and scheduler.timesteps.dtype == torch.int64
    sample = scheduler.scale_model_input(dummy_sample(device=device), 0.0)
    noise = torch.randn(sample.shape).to(device)
    t = scheduler.timesteps[5][None]
    noised = scheduler.add_noise(sample, noise, t)
    assert noised.shape == sample.shape and noised.device.type == device
    if device == "cpu":
        theirs = THEIRS[cls](**EXTRA.get(cls, {}))
        theirs.set_timesteps(100)
        torch.testing.assert_close(noised, theirs.add_noise(sample, noise, t), **PARITY)


@ids
def test_trained_betas(cls, tmp_path):
    """trained_betas of length num_train_timesteps survive save/load (EXACT); any other length is refused."""
    scheduler = cls(num_train_timesteps=2, trained_betas=np.array([0.1, 0.3]))
    scheduler.save_pretrained(tmp_path)
    reloaded = cls.from_pretrained(tmp_path)
    assert scheduler.betas.tolist() == reloaded.betas.tolist() == pytest.approx([0.1, 0.3])
    with pytest.raises(ValueError, match="trained_betas"):
        cls(trained_betas=np.array([0.1, 0.3]))


@ids
def test_config_attribute_access(cls):
    """diffusers' test_getattr_is_correct: own attributes plainly, config fields with a FutureWarning, unknown
    names with diffusers' AttributeError text."""
    scheduler = cls()
    scheduler.dummy_attribute = 5
    scheduler.register_to_config(test_attribute=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scheduler.dummy_attribute == 5
        assert scheduler.save_pretrained == getattr(scheduler, "save_pretrained")
    with pytest.warns(FutureWarning):
        assert scheduler.test_attribute == 5
    with pytest.raises(AttributeError) as error:
        scheduler.does_not_exist  # noqa: B018
    assert str(error.value) == f"'{cls.__name__}' object has no attribute 'does_not_exist'"


# ---------------------------------------------------------------------- no host reads, on the meta device
META_CASES = [
    (DDPMScheduler, {"variance_type": "learned_range", "thresholding": True}, {}),
    (DDPMScheduler, {"variance_type": "fixed_large_log"}, {}),
    (DDIMScheduler, {"thresholding": True}, {"eta": 1.0}),
    (DDIMScheduler, {"timestep_spacing": "trailing"}, {"eta": 0.0}),
    (PLMSScheduler, {"prediction_type": "v_prediction"}, {}),
    (DPMSolverMultistepScheduler, {"solver_order": 3, "thresholding": True, "use_karras_sigmas": True}, {}),
    (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}, {}),
    (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "variance_type": "learned"}, {}),
]


@pytest.mark.parametrize("cls,config,kwargs", META_CASES, ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_whole_loop_on_the_meta_device(cls, config, kwargs):
    """Meta tensors have no values: a loop that completes there read nothing back from the device in step()."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.zeros(1, device="meta").item()  # the premise
    scheduler = cls(**config)
    scheduler.set_timesteps(6, device="meta")
    x = torch.zeros(2, 3, 8, 8, device="meta")
    for t in scheduler.timesteps:
        x = scheduler.step(model_output(scheduler, x), t, x, **kwargs).prev_sample
    assert x.device.type == "meta" and x.shape == (2, 3, 8, 8)


# -------------------------------------------------------------------------------- issue 13's table
def test_issue_row_step_at_any_timestep():
    """DDIM at timesteps[10] of 50, an img2img loop over timesteps[k:], DDPM before set_timesteps, DPM-Solver
    from a later timestep: each as diffusers computes it (PARITY)."""
    x = dummy_sample()
    ours, theirs = DDIMScheduler(), diffusers.DDIMScheduler()
    for s in (ours, theirs):
        s.set_timesteps(50)
    t = ours.timesteps[10]
    torch.testing.assert_close(ours.step(0.1 * x, t, x).prev_sample, theirs.step(0.1 * x, t, x).prev_sample, **PARITY)
    for cls in (DDIMScheduler, DPMSolverMultistepScheduler, PLMSScheduler):
        ours, theirs = cls(), THEIRS[cls](**EXTRA.get(cls, {}))
        for s in (ours, theirs):
            s.set_timesteps(20)
        a, b = x.clone(), x.clone()
        for t in ours.timesteps[7:]:
            a, b = ours.step(0.1 * a, t, a).prev_sample, theirs.step(0.1 * b, t, b).prev_sample
        torch.testing.assert_close(a, b, **PARITY)
    ours, theirs = DDPMScheduler(), diffusers.DDPMScheduler()
    a = ours.step(0.1 * x, 999, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = theirs.step(0.1 * x, 999, x, generator=torch.Generator().manual_seed(0)).prev_sample
    torch.testing.assert_close(a, b, **PARITY)


def test_issue_row_fields_accepted():
    """The constructor calls that raised TypeError construct, and from_config keeps the fields."""
    made = [
        DPMSolverMultistepScheduler(thresholding=False),
        DDIMScheduler(rescale_betas_zero_snr=False),
        DDIMScheduler(sample_max_value=2.0),
        DPMSolverMultistepScheduler(euler_at_final=False),
        DPMSolverMultistepScheduler(lambda_min_clipped=-5.1),
        DPMSolverMultistepScheduler(variance_type=None),
    ]
    assert made[2].config.sample_max_value == 2.0 and made[4].config.lambda_min_clipped == -5.1
    theirs = diffusers.DPMSolverMultistepScheduler(thresholding=True, euler_at_final=True, lambda_min_clipped=-5.1)
    loaded = DPMSolverMultistepScheduler.from_config(theirs.config)
    assert (loaded.config.thresholding, loaded.config.euler_at_final, loaded.config.lambda_min_clipped) == (
        True,
        True,
        -5.1,
    )


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler], ids=lambda c: c.__name__)
def test_issue_row_custom_timesteps(cls):
    scheduler = cls()
    scheduler.set_timesteps(timesteps=[999, 800, 600, 400, 200, 0])
    assert scheduler.timesteps.tolist() == [999, 800, 600, 400, 200, 0]
    assert scheduler.num_inference_steps == 6
    x = dummy_sample()
    for t in scheduler.timesteps:
        x = scheduler.step(0.1 * x, t, x, **step_kwargs(scheduler)).prev_sample
    assert torch.isfinite(x).all()
