"""PLMS: pseudo linear multistep sampling on the DDIM transfer (PNDM, arXiv 2202.09778), as in CompVis LDM."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config

# diffusers' pipeline loader saves a component as [module, class] and looks "SchedulerMixin" up in that module
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401

from .common import (
    DiscreteScheduler,
    SchedulerOutput,
    convert_prediction,
    spaced_timesteps,
)

# Adams–Bashforth weights on ε_t, ε_{t+δ}, ε_{t+2δ}, ε_{t+3δ} for 2, 3 and 4 stored predictions (PNDM eq. 12
# and its lower-order warm-up); the sum of each row is its denominator.
ADAMS_BASHFORTH = {
    2: ((3, -1), 2),
    3: ((23, -16, 5), 12),
    4: ((55, -59, 37, -9), 24),
}
HISTORY = max(ADAMS_BASHFORTH)  # ε predictions kept


class PLMSScheduler(DiscreteScheduler):
    """The PLMS sampler of CompVis LDM / Stable Diffusion (PNDM's linear multistep part, no Runge–Kutta warm-up).

    It equals diffusers' ``PNDMScheduler(skip_prk_steps=True)`` step for step, timesteps included: for S steps
    ``timesteps`` has S + 1 entries, the second one repeated. Each step goes from its timestep t to t − δ
    (δ = T//S), the first of a loop with its own ε; the second, at the next timestep, redoes the first interval
    with the mean of the two ε's (a pseudo improved-Euler / Heun step, crowsonkb's CompVis PLMS start); later
    steps combine the last 2, 3, then 4 ε's with Adams–Bashforth weights (PNDM eq. 12) and move along the DDIM
    transfer φ (PNDM eq. 9). As in diffusers, the loop is counted from the first ``step`` after
    ``set_timesteps``, so ``for t in timesteps[k:]`` starts part-way. ``skip_prk_steps`` is kept in the config
    (always True) so diffusers reads the config as this sampler.

    Config fields mean what they mean in diffusers' ``PNDMScheduler`` (same names and defaults). As there,
    "v_prediction" outputs are combined across steps first and converted to ε at the current step.

    Args:
        num_train_timesteps: T, the length of the training chain.
        beta_start, beta_end, beta_schedule: β_1, β_T and the curve between ("linear", "scaled_linear",
            "squaredcos_cap_v2"); ``trained_betas`` overrides all three.
        skip_prk_steps: must be True (the Runge–Kutta warm-up of F-PNDM is not implemented).
        set_alpha_to_one: ᾱ used after the last step: 1 (True) or ᾱ_0 (False, CompVis).
        prediction_type: "epsilon" or "v_prediction".
        timestep_spacing, steps_offset: how the S steps are placed (CompVis / SD: "leading" with offset 1).

    Example:
        >>> import torch
        >>> from ldm_hub.schedulers.plms import PLMSScheduler
        >>> scheduler = PLMSScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        ...                           steps_offset=1)
        >>> scheduler.set_timesteps(10)
        >>> scheduler.timesteps.tolist()
        [901, 801, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        >>> x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> for t in scheduler.timesteps:
        ...     x = scheduler.step(0.1 * x, t, x).prev_sample  # 0.1 * x stands in for ε_θ(x_t, t)
        >>> x.shape
        torch.Size([1, 4, 8, 8])
    """

    _diffusers_name = "PNDMScheduler"

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        skip_prk_steps: bool = True,
        set_alpha_to_one: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        if skip_prk_steps is not True:
            raise ValueError(
                f"PLMSScheduler: unsupported skip_prk_steps={skip_prk_steps!r}; only the PLMS sampler "
                "(skip_prk_steps=True) is implemented, not PNDM's Runge-Kutta warm-up"
            )
        self._init_schedule(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, timestep_spacing,
            prediction_types=("epsilon", "v_prediction"), set_alpha_to_one=set_alpha_to_one,
        )  # fmt: skip
        self._pin_config("skip_prk_steps")  # diffusers' PNDMScheduler defaults it to False
        self._eps_history: list[torch.Tensor] = []
        self._first_sample: torch.Tensor | None = None
        self.counter = 0

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """The S + 1 PLMS timesteps (second one repeated) and the ᾱ table on ``device``; starts a new loop."""
        self._check_timestep_args(num_inference_steps, None)
        self.num_inference_steps = num_inference_steps
        cfg = self.config
        grid = spaced_timesteps(cfg.num_train_timesteps, num_inference_steps, cfg.timestep_spacing, cfg.steps_offset)
        timesteps = np.concatenate([grid[:1], grid[1:2], grid[1:]])  # τ_1, τ_2, τ_2, τ_3, …, τ_S
        self._set_timestep_list(timesteps, device)
        self._eps_history = []
        self._first_sample = None
        self.counter = 0

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """One PLMS step x_t → x_{t−δ} (PNDM eq. 9 and 12); deterministic.

        | variable             | PNDM paper                                                        |
        |----------------------|-------------------------------------------------------------------|
        | sample               | x_t                                                               |
        | model_output         | ε_θ(x_t, t) (or v, see prediction_type)                           |
        | eps_history          | e_t, e_{t+δ}, e_{t+2δ}, e_{t+3δ}: the last four ε predictions       |
        | eps_prime            | e'_t = (55 e_t − 59 e_{t+δ} + 37 e_{t+2δ} − 9 e_{t+3δ})/24  (eq. 12; lower first) |
        | alpha_bar, alpha_bar_prev | ᾱ_t, ᾱ_{t−δ} (the final ᾱ when t − δ < 0)                    |
        | prev_sample          | x_{t−δ} = φ(x_t, e'_t, t, t−δ)                                   (eq. 9)   |
        |                      | = √(ᾱ_{t−δ}/ᾱ_t) x_t − (ᾱ_{t−δ} − ᾱ_t) e'_t / (ᾱ_t√(1−ᾱ_{t−δ}) + √(ᾱ_t(1−ᾱ_t)ᾱ_{t−δ}))
        | pred_original_sample | x̂_0 = (x_t − √(1−ᾱ_t) e'_t)/√ᾱ_t                                  |

        Steps 1–2 of a loop warm up: step 1 transfers with its own ε; step 2 restarts from step 1's x_t and
        goes from t + δ to t with the mean of the two ε's, a pseudo improved-Euler step (CompVis PLMS). Its ε at
        the Euler point is not kept in the history. ``timestep`` is any timestep of the schedule (a Python int, a
        host tensor or an element of ``timesteps``); one outside it is refused.
        Returns ``SchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        if self.num_inference_steps is None:
            raise ValueError("PLMSScheduler: call set_timesteps(num_inference_steps) before step()")
        t = self._begin_step(timestep)
        position = self._position(t, timestep)  # refuses a t outside the schedule
        delta = self.config.num_train_timesteps // self.num_inference_steps  # δ
        t_from, t_to = (t + delta, t) if self.counter == 1 else (t, t - delta)
        self._check_in_range(t_from)

        if self.counter == 1:  # the improved-Euler correction: redo the first interval from the saved x_t
            eps_prime = (model_output + self._eps_history[-1]) / 2
            sample = self._first_sample
            self._first_sample = None
        else:
            self._eps_history = [*self._eps_history[-(HISTORY - 1) :], model_output]
            if self.counter == 0:
                self._first_sample = sample
            n = len(self._eps_history)
            if n == 1:
                eps_prime = model_output
            else:
                weights, denominator = ADAMS_BASHFORTH[n]
                combined = sum(w * e for w, e in zip(weights, reversed(self._eps_history)))
                eps_prime = combined / denominator  # e'_t, (B, C, H, W)

        alpha_bar, alpha_bar_prev = self._alpha_bar(t_from), self._alpha_bar(t_to)  # 0-d, no device sync
        alpha, sigma = alpha_bar**0.5, (1 - alpha_bar) ** 0.5  # √ᾱ_t, √(1 − ᾱ_t)
        if self.config.prediction_type == "v_prediction":  # v → ε at this step's x_t (as diffusers does)
            _, eps_prime = convert_prediction(eps_prime, sample, alpha, sigma, "v_prediction")

        # φ(x_t, e', t, t − δ): the DDIM (η = 0) transfer in the form of PNDM eq. 9
        eps_denominator = (
            alpha_bar * (1 - alpha_bar_prev) ** 0.5 + (alpha_bar * (1 - alpha_bar) * alpha_bar_prev) ** 0.5
        )
        prev_sample = (alpha_bar_prev / alpha_bar) ** 0.5 * sample - (
            alpha_bar_prev - alpha_bar
        ) * eps_prime / eps_denominator  # x_{t−δ}, (B, C, H, W)
        pred_original_sample = (sample - sigma * eps_prime) / alpha  # x̂_0

        self.counter += 1
        self._step_index = position + 1
        if not return_dict:
            return prev_sample, pred_original_sample
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
