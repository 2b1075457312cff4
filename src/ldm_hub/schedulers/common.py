"""What every ldm_hub scheduler shares: the β schedule, the forward process q(x_t | x_0), timestep bookkeeping.

The discrete-time diffusion of DDPM (arXiv 2006.11239) over T training steps:

    β_1..β_T                      the noise schedule ("linear", "scaled_linear" = LDM's "linear", "squaredcos_cap_v2")
    α_t = 1 − β_t,  ᾱ_t = ∏_{s≤t} α_s
    q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)                         (DDPM eq. 4)

A sampler walks a sub-sequence of S timesteps τ_1 > … > τ_S (``timesteps``). ``step(model_output, t, x_t)``
works like diffusers' schedulers of the same name: it takes any timestep ``t``. What a step needs from ``t`` is
read on the host, without waiting on the device: ``t`` is a Python int, a host tensor, or an element of
``scheduler.timesteps`` (``for t in scheduler.timesteps[k:]`` yields views of it, whose position is known from
their storage offset). The coefficients are then 0-d tensors indexed out of tables built on the target device in
``set_timesteps()``, so ``step()`` launches kernels and never reads a value back.

Config fields carry the names diffusers uses for the same concept, so a diffusers ``scheduler_config.json``
loads into ours and ours into diffusers'.
"""

from __future__ import annotations

