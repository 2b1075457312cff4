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
    loads the other's ``scheduler_config.json``. As in diffusers, the step from τ_i always goes to τ_i − T//S
    (for "leading" spacing that is exactly τ_{i+1}); below 0 it lands on ᾱ = 1 (``set_alpha_to_one``) or ᾱ_0.
    ``thresholding`` and ``rescale_betas_zero_snr`` are not implemented (a config asking for them raises).

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
        timestep_spacing: "leading", "trailing" or "linspace" (see ``spaced_timesteps``).

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
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
    ):
        self._init_schedule(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, timestep_spacing
        )
        # ᾱ after the last step: 1 (x_0 itself) or ᾱ_0 (CompVis' alphas_prev[0])
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

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

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose the S sampling timesteps and build the per-step ᾱ_t, ᾱ_{t−1} tables on ``device``."""
        self._check_num_inference_steps(num_inference_steps)
        self.num_inference_steps = num_inference_steps
        cfg = self.config
        T, spacing = cfg.num_train_timesteps, cfg.timestep_spacing
        timesteps = spaced_timesteps(T, num_inference_steps, spacing, cfg.steps_offset)
        self._set_timestep_list(timesteps, device)

        stride = cfg.num_train_timesteps // num_inference_steps
        alpha_bar_ext = torch.cat([self.alphas_cumprod, self.final_alpha_cumprod.reshape(1)])  # [T] = final ᾱ
        t = torch.from_numpy(timesteps)
        t_prev = t - stride
        t_prev = torch.where(t_prev >= 0, t_prev, cfg.num_train_timesteps)
        alpha_bar = alpha_bar_ext[t]  # ᾱ_t
        alpha_bar_prev = alpha_bar_ext[t_prev]  # ᾱ_{t−1}
        tables = {
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": alpha_bar**0.5,
            "sqrt_one_minus_alpha_bar": (1 - alpha_bar) ** 0.5,
            "sqrt_alpha_bar_prev": alpha_bar_prev**0.5,
            # σ_t(η = 1)² = (1−ᾱ_{t−1})/(1−ᾱ_t) · (1 − ᾱ_t/ᾱ_{t−1})   (eq. 16)
            "sqrt_variance": ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)) ** 0.5,
        }
        self._tables = {k: v.to(device) for k, v in tables.items()}

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        *,
        use_clipped_model_output: bool = False,
    ) -> SchedulerOutput | tuple:
        """One DDIM step x_t → x_{t−1} (eq. 12, σ_t from eq. 16).

        | variable              | DDIM paper                                         |
        |-----------------------|----------------------------------------------------|
        | sample                | x_t                                                |
        | model_output          | ε_θ^{(t)}(x_t) (or x_0 / v, see prediction_type)   |
        | pred_epsilon          | ε̂ = ε_θ^{(t)}(x_t)                                 |
        | pred_original_sample  | x̂_0 = f_θ^{(t)}(x_t) = (x_t − √(1−α_t) ε̂)/√α_t   (eq. 9; "predicted x_0", eq. 12) |
        | eta                   | η                                                  |
        | std_dev_t             | σ_t(η) = η √((1−α_{t−1})/(1−α_t)) √(1−α_t/α_{t−1})  (eq. 16) |
        | pred_sample_direction | √(1−α_{t−1}−σ_t²) ε̂  ("direction pointing to x_t")  |
        | noise                 | ε_t ~ N(0, I), drawn with ``generator`` when η > 0  |
        | prev_sample           | x_{t−1} = √α_{t−1} x̂_0 + √(1−α_{t−1}−σ_t²) ε̂ + σ_t ε_t  (eq. 12) |

        (The DDIM paper writes α_t for what DDPM and this code call ᾱ_t.) ``eta`` is a Python float.
        ``use_clipped_model_output`` re-derives ε̂ from the clipped x̂_0 (GLIDE; diffusers' DDIMPipeline passes it).
        ``timestep`` must be ``timesteps[step_index]``; it is checked when it is a Python int or a host tensor.
        Returns ``SchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        i = self._begin_step(timestep)
        cfg = self.config
        tab = {k: v[i] for k, v in self._tables.items()}  # 0-d tensors of step i (indexing: no device sync)

        pred_original_sample, pred_epsilon = convert_prediction(
            model_output, sample, tab["sqrt_alpha_bar"], tab["sqrt_one_minus_alpha_bar"], cfg.prediction_type
        )
        if cfg.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        if use_clipped_model_output:  # ε̂ consistent with the clipped x̂_0
            pred_epsilon = (sample - tab["sqrt_alpha_bar"] * pred_original_sample) / tab["sqrt_one_minus_alpha_bar"]

        std_dev_t = eta * tab["sqrt_variance"]  # σ_t(η)
        pred_sample_direction = (1 - tab["alpha_bar_prev"] - std_dev_t**2) ** 0.5 * pred_epsilon  # (B, C, H, W)
        prev_sample = tab["sqrt_alpha_bar_prev"] * pred_original_sample + pred_sample_direction  # (B, C, H, W)
        if eta > 0:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                 dtype=model_output.dtype)  # fmt: skip
            prev_sample = prev_sample + std_dev_t * noise  # x_{t−1}, (B, C, H, W)

        self._end_step()
        if not return_dict:
            return prev_sample, pred_original_sample
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
