"""DDPM ancestral sampling: x_{t−1} ~ p_θ(x_{t−1} | x_t) = N(μ̃_t(x_t, x̂_0), σ_t² I) (Ho et al., arXiv 2006.11239)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config

# diffusers' pipeline loader saves a component as [module, class] and looks "SchedulerMixin" up in that module
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401
from diffusers.utils.torch_utils import randn_tensor

from .common import (
    DiscreteScheduler,
    SchedulerOutput,
    check_choice,
    convert_prediction,
    spaced_timesteps,
)

# None (what a DPM-Solver config carries when switched to DDPM) means "fixed_small", as in diffusers.
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range", None)
# DDPM alone of the four also offers these two β schedules, as diffusers' DDPMScheduler does.
DDPM_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")
# β̃_t is 0 on the last step (ᾱ_{t−1} := 1); floor it so log β̃_t stays finite (Nichol & Dhariwal's "clipped" log).
POSTERIOR_VARIANCE_FLOOR = 1e-20


class DDPMScheduler(DiscreteScheduler):
    """The DDPM sampler (Ho et al. 2020), on S ≤ T steps of the training chain (or all T before ``set_timesteps``).

    Config fields mean what they mean in diffusers' ``DDPMScheduler`` (same names, defaults and behaviour), so
    either class loads the other's ``scheduler_config.json``. ``variance_type`` picks σ_t²: "fixed_small" β̃_t
    (the posterior variance, DDPM §3.2; "fixed_small_log" is the same through its log), "fixed_large" β_t
    ("fixed_large_log" through its log, GLIDE's max_log), "learned" / "learned_range" read it from the second
    half of the model output's channels (Nichol & Dhariwal, arXiv 2102.09672, eq. 15).

    Args:
        num_train_timesteps: T, the length of the training chain.
        beta_start, beta_end, beta_schedule: β_1, β_T and the curve between ("linear", "scaled_linear",
            "squaredcos_cap_v2", "sigmoid", "laplace"); ``trained_betas`` overrides all three.
        variance_type: σ_t² of the reverse step, see above.
        clip_sample, clip_sample_range: clamp x̂_0 to [−range, range] (pixel-space models).
        prediction_type: what the network predicts: "epsilon" (ε), "sample" (x_0) or "v_prediction" (v).
        thresholding, dynamic_thresholding_ratio, sample_max_value: Imagen's dynamic thresholding of x̂_0 (in
            place of ``clip_sample``; see ``common.threshold_sample``).
        timestep_spacing, steps_offset: how the S sampling steps are placed among the T (see ``spaced_timesteps``).
        rescale_betas_zero_snr: rescale β so that ᾱ_T = 0 (Lin et al., arXiv 2305.08891; pair with v_prediction).

    Example:
        >>> import torch
        >>> from ldm_hub.schedulers.ddpm import DDPMScheduler
        >>> scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195)
        >>> scheduler.set_timesteps(10)
        >>> x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> for t in scheduler.timesteps:
        ...     eps = 0.1 * x  # stand-in for ε_θ(x_t, t)
        ...     x = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(int(t))).prev_sample
        >>> x.shape
        torch.Size([1, 3, 8, 8])
    """

    _diffusers_name = "DDPMScheduler"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        check_choice(type(self).__name__, "variance_type", variance_type, VARIANCE_TYPES)
        self._init_schedule(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, timestep_spacing,
            rescale_betas_zero_snr=rescale_betas_zero_snr, beta_schedules=DDPM_BETA_SCHEDULES,
        )  # fmt: skip

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the S sampling timesteps (evenly spaced, or the descending ``timesteps`` given) on ``device``."""
        custom = self._check_timestep_args(num_inference_steps, timesteps)
        cfg = self.config
        self.custom_timesteps = custom is not None
        if custom is None:
            self.num_inference_steps = num_inference_steps
            custom = spaced_timesteps(cfg.num_train_timesteps, num_inference_steps, cfg.timestep_spacing,
                                      cfg.steps_offset)  # fmt: skip
        else:
            self.num_inference_steps = len(custom)
        self._set_timestep_list(custom, device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The timestep a step from ``timestep`` lands on: the next one of the schedule (−1 after the last), or
        t − 1 before ``set_timesteps`` (the full training chain)."""
        t = self._begin_step(timestep)
        if self.num_inference_steps is None:
            return t - 1
        i = self._position(t, timestep)
        return self._timestep_list[i + 1] if i + 1 < len(self._timestep_list) else -1

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """One ancestral step x_t → x_{t'} to the schedule's next timestep t' (t − 1 before ``set_timesteps``).

        | variable             | DDPM paper                                 |
        |----------------------|--------------------------------------------|
        | sample               | x_t                                        |
        | model_output         | ε_θ(x_t, t) (or x_0 / v, see prediction_type; with learned variance, [ε, v_Σ]) |
        | alpha_bar, alpha_bar_prev | ᾱ_t, ᾱ_{t'} (1 after the last step)   |
        | beta                 | β_t = 1 − ᾱ_t/ᾱ_{t'}: the β of the strided chain                      |
        | pred_original_sample | x̂_0 = (x_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t (eq. 15), clipped or thresholded      |
        | pred_prev_mean       | μ̃_t(x_t, x̂_0) = √ᾱ_{t'}β_t/(1−ᾱ_t) x̂_0 + √α_t(1−ᾱ_{t'})/(1−ᾱ_t) x_t  (eq. 7) |
        | std_dev_t            | σ_t: √β̃_t, β̃_t = (1−ᾱ_{t'})/(1−ᾱ_t) β_t (eq. 7), or √β_t, or learned  |
        | noise                | z ~ N(0, I), drawn with ``generator``; none when t = 0       |
        | prev_sample          | x_{t'} = μ̃_t + σ_t z       (eq. 11 with x̂_0 in place of ε_θ)           |

        ``timestep`` is any timestep of the schedule (a Python int, a host tensor or an element of ``timesteps``).
        Returns ``SchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        t = self._begin_step(timestep)
        self._check_in_range(t)
        cfg = self.config
        if self.num_inference_steps is None:
            t_prev, position = t - 1, None
        else:
            position = self._position(t, timestep)
            t_prev = self._timestep_list[position + 1] if position + 1 < len(self._timestep_list) else -1

        if cfg.variance_type in ("learned", "learned_range"):
            if model_output.shape[1] != 2 * sample.shape[1]:
                raise ValueError(
                    f"DDPMScheduler: variance_type={cfg.variance_type!r} needs a model output with twice the "
                    f"sample's channels, got {model_output.shape[1]} for {sample.shape[1]}"
                )
            model_output, predicted_variance = model_output.split(sample.shape[1], dim=1)  # (B, C, H, W) each

        alpha_bar, alpha_bar_prev = self._alpha_bar(t), self._alpha_bar(t_prev)  # 0-d, no device sync
        alpha = alpha_bar / alpha_bar_prev  # α_t of the strided chain
        beta = 1 - alpha
        pred_original_sample, _ = convert_prediction(
            model_output, sample, alpha_bar**0.5, (1 - alpha_bar) ** 0.5, cfg.prediction_type
        )
        pred_original_sample = self._threshold_or_clip(pred_original_sample)
        x0_coef = alpha_bar_prev**0.5 * beta / (1 - alpha_bar)
        xt_coef = alpha**0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar)
        prev_sample = x0_coef * pred_original_sample + xt_coef * sample  # μ̃_t, (B, C, H, W)

        if t > 0:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                 dtype=model_output.dtype)  # fmt: skip
            posterior_variance = ((1 - alpha_bar_prev) / (1 - alpha_bar) * beta).clamp(min=POSTERIOR_VARIANCE_FLOOR)
            if cfg.variance_type == "learned":
                std_dev_t = predicted_variance**0.5
            elif cfg.variance_type == "learned_range":
                frac = (predicted_variance + 1) / 2  # v ∈ [−1, 1] interpolates log β̃_t … log β_t
                std_dev_t = torch.exp(0.5 * (frac * torch.log(beta) + (1 - frac) * torch.log(posterior_variance)))
            elif cfg.variance_type == "fixed_large":
                std_dev_t = beta**0.5
            elif cfg.variance_type == "fixed_large_log":
                std_dev_t = torch.exp(0.5 * torch.log(beta))
            elif cfg.variance_type == "fixed_small_log":
                std_dev_t = torch.exp(0.5 * torch.log(posterior_variance))
            else:  # "fixed_small", None: σ_t = √β̃_t
                std_dev_t = posterior_variance**0.5
            prev_sample = prev_sample + std_dev_t * noise  # x_{t'}, (B, C, H, W)

        self._step_index = None if position is None else position + 1
        if not return_dict:
            return prev_sample, pred_original_sample
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