import functools
import inspect
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
# GeoDiff's sigmoid schedule (Xu et al., arXiv 2203.02923): β = β_start + (β_end − β_start) σ(u), u ∈ [−6, 6].
SIGMOID_SCHEDULE_RANGE = 6.0
# The Laplace schedule (Hang et al., arXiv 2407.03297): log-SNR λ(u) = −sign(½ − u) · ½ log(1 − 2|½ − u| + ε).
LAPLACE_SCHEDULE_EPS = 1e-6

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
    schedules: Sequence[str] = BETA_SCHEDULES,
) -> torch.Tensor:
    """β_1..β_T (float32) for one of the named schedules, or ``trained_betas`` verbatim.

    "scaled_linear" is linear in √β (β_t = (√β_start + (t−1)/(T−1)·(√β_end − √β_start))²): what the LDM / CompVis
    configs call "linear". "squaredcos_cap_v2" is the cosine schedule with β_t capped; "sigmoid" and "laplace"
    (DDPM only, as in diffusers) are GeoDiff's and Hang et al.'s.
    """
    if trained_betas is not None:
        betas = torch.tensor(np.asarray(trained_betas), dtype=torch.float32)
        if betas.ndim != 1 or betas.numel() != num_train_timesteps:
            raise ValueError(
                f"{owner}: trained_betas has shape {tuple(betas.shape)}, expected ({num_train_timesteps},) "
                "(one β per training timestep, num_train_timesteps)"
            )
        return betas
    check_choice(owner, "beta_schedule", beta_schedule, schedules)
    T = num_train_timesteps
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if beta_schedule == "sigmoid":
        u = torch.linspace(-SIGMOID_SCHEDULE_RANGE, SIGMOID_SCHEDULE_RANGE, T)
        return torch.sigmoid(u) * (beta_end - beta_start) + beta_start

    def cosine(u: float) -> float:  # ᾱ at the fraction u = t/T of the way through the chain
        return math.cos((u + COSINE_SCHEDULE_OFFSET) / (1 + COSINE_SCHEDULE_OFFSET) * math.pi / 2) ** 2

    def laplace(u: float) -> float:  # √(SNR/(1 + SNR)) at the log-SNR λ(u) of the Laplace schedule
        lam = -0.5 * math.copysign(1, 0.5 - u) * math.log(1 - 2 * abs(0.5 - u) + LAPLACE_SCHEDULE_EPS)
        snr = math.exp(lam)
        return math.sqrt(snr / (1 + snr))

    alpha_bar = cosine if beta_schedule == "squaredcos_cap_v2" else laplace
    betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), COSINE_SCHEDULE_MAX_BETA) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """β's whose last ᾱ is exactly 0 (zero terminal SNR), Lin et al. arXiv 2305.08891, Algorithm 1.

    √ᾱ_t is shifted so that √ᾱ_T = 0 and scaled so that √ᾱ_1 keeps its value; β's are read back from the ratios.
    """
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()  # √ᾱ_t
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def threshold_sample(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding of x̂_0 (Saharia et al., Imagen, arXiv 2205.11487, §2.3).

    Per sample, s = the ``ratio`` quantile of |x̂_0| clamped to [1, ``max_value``]; x̂_0 ← clamp(x̂_0, −s, s)/s.
    Device ops only (no value is read back). Computed in float32 for half inputs.
    """
    dtype = x0.dtype
    flat = x0.reshape(x0.shape[0], -1)  # (B, C·H·W)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)  # (B, 1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(dtype)


def spaced_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int
) -> np.ndarray:
    """The S sampling timesteps τ_1 > … > τ_S (int64, descending) of DDPM/DDIM/PLMS.

    The three spacings of Lin et al. (arXiv 2305.08891, Table 2), with Δ = T // S:
      "leading":  {0, Δ, 2Δ, …, (S−1)Δ} + steps_offset   (CompVis DDIM/PLMS with steps_offset=1)
      "trailing": round(T, T − T/S, …, T/S) − 1           (always starts at T − 1)
      "linspace": round(linspace(0, T − 1, S))

    Where the offset would push the first timestep to T or beyond (S = T with "leading" and steps_offset=1,
    which diffusers' DDIM indexes past its table), the schedule is shifted down to end at T − 1: S = T is then
    every training timestep, T − 1 … 0.
    """
    T, S = num_train_timesteps, num_inference_steps
    if spacing == "leading":
        ts = (np.arange(0, S) * (T // S)).round()[::-1].astype(np.int64) + steps_offset
        if ts[0] > T - 1:
            ts -= ts[0] - (T - 1)
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


@functools.cache
def _diffusers_fields(class_name: str) -> frozenset[str]:
    """The ``__init__`` fields of diffusers' scheduler class ``class_name`` (empty if diffusers has no such class)."""
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if not isinstance(cls, type):
        return frozenset()
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


class DiscreteScheduler(HubMixin, SchedulerMixin, ConfigMixin):
    """Shared base of ldm_hub's samplers over T discrete training timesteps (not used on its own).

    Subclasses call :meth:`_init_schedule` from their ``@register_to_config`` ``__init__``, build their
    per-step tables in ``set_timesteps`` and read the timestep of a ``step`` with :meth:`_begin_step`.
    """

    _compatibles = DIFFUSERS_COMPATIBLES
    order = 1
    init_noise_sigma = 1.0
    # The diffusers class this one reproduces (its config fields are ours too).
    _diffusers_name: str = ""
    # Fields of that diffusers class that ldm_hub does not implement, with the values that leave them "off"
    # (their defaults). The constructor refuses any other value, naming field and value.
    _unimplemented_fields: Mapping[str, tuple] = {}

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' ``from_config``, refusing config fields this scheduler does not know (ValueError naming them).

        Fields of the other diffusers scheduler classes are dropped quietly, as diffusers does when switching
        classes; a field no installed diffusers scheduler has (a newer diffusers' addition, a typo) is refused
        unless the config marks it as left at its default (``_use_default_values``).
        """
        if isinstance(config, Mapping):
            defaulted = set(config.get("_use_default_values", []))
            given = {k: v for k, v in config.items() if k not in defaulted}
            cls._refuse_unknown({**given, **kwargs})
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    @classmethod
    def _refuse_unknown(cls, config: Mapping[str, Any]) -> None:
        known = set(inspect.signature(cls.__init__).parameters)
        for name in {*DIFFUSERS_COMPATIBLES, config.get("_class_name", "")}:
            known |= _diffusers_fields(name)
        for field, value in config.items():
            if not field.startswith("_") and field not in known:
                raise ValueError(
                    f"{cls.__name__}: unknown config field {field}={value!r} (no diffusers scheduler of this "
                    "installation has it, so ldm_hub cannot honour it)"
                )

    def _refuse_unimplemented(self, values: Mapping[str, Any]) -> None:
        for field, off in self._unimplemented_fields.items():
            value = values[field]
            if value not in off:
                raise ValueError(
                    f"{type(self).__name__}: unsupported {field}={value!r} (not implemented in ldm_hub; only "
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
        rescale_betas_zero_snr: bool = False,
        beta_schedules: Sequence[str] = BETA_SCHEDULES,
        set_alpha_to_one: bool = True,
    ) -> None:
        """Validate the shared fields and set β, α, ᾱ and the empty sampling state."""
        owner = type(self).__name__
        check_choice(owner, "prediction_type", prediction_type, prediction_types)
        check_choice(owner, "timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        betas = make_betas(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, owner, beta_schedules
        )
        self.betas = rescale_zero_terminal_snr(betas) if rescale_betas_zero_snr else betas
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # ᾱ_t, t = 0..T−1 (kept on the host)
        # ᾱ "after the last step" (t = −1): 1, or ᾱ_0 (CompVis' alphas_prev[0]) with set_alpha_to_one=False
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self._alphas_cumprod_by_device: dict[torch.device, torch.Tensor] = {}
        self.num_inference_steps: int | None = None
        self.custom_timesteps = False
        self._set_timestep_list(np.arange(num_train_timesteps - 1, -1, -1, dtype=np.int64), None)

    # ------------------------------------------------------------------------------------------ timesteps
    def _check_timestep_args(self, num_inference_steps: int | None, timesteps) -> np.ndarray | None:
        """Validate ``set_timesteps``' arguments; the custom timesteps as int64 (None when not given)."""
        owner, T = type(self).__name__, self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError(f"{owner}: pass num_inference_steps or timesteps to set_timesteps, not both")
        if num_inference_steps is None and timesteps is None:
            raise ValueError(f"{owner}: set_timesteps needs num_inference_steps or timesteps")
        if timesteps is None:
            if not 1 <= num_inference_steps <= T:
                raise ValueError(
                    f"{owner}: num_inference_steps={num_inference_steps} must be between 1 and num_train_timesteps={T}"
                )
            return None
        values = [int(t) for t in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps)]
        if not values:
            raise ValueError(f"{owner}: timesteps=[] is empty")
        for i, t in enumerate(values):
            if not 0 <= t < T:
                raise ValueError(f"{owner}: timesteps[{i}]={t} is outside [0, num_train_timesteps={T})")
            if i and t >= values[i - 1]:
                raise ValueError(
                    f"{owner}: timesteps must be strictly descending; timesteps[{i}]={t} follows {values[i - 1]}"
                )
        return np.asarray(values, dtype=np.int64)

    def _set_timestep_list(self, timesteps: np.ndarray, device) -> None:
        self._timestep_list = [int(t) for t in timesteps]
        self.timesteps = torch.from_numpy(np.array(timesteps, dtype=np.int64)).to(device)
        if self.timesteps._base is not None:  # its elements are recognised as views of this very tensor
            self.timesteps = self.timesteps.clone()
        self._positions: dict[int, list[int]] = {}
        for i, t in enumerate(self._timestep_list):
            self._positions.setdefault(t, []).append(i)
        # ᾱ_t on the device for t = 0..T−1, and at index T the ᾱ after the last step
        table = torch.cat([self.alphas_cumprod, self.final_alpha_cumprod.reshape(1).to(torch.float32)])
        self._alpha_bar_table = table.to(device)
        self._step_index: int | None = None

    @property
    def step_index(self) -> int | None:
        """Position in ``timesteps`` of the next step, after a step at a schedule timestep; None before one."""
        return self._step_index

    def _begin_step(self, timestep) -> int:
        """The value of ``timestep`` as a Python int, read without a device sync.

        A Python or NumPy int, a host tensor, or an element of ``self.timesteps`` (a view of it, wherever it
        lives: its position comes from the storage offset). Any other tensor on a device would have to be read
        back, so it is refused with a ValueError saying what to pass instead.
        """
        owner = type(self).__name__
        if isinstance(timestep, (int, np.integer)) and not isinstance(timestep, bool):
            return int(timestep)
        if isinstance(timestep, torch.Tensor) and timestep.numel() == 1:
            if timestep.is_floating_point() or timestep.is_complex():
                raise ValueError(f"{owner}: timestep must be an integer, got a {timestep.dtype} tensor")
            schedule = self.timesteps
            if timestep._base is schedule and timestep.dtype == schedule.dtype:
                return self._timestep_list[
                    (timestep.storage_offset() - schedule.storage_offset()) // schedule.stride(0)
                ]
            if timestep.device.type == "cpu":
                return int(timestep)  # a host tensor: reading it does not wait on any device
            raise ValueError(
                f"{owner}: step() got a timestep tensor on {timestep.device} that is not an element of "
                "scheduler.timesteps; its value cannot be read without a device sync. Pass a Python int, a host "
                "tensor or an element of scheduler.timesteps"
            )
        raise ValueError(f"{owner}: timestep must be an int or a one-element integer tensor, got {timestep!r}")

    def _check_in_range(self, t: int) -> None:
        T = self.config.num_train_timesteps
        if not 0 <= t < T:
            raise ValueError(f"{type(self).__name__}: timestep={t} is outside [0, num_train_timesteps={T})")

    def _given_position(self, timestep) -> int | None:
        """The position in ``timesteps`` of ``timestep`` when it is an element of it (a view), else None."""
        schedule = self.timesteps
        if isinstance(timestep, torch.Tensor) and timestep._base is schedule and timestep.numel() == 1:
            return (timestep.storage_offset() - schedule.storage_offset()) // schedule.stride(0)
        return None

    def _position(self, t: int, timestep=None) -> int:
        """Index of ``t`` in ``timesteps``: the element passed, else the step the loop is at if it is there, else
        the first occurrence of ``t``; a ``t`` outside the schedule is refused."""
        positions = self._positions.get(t)
        if not positions:
            raise ValueError(
                f"{type(self).__name__}: timestep={t} is not in this schedule (timesteps={self._timestep_list})"
            )
        given = self._given_position(timestep)
        if given is not None:
            return given
        return self._step_index if self._step_index in positions else positions[0]

    def _alpha_bar(self, t: int) -> torch.Tensor:
        """ᾱ_t as a 0-d tensor on the tables' device; for t < 0 the ᾱ after the last step."""
        return self._alpha_bar_table[t if t >= 0 else self.config.num_train_timesteps]

    # ------------------------------------------------------------------------------------- shared methods
    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Identity: these samplers feed x_t to ε_θ unscaled (init_noise_sigma = 1)."""
        return sample

    def _threshold_or_clip(self, x0: torch.Tensor) -> torch.Tensor:
        """x̂_0 dynamically thresholded (``thresholding``), else clamped to ±``clip_sample_range`` (``clip_sample``)."""
        cfg = self.config
        if cfg.thresholding:
            return threshold_sample(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
        if cfg.get("clip_sample", False):
            return x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        return x0

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
