"""DDIM: non-Markovian sampling, x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1−ᾱ_{t−1}−σ_t²) ε̂ + σ_t z (arXiv 2010.02502)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config

# diffusers' pipeline loader saves a component as [module, class] and looks "SchedulerMixin" up in that module
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401
from diffusers.utils.torch_utils import randn_tensor

from .common import (
    DiscreteScheduler,
    SchedulerOutput,
    convert_prediction,
    spaced_timesteps,
)

# The CompVis ``DDIMSampler`` (ldm/models/diffusion/ddim.py) expressed as config: its timesteps are
# range(0, T, T // S) + 1 and its last step lands on ᾱ_0 rather than 1, and it never clips x̂_0.
COMPVIS_DDIM: dict[str, Any] = {
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "timestep_spacing": "leading",
    "clip_sample": False,
}


class DDIMScheduler(DiscreteScheduler):
    """The DDIM sampler (Song et al. 2021): deterministic at η = 0, DDPM-like at η = 1.

    Config fields mean what they mean in diffusers' ``DDIMScheduler`` (same names and defaults), so either class
    loads the other's ``scheduler_config.json``. As in diffusers, ``step`` is a function of (model output, t,
    x_t) for any t in [0, T): the step from t goes to t − T//S (for "leading" spacing that is exactly the next
    timestep of the schedule); below 0 it lands on ᾱ = 1 (``set_alpha_to_one``) or ᾱ_0. With custom timesteps
    (``set_timesteps(timesteps=[...])``, which diffusers' DDIM lacks) the step from τ_i goes to τ_{i+1}.

    **The CompVis DDIM sampler** (the LDM paper's own, used for its FID tables) is this class with
    ``steps_offset=1, set_alpha_to_one=False, timestep_spacing="leading", clip_sample=False``: timesteps
    range(0, 1000, 1000 // S) + 1 and alphas_prev[0] = ᾱ_0. :meth:`compvis` builds it; LDM's "linear" β schedule
    is ``beta_schedule="scaled_linear"`` with the model's ``linear_start``/``linear_end``.

    Args:
        num_train_timesteps: T, the length of the training chain.
        beta_start, beta_end, beta_schedule: β_1, β_T and the curve between ("linear", "scaled_linear",
            "squaredcos_cap_v2"); ``trained_betas`` overrides all three.
        clip_sample, clip_sample_range: clamp x̂_0 to [−range, range] (pixel-space models).
        set_alpha_to_one: ᾱ used after the last step: 1 (True) or ᾱ_0 (False, CompVis).
        steps_offset: added to the "leading" timesteps (CompVis: 1).
        prediction_type: "epsilon" (ε), "sample" (x_0) or "v_prediction" (v).
        thresholding, dynamic_thresholding_ratio, sample_max_value: Imagen's dynamic thresholding of x̂_0 (in
            place of ``clip_sample``; see ``common.threshold_sample``).
        timestep_spacing: "leading", "trailing" or "linspace" (see ``spaced_timesteps``).
        rescale_betas_zero_snr: rescale β so that ᾱ_T = 0 (Lin et al., arXiv 2305.08891; pair with v_prediction
            and "trailing" spacing).

    Example:
        >>> import torch
        >>> from ldm_hub.schedulers.ddim import DDIMScheduler
        >>> scheduler = DDIMScheduler.compvis(beta_start=0.0015, beta_end=0.0195)  # LDM celebahq / cin settings
        >>> scheduler.set_timesteps(20)
        >>> scheduler.timesteps[:3].tolist(), scheduler.timesteps[-1].item()
        ([951, 901, 851], 1)
        >>> x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> for t in scheduler.timesteps:
        ...     x = scheduler.step(0.1 * x, t, x, eta=0.0).prev_sample  # 0.1 * x stands in for ε_θ(x_t, t)
        >>> x.shape
        torch.Size([1, 3, 8, 8])
    """

    _diffusers_name = "DDIMScheduler"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
    ):
        self._init_schedule(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, timestep_spacing,
            rescale_betas_zero_snr=rescale_betas_zero_snr, set_alpha_to_one=set_alpha_to_one,
        )  # fmt: skip

    @classmethod
    def compvis(cls, beta_schedule: str = "scaled_linear", **config) -> DDIMScheduler:
        """The CompVis ``DDIMSampler`` of the LDM repository as a DDIMScheduler (see the class docstring).

        ``config`` sets the β schedule (``beta_start``/``beta_end`` = the YAML's ``linear_start``/``linear_end``)
        and the prediction type; the four fields that make it CompVis' sampler are fixed.
        """
        for field, value in COMPVIS_DDIM.items():
            if field in config and config[field] != value:
                raise ValueError(
                    f"DDIMScheduler.compvis: {field}={config[field]!r} conflicts with CompVis ({value!r})"
                )
        return cls(beta_schedule=beta_schedule, **{**config, **COMPVIS_DDIM})

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the S sampling timesteps (evenly spaced, or the descending ``timesteps`` given); the ᾱ table
        goes to ``device``."""
        custom = self._check_timestep_args(num_inference_steps, timesteps)
        cfg = self.config
        self.custom_timesteps = custom is not None
        if custom is None:
            custom = spaced_timesteps(cfg.num_train_timesteps, num_inference_steps, cfg.timestep_spacing,
                                      cfg.steps_offset)  # fmt: skip
        self.num_inference_steps = len(custom)
        self._set_timestep_list(custom, device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """One DDIM step x_t → x_{t−δ}, δ = T//S (eq. 12, σ_t from eq. 16).

        | variable              | DDIM paper                                         |
        |-----------------------|----------------------------------------------------|
        | sample                | x_t                                                |
        | model_output          | ε_θ^{(t)}(x_t) (or x_0 / v, see prediction_type)   |
        | alpha_bar, alpha_bar_prev | α_t, α_{t−δ} (the final ᾱ when t − δ < 0)     |
        | pred_epsilon          | ε̂ = ε_θ^{(t)}(x_t)                                 |
        | pred_original_sample  | x̂_0 = f_θ^{(t)}(x_t) = (x_t − √(1−α_t) ε̂)/√α_t   (eq. 9; "predicted x_0", eq. 12) |
        | eta                   | η                                                  |
        | std_dev_t             | σ_t(η) = η √((1−α_{t−δ})/(1−α_t)) √(1−α_t/α_{t−δ})  (eq. 16) |
        | pred_sample_direction | √(1−α_{t−δ}−σ_t²) ε̂  ("direction pointing to x_t")  |
        | noise                 | ε_t ~ N(0, I): ``variance_noise``, or drawn with ``generator`` when η > 0 |
        | prev_sample           | x_{t−δ} = √α_{t−δ} x̂_0 + √(1−α_{t−δ}−σ_t²) ε̂ + σ_t ε_t  (eq. 12) |

        (The DDIM paper writes α_t for what DDPM and this code call ᾱ_t.) ``eta`` is a Python float. x̂_0 is
        thresholded (``thresholding``) or clipped (``clip_sample``); ``use_clipped_model_output`` then re-derives ε̂
        from it (GLIDE; diffusers' DDIMPipeline passes it). ``timestep`` is any t in [0, T) (a Python int, a host
        tensor or an element of ``timesteps``); with custom timesteps it must be one of them.
        Returns ``SchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        if self.num_inference_steps is None:
            raise ValueError("DDIMScheduler: call set_timesteps(num_inference_steps) before step()")
        if variance_noise is not None and generator is not None:
            raise ValueError("DDIMScheduler: pass generator or variance_noise to step(), not both")
        t = self._begin_step(timestep)
        self._check_in_range(t)
        cfg = self.config
        position = self._position(t, timestep) if self.custom_timesteps or t in self._positions else None
        if self.custom_timesteps:
            t_prev = self._timestep_list[position + 1] if position + 1 < len(self._timestep_list) else -1
        else:
            t_prev = t - cfg.num_train_timesteps // self.num_inference_steps

        alpha_bar, alpha_bar_prev = self._alpha_bar(t), self._alpha_bar(t_prev)  # 0-d, no device sync
        beta_bar = 1 - alpha_bar
        pred_original_sample, pred_epsilon = convert_prediction(
            model_output, sample, alpha_bar**0.5, beta_bar**0.5, cfg.prediction_type
        )
        pred_original_sample = self._threshold_or_clip(pred_original_sample)
        variance = (1 - alpha_bar_prev) / beta_bar * (1 - alpha_bar / alpha_bar_prev)  # σ_t(η = 1)²
        std_dev_t = eta * variance**0.5  # σ_t(η)
        if use_clipped_model_output:  # ε̂ consistent with the clipped x̂_0
            pred_epsilon = (sample - alpha_bar**0.5 * pred_original_sample) / beta_bar**0.5

        pred_sample_direction = (1 - alpha_bar_prev - std_dev_t**2) ** 0.5 * pred_epsilon  # (B, C, H, W)
        prev_sample = alpha_bar_prev**0.5 * pred_original_sample + pred_sample_direction  # (B, C, H, W)
        if eta > 0:
            if variance_noise is None:
                variance_noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                              dtype=model_output.dtype)  # fmt: skip
            prev_sample = prev_sample + std_dev_t * variance_noise  # x_{t−δ}, (B, C, H, W)

        self._step_index = None if position is None else position + 1
        if not return_dict:
            return prev_sample, pred_original_sample
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
