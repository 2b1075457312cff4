"""What every ldm_hub scheduler shares: the β schedule, the forward process q(x_t | x_0), the step-index bookkeeping.

The discrete-time diffusion of DDPM (arXiv 2006.11239) over T training steps:

    β_1..β_T                      the noise schedule ("linear", "scaled_linear" = LDM's "linear", "squaredcos_cap_v2")
    α_t = 1 − β_t,  ᾱ_t = ∏_{s≤t} α_s
    q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)                         (DDPM eq. 4)

A sampler walks a sub-sequence of S timesteps τ_1 > … > τ_S. Every scheduler here keeps a Python-int step index
into that list (advanced by ``step()``, reset by ``set_timesteps()``) and reads its per-step coefficients from
tables built once in ``set_timesteps()`` on the target device, so ``step()`` never waits on the device.

Config fields carry the names diffusers uses for the same concept, so a diffusers ``scheduler_config.json``
loads into ours and ours into diffusers'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import (
    KarrasDiffusionSchedulers,
    SchedulerMixin,
)
from diffusers.utils import BaseOutput

from ..hub_mixin import HubMixin

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# Cosine schedule of Nichol & Dhariwal (arXiv 2102.09672, eq. 17): ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2),
# with the offset s and the cap on β_t that paper uses.
COSINE_SCHEDULE_OFFSET = 0.008
COSINE_SCHEDULE_MAX_BETA = 0.999

# Scheduler classes of diffusers whose configs describe the same discrete-time process; diffusers'
# ``from_config`` uses this list to drop the other classes' fields quietly when switching.
DIFFUSERS_COMPATIBLES = [e.name for e in KarrasDiffusionSchedulers]


@dataclass
class SchedulerOutput(BaseOutput):
    """Output of a scheduler's ``step``.

    Args:
        prev_sample: x_{t−1} (the next, less noisy sample), shape of the input sample. Feed it to the next step.
        pred_original_sample: x̂_0, the prediction of the clean sample made at this step (for previews/guidance).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def check_choice(owner: str, field: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise a ValueError naming ``field`` when ``value`` is not one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{owner}: unsupported {field}={value!r}; expected one of {list(allowed)}")


def make_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: Sequence[float] | np.ndarray | None = None,
    owner: str = "scheduler",
) -> torch.Tensor:
    """β_1..β_T (float32) for one of the named schedules, or ``trained_betas`` verbatim.

    "scaled_linear" is linear in √β (β_t = (√β_start + (t−1)/(T−1)·(√β_end − √β_start))²): what the LDM / CompVis
    configs call "linear". "squaredcos_cap_v2" is the cosine schedule with β_t capped.
    """
    if trained_betas is not None:
        betas = torch.tensor(np.asarray(trained_betas), dtype=torch.float32)
        if betas.ndim != 1 or betas.numel() != num_train_timesteps:
            raise ValueError(
                f"{owner}: trained_betas has shape {tuple(betas.shape)}, expected ({num_train_timesteps},) "
                "(one β per training timestep, num_train_timesteps)"
            )
        return betas
    check_choice(owner, "beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2

    def alpha_bar(u: float) -> float:  # ᾱ at the fraction u = t/T of the way through the chain
        return math.cos((u + COSINE_SCHEDULE_OFFSET) / (1 + COSINE_SCHEDULE_OFFSET) * math.pi / 2) ** 2

    T = num_train_timesteps
    betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), COSINE_SCHEDULE_MAX_BETA) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def spaced_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int
) -> np.ndarray:
    """The S sampling timesteps τ_1 > … > τ_S (int64, descending) of DDPM/DDIM/PLMS.

    The three spacings of Lin et al. (arXiv 2305.08891, Table 2), with Δ = T // S:
      "leading":  {0, Δ, 2Δ, …, (S−1)Δ} + steps_offset   (CompVis DDIM/PLMS with steps_offset=1)
      "trailing": round(T, T − T/S, …, T/S) − 1           (always starts at T − 1)
      "linspace": round(linspace(0, T − 1, S))
    """
    T, S = num_train_timesteps, num_inference_steps
    if spacing == "leading":
        ts = (np.arange(0, S) * (T // S)).round()[::-1].astype(np.int64) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / S)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, S).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"unsupported timestep_spacing={spacing!r}; expected one of {list(TIMESTEP_SPACINGS)}")
    return ts.copy()


def convert_prediction(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    prediction_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_0, ε̂) from the network output, for x_t = α x_0 + σ ε (α = √ᾱ_t, σ = √(1 − ᾱ_t) for VP schedules).

    "epsilon": ε̂ = output,  x̂_0 = (x_t − σ ε̂)/α                      (DDPM eq. 15 / DDIM eq. 12)
    "sample":  x̂_0 = output, ε̂ = (x_t − α x̂_0)/σ
    "v_prediction": v = α ε − σ x_0 (Salimans & Ho, arXiv 2202.00512): x̂_0 = α x_t − σ v, ε̂ = α v + σ x_t
    """
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - sigma * eps) / alpha
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - alpha * x0) / sigma
    elif prediction_type == "v_prediction":
        x0 = alpha * sample - sigma * model_output
        eps = alpha * model_output + sigma * sample
    else:  # construction already rejects other values
        raise ValueError(f"unsupported prediction_type={prediction_type!r}")
    return x0, eps


def _expand_to(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) or () → (B, 1, …, 1) so it broadcasts against ``like``."""
    return values.flatten().reshape(-1, *([1] * (like.ndim - 1)))


class DiscreteScheduler(HubMixin, SchedulerMixin, ConfigMixin):
    """Shared base of ldm_hub's samplers over T discrete training timesteps (not used on its own).

    Subclasses call :meth:`_init_schedule` from their ``@register_to_config`` ``__init__``, build their
    per-step tables in ``set_timesteps`` and use :meth:`_begin_step` / :meth:`_end_step` around ``step``.
    """

    _compatibles = DIFFUSERS_COMPATIBLES
    order = 1
    init_noise_sigma = 1.0

    # Fields of diffusers' scheduler configs that we do not implement, with the values that leave them "off".
    # A config asking for anything else is refused by name instead of being dropped silently.
    _unsupported_config: Mapping[str, tuple] = {"thresholding": (False,), "rescale_betas_zero_snr": (False,)}

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' ``from_config``, refusing config values this scheduler cannot honour (ValueError naming them)."""
        if isinstance(config, Mapping):
            defaulted = set(config.get("_use_default_values", []))
            given = {k: v for k, v in config.items() if k not in defaulted}
            cls._refuse_unsupported({**given, **kwargs})
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def _refuse_unsupported(cls, config: Mapping[str, Any]) -> None:
        for field, off in cls._unsupported_config.items():
            if field in config and config[field] not in off:
                raise ValueError(
                    f"{cls.__name__}: unsupported {field}={config[field]!r} (ldm_hub implements only "
                    f"{' or '.join(f'{field}={v!r}' for v in off)})"
                )

    def _pin_config(self, *fields: str) -> None:
        """Mark ``fields`` as explicitly set, so diffusers' ``from_config`` carries them over even if defaulted."""
        if "_use_default_values" in self.config:
            defaulted = [k for k in self.config["_use_default_values"] if k not in fields]
            self.register_to_config(_use_default_values=defaulted)

    def _init_schedule(
        self,
        num_train_timesteps: int,
        beta_start: float,
        beta_end: float,
        beta_schedule: str,
        trained_betas,
        prediction_type: str,
        timestep_spacing: str,
        prediction_types: Sequence[str] = PREDICTION_TYPES,
    ) -> None:
        """Validate the shared fields and set β, α, ᾱ and the empty sampling state."""
        owner = type(self).__name__
        check_choice(owner, "prediction_type", prediction_type, prediction_types)
        check_choice(owner, "timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, owner)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # ᾱ_t, t = 0..T−1 (kept on the host)
        self._alphas_cumprod_by_device: dict[torch.device, torch.Tensor] = {}
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self._timestep_list: list[int] = []
        self._step_index: int | None = None
        self._begin_index: int | None = None

    def _check_num_inference_steps(self, num_inference_steps: int) -> None:
        T = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= T:
            raise ValueError(
                f"{type(self).__name__}: num_inference_steps={num_inference_steps} must be between 1 and "
                f"num_train_timesteps={T}"
            )

    def _set_timestep_list(self, timesteps: np.ndarray, device) -> None:
        self._timestep_list = [int(t) for t in timesteps]
        self.timesteps = torch.from_numpy(np.asarray(timesteps, dtype=np.int64)).to(device)
        self._step_index = None
        self._begin_index = None

    # ------------------------------------------------------------------------------------ step bookkeeping
    @property
    def step_index(self) -> int | None:
        """Index into ``timesteps`` of the next ``step()``; None until the first step after ``set_timesteps``."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """Index of the first timestep to run (img2img starts part-way); set with :meth:`set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the next sampling loop at ``timesteps[begin_index]`` (call after ``set_timesteps``)."""
        self._begin_index = begin_index

    def _begin_step(self, timestep) -> int:
        """The step index of this call; checks the caller's ``timestep`` when that needs no device sync."""
        if self.num_inference_steps is None:
            raise ValueError(f"{type(self).__name__}: call set_timesteps(num_inference_steps) before step()")
        if self._step_index is None:
            self._step_index = self._begin_index or 0
        i = self._step_index
        if i >= len(self._timestep_list):
            raise ValueError(
                f"{type(self).__name__}: all {len(self._timestep_list)} timesteps have been stepped; "
                "call set_timesteps() to start a new loop"
            )
        expected = self._timestep_list[i]
        given = None
        if isinstance(timestep, (int, np.integer)):
            given = int(timestep)
        elif isinstance(timestep, torch.Tensor) and timestep.device.type == "cpu" and timestep.numel() == 1:
            given = int(timestep)  # a host tensor: reading it does not wait on any device
        if given is not None and given != expected:
            raise ValueError(
                f"{type(self).__name__}: step() got timestep={given} but the schedule is at "
                f"timesteps[{i}]={expected}; "
                "steps must follow scheduler.timesteps in order (use set_begin_index to start part-way)"
            )
        return i

    def _end_step(self) -> None:
        self._step_index += 1

    # ------------------------------------------------------------------------------------- shared methods
    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Identity: these samplers feed x_t to ε_θ unscaled (init_noise_sigma = 1)."""
        return sample

    def _alphas_cumprod_on(self, like: torch.Tensor) -> torch.Tensor:
        """ᾱ on ``like``'s device (copied once per device; ``self.alphas_cumprod`` itself stays on the host)."""
        if like.device not in self._alphas_cumprod_by_device:
            self._alphas_cumprod_by_device[like.device] = self.alphas_cumprod.to(like.device)
        return self._alphas_cumprod_by_device[like.device].to(like.dtype)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε  (DDPM eq. 4), ``timesteps`` of shape (B,) or ()."""
        alphas_cumprod = self._alphas_cumprod_on(original_samples)[timesteps.to(original_samples.device)]
        alpha_bar = _expand_to(alphas_cumprod, original_samples)  # (B, 1, 1, 1)
        return alpha_bar**0.5 * original_samples + (1 - alpha_bar) ** 0.5 * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction target v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho, arXiv 2202.00512, §4)."""
        alphas_cumprod = self._alphas_cumprod_on(sample)[timesteps.to(sample.device)]
        alpha_bar = _expand_to(alphas_cumprod, sample)  # (B, 1, 1, 1)
        return alpha_bar**0.5 * noise - (1 - alpha_bar) ** 0.5 * sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps
