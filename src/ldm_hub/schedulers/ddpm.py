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
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range", None)
# β̃_t is 0 on the last step (ᾱ_{t−1} := 1); floor it so log β̃_t stays finite (Nichol & Dhariwal's "clipped" log).
POSTERIOR_VARIANCE_FLOOR = 1e-20


class DDPMScheduler(DiscreteScheduler):
    """The DDPM sampler (Ho et al. 2020), on S ≤ T steps of the training chain.

    Config fields mean what they mean in diffusers' ``DDPMScheduler`` (same names and defaults), so either
    class loads the other's ``scheduler_config.json``. ``variance_type`` picks σ_t²: "fixed_small" β̃_t (the
    posterior variance, DDPM §3.2), "fixed_large" β_t, "learned" / "learned_range" read it from the second half
    of the model output's channels (Nichol & Dhariwal, arXiv 2102.09672, eq. 15). ``thresholding`` and
    ``rescale_betas_zero_snr`` are not implemented (a config asking for them raises ValueError).

    Args:
        num_train_timesteps: T, the length of the training chain.
        beta_start, beta_end, beta_schedule: β_1, β_T and the curve between ("linear", "scaled_linear",
            "squaredcos_cap_v2"); ``trained_betas`` overrides all three.
        variance_type: σ_t² of the reverse step, see above.
        clip_sample, clip_sample_range: clamp x̂_0 to [−range, range] (pixel-space models).
        prediction_type: what the network predicts: "epsilon" (ε), "sample" (x_0) or "v_prediction" (v).
        timestep_spacing, steps_offset: how the S sampling steps are placed among the T (see ``spaced_timesteps``).

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
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        check_choice(type(self).__name__, "variance_type", variance_type, VARIANCE_TYPES)
        self._init_schedule(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, timestep_spacing
        )

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose the S sampling timesteps and build the per-step tables of eq. 7 on ``device``."""
        self._check_num_inference_steps(num_inference_steps)
        self.num_inference_steps = num_inference_steps
        cfg = self.config
        T, spacing = cfg.num_train_timesteps, cfg.timestep_spacing
        timesteps = spaced_timesteps(T, num_inference_steps, spacing, cfg.steps_offset)
        self._set_timestep_list(timesteps, device)

        # The step from τ_i goes to τ_{i+1}; from the last one to "t = −1", where ᾱ := 1 (x_{−1} is x_0).
        alpha_bar_ext = torch.cat([self.alphas_cumprod, torch.ones(1)])  # index −1 → the appended 1
        t = torch.from_numpy(timesteps)
        t_prev = torch.cat([t[1:], torch.tensor([-1])])
        alpha_bar = alpha_bar_ext[t]  # ᾱ_t
        alpha_bar_prev = alpha_bar_ext[t_prev]  # ᾱ_{t−1}
        alpha = alpha_bar / alpha_bar_prev  # α_t of the strided chain
        beta = 1 - alpha  # β_t of the strided chain
        posterior_variance = ((1 - alpha_bar_prev) / (1 - alpha_bar) * beta).clamp(min=POSTERIOR_VARIANCE_FLOOR)

        tables = {
            "sqrt_alpha_bar": alpha_bar**0.5,
            "sqrt_one_minus_alpha_bar": (1 - alpha_bar) ** 0.5,
            # μ̃_t = x0_coef · x̂_0 + xt_coef · x_t   (eq. 7)
            "x0_coef": alpha_bar_prev**0.5 * beta / (1 - alpha_bar),
            "xt_coef": alpha**0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar),
            "std_small": posterior_variance**0.5,  # √β̃_t
            "std_large": beta**0.5,  # √β_t
            "log_var_small": torch.log(posterior_variance),
            "log_var_large": torch.log(beta),
        }
        self._tables = {k: v.to(device) for k, v in tables.items()}
        self._adds_noise = [ti > 0 for ti in self._timestep_list]  # no noise on the step that lands on x_0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """One ancestral step x_t → x_{t−1}.

        | variable             | DDPM paper                                 |
        |----------------------|--------------------------------------------|
        | sample               | x_t                                        |
        | model_output         | ε_θ(x_t, t) (or x_0 / v, see prediction_type; with learned variance, [ε, v_Σ]) |
        | pred_original_sample | x̂_0 = (x_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t                    (eq. 15) |
        | pred_prev_mean       | μ̃_t(x_t, x̂_0) = √ᾱ_{t−1}β_t/(1−ᾱ_t) x̂_0 + √α_t(1−ᾱ_{t−1})/(1−ᾱ_t) x_t  (eq. 7) |
        | std_dev_t            | σ_t: √β̃_t, β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t (eq. 7), or √β_t, or learned  |
        | noise                | z ~ N(0, I), drawn with ``generator``; none when t = 0       |
        | prev_sample          | x_{t−1} = μ̃_t + σ_t z       (eq. 11 with x̂_0 clipped if clip_sample) |

        ``timestep`` must be ``timesteps[step_index]``; it is checked when it is a Python int or a host tensor.
        Returns ``SchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        i = self._begin_step(timestep)
        cfg = self.config
        tab = {k: v[i] for k, v in self._tables.items()}  # 0-d tensors of step i (indexing: no device sync)

        learned = cfg.variance_type in ("learned", "learned_range")
        if learned:
            if model_output.shape[1] != 2 * sample.shape[1]:
                raise ValueError(
                    f"DDPMScheduler: variance_type={cfg.variance_type!r} needs a model output with twice the "
                    f"sample's channels, got {model_output.shape[1]} for {sample.shape[1]}"
                )
            model_output, predicted_variance = model_output.split(sample.shape[1], dim=1)  # (B, C, H, W) each

        pred_original_sample, _ = convert_prediction(
            model_output, sample, tab["sqrt_alpha_bar"], tab["sqrt_one_minus_alpha_bar"], cfg.prediction_type
        )
        if cfg.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        prev_sample = tab["x0_coef"] * pred_original_sample + tab["xt_coef"] * sample  # μ̃_t, (B, C, H, W)

        if self._adds_noise[i]:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                 dtype=model_output.dtype)  # fmt: skip
            if cfg.variance_type == "learned":
                std_dev_t = predicted_variance**0.5
            elif cfg.variance_type == "learned_range":
                frac = (predicted_variance + 1) / 2  # v ∈ [−1, 1] interpolates log β̃_t … log β_t
                std_dev_t = torch.exp(0.5 * (frac * tab["log_var_large"] + (1 - frac) * tab["log_var_small"]))
            elif cfg.variance_type == "fixed_large":
                std_dev_t = tab["std_large"]
            else:  # "fixed_small", "fixed_small_log", None: σ_t = √β̃_t
                std_dev_t = tab["std_small"]
            prev_sample = prev_sample + std_dev_t * noise  # x_{t−1}, (B, C, H, W)

        self._end_step()
        if not return_dict:
            return prev_sample, pred_original_sample
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
