"""DPM-Solver++(2M) and its first-order case: a multistep data-prediction ODE solver (Lu et al., arXiv 2211.01095)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config

# diffusers' pipeline loader saves a component as [module, class] and looks "SchedulerMixin" up in that module
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401

from .common import DiscreteScheduler, SchedulerOutput, check_choice, convert_prediction

SOLVER_ORDERS = (1, 2)
SOLVER_TYPES = ("midpoint", "heun")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
# Solver types of diffusers' DEIS / UniPC configs: switching such a config to DPM-Solver means the default
# second-order update ("midpoint"), as diffusers does.
FOREIGN_SOLVER_TYPES = {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}
FOREIGN_ALGORITHM_TYPES = {"deis": "dpmsolver++"}
# Karras et al. (arXiv 2206.00364) eq. 5: σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, with their ρ.
KARRAS_RHO = 7.0
# DPM-Solver's reference implementation drops to lower orders at the end only for short schedules.
LOWER_ORDER_FINAL_MAX_STEPS = 15


class DPMSolverMultistepScheduler(DiscreteScheduler):
    """DPM-Solver++ (Lu et al. 2022) in its multistep second-order form "2M" (``solver_order=2``) or first order.

    It integrates the diffusion ODE in λ = log(α_t/σ_t) with the data prediction x̂_0 (``algorithm_type`` =
    "dpmsolver++", the only one implemented). Config fields mean what they mean in diffusers'
    ``DPMSolverMultistepScheduler`` (same names and defaults), so it reproduces that scheduler with
    ``algorithm_type="dpmsolver++"`` and ``solver_order`` 1 or 2, and either class loads the other's config.
    diffusers' other options (SDE variants, order 3, exponential/beta/Lu/flow sigmas, thresholding, …) are
    refused by name when a config turns them on.

    Args:
        num_train_timesteps: T, the length of the training chain.
        beta_start, beta_end, beta_schedule: β_1, β_T and the curve between ("linear", "scaled_linear",
            "squaredcos_cap_v2"); ``trained_betas`` overrides all three.
        solver_order: 2 (DPM-Solver++(2M)) or 1 (DPM-Solver++(1) = DDIM).
        prediction_type: "epsilon" (ε), "sample" (x_0) or "v_prediction" (v).
        algorithm_type: "dpmsolver++".
        solver_type: the second-order correction: "midpoint" (Alg. 2) or "heun".
        lower_order_final: first order on the last step (and 2M never later than that) for S < 15 steps.
        use_karras_sigmas: σ_i on Karras et al.'s ρ = 7 grid between σ_max and σ_min (timesteps rounded to match).
        final_sigmas_type: σ after the last step: "zero" (lands on x̂_0) or "sigma_min" (σ at t = 0).
        timestep_spacing, steps_offset: "linspace" (default), "leading" (+ offset) or "trailing" over S + 1 points.

    Example:
        >>> import torch
        >>> from ldm_hub.schedulers.dpm_solver import DPMSolverMultistepScheduler
        >>> scheduler = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
        ...                                         beta_end=0.012, use_karras_sigmas=True)
        >>> scheduler.set_timesteps(10)
        >>> x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> for t in scheduler.timesteps:
        ...     x = scheduler.step(0.1 * x, t, x).prev_sample  # 0.1 * x stands in for ε_θ(x_t, t)
        >>> x.shape
        torch.Size([1, 4, 8, 8])
    """

    _unsupported_config: Mapping[str, tuple] = {
        **DiscreteScheduler._unsupported_config,
        "euler_at_final": (False,),
        "use_exponential_sigmas": (False,),
        "use_beta_sigmas": (False,),
        "use_lu_lambdas": (False,),
        "use_flow_sigmas": (False,),
        "use_dynamic_shifting": (False,),
        "lambda_min_clipped": (-float("inf"),),
        # a model predicting its variance (its output has extra channels); DDPM's fixed types mean nothing here
        "variance_type": (None, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"),
    }

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        use_karras_sigmas: bool = False,
        final_sigmas_type: str = "zero",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        owner = type(self).__name__
        if algorithm_type in FOREIGN_ALGORITHM_TYPES:
            self.register_to_config(algorithm_type=FOREIGN_ALGORITHM_TYPES[algorithm_type])
        if solver_type in FOREIGN_SOLVER_TYPES:
            self.register_to_config(solver_type=FOREIGN_SOLVER_TYPES[solver_type])
        check_choice(owner, "algorithm_type", self.config.algorithm_type, ("dpmsolver++",))
        check_choice(owner, "solver_type", self.config.solver_type, SOLVER_TYPES)
        check_choice(owner, "solver_order", solver_order, SOLVER_ORDERS)
        check_choice(owner, "final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
        self._init_schedule(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, timestep_spacing
        )
        self._x0_history: list[torch.Tensor] = []

    # ------------------------------------------------------------------------------------------ schedule
    def _spaced_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """S timesteps from S + 1 evenly placed points with the t = 0 end dropped (DPM-Solver's convention)."""
        T, S, spacing = self.config.num_train_timesteps, num_inference_steps, self.config.timestep_spacing
        if spacing == "linspace":
            ts = np.linspace(0, T - 1, S + 1).round()[::-1][:-1]
        elif spacing == "leading":
            ts = (np.arange(0, S + 1) * (T // (S + 1))).round()[::-1][:-1] + self.config.steps_offset
        else:  # "trailing"
            ts = np.arange(T, 0, -T / S).round() - 1
        return ts.astype(np.int64)

    @staticmethod
    def _karras_sigmas(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
        ramp = np.linspace(0, 1, n)
        min_inv_rho, max_inv_rho = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
        return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** KARRAS_RHO

    @staticmethod
    def _sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
        """Fractional training timestep of each σ: piecewise-linear in log σ over the training grid."""
        log_sigma = np.log(sigmas)
        below = np.searchsorted(log_sigmas.astype(np.float64), log_sigma, side="right") - 1  # last grid point ≤ σ
        low = np.clip(below, 0, len(log_sigmas) - 2)
        w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
        return (1 - w) * low + w * (low + 1)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose the S timesteps and their σ's; build the per-step λ, α, σ tables of Alg. 2 on ``device``."""
        self._check_num_inference_steps(num_inference_steps)
        cfg = self.config
        # VE noise level of the training grid, σ^VE_t = √((1 − ᾱ_t)/ᾱ_t)
        train_sigmas = (((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).numpy()
        if cfg.use_karras_sigmas:
            sigmas = self._karras_sigmas(float(train_sigmas[0]), float(train_sigmas[-1]), num_inference_steps)
            timesteps = self._sigma_to_t(sigmas, np.log(train_sigmas))
            if cfg.beta_schedule != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            timesteps = self._spaced_timesteps(num_inference_steps)
            sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
        if cfg.final_sigmas_type == "sigma_min":
            sigma_last = float(((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]) ** 0.5)
        else:
            sigma_last = 0.0
        sigmas = torch.from_numpy(np.concatenate([sigmas, [sigma_last]]).astype(np.float32))  # σ^VE_0..σ^VE_S

        self._set_timestep_list(np.asarray(timesteps).astype(np.int64), device)
        self.num_inference_steps = len(self._timestep_list)
        self._x0_history = []

        # VP quantities of each point: α_i = 1/√(1 + σ_i²), σ_i ← σ_i α_i, λ_i = log α_i − log σ_i
        alpha = 1 / (sigmas**2 + 1) ** 0.5
        sigma = sigmas * alpha
        lam = torch.log(alpha) - torch.log(sigma)
        h = lam[1:] - lam[:-1]  # h_i = λ_{i+1} − λ_i (∞ when the last σ is 0)
        h_last = torch.cat([torch.full((1,), float("nan")), h[:-1]])  # h_{i−1}
        expm1_neg_h = torch.exp(-h) - 1.0  # e^{−h_i} − 1
        tables = {
            "alpha": alpha[:-1],  # α_{t_i}
            "sigma": sigma[:-1],  # σ_{t_i}
            "sigma_ratio": sigma[1:] / sigma[:-1],  # σ_{t_{i+1}}/σ_{t_i}
            "alpha_next_expm1": alpha[1:] * expm1_neg_h,  # α_{t_{i+1}} (e^{−h_i} − 1)
            "heun_coef": alpha[1:] * (expm1_neg_h / h + 1.0),  # α_{t_{i+1}} ((e^{−h_i} − 1)/h_i + 1)
            "r": h_last / h,  # r_i = h_{i−1}/h_i
        }
        self._tables = {k: v.to(device) for k, v in tables.items()}

    # --------------------------------------------------------------------------------------------- step
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """One DPM-Solver++ step from t_i to t_{i+1} (Alg. 2 of arXiv 2211.01095). ``generator`` is unused.

        | variable             | DPM-Solver++ paper                                                   |
        |----------------------|----------------------------------------------------------------------|
        | sample               | x̃_{t_{i}} (computed in float32)                                      |
        | alpha, sigma         | α_{t_i}, σ_{t_i} (VP: α² + σ² = 1); lambda λ_t = log(α_t/σ_t)       |
        | pred_original_sample | x_θ(x̃_{t_i}, t_i) = x̂_0, e.g. (x̃ − σ ε_θ)/α                          |
        | x0_history           | x_θ at t_{i−1}, t_i (the "buffer" Q of Alg. 2)                        |
        | h                    | h_i = λ_{t_{i+1}} − λ_{t_i};  r_i = h_{i−1}/h_i                      |
        | D                    | D_i = (1 + 1/(2r_i)) x_θ(t_i) − 1/(2r_i) x_θ(t_{i−1})   (midpoint)  |
        | prev_sample          | x̃_{t_{i+1}} = (σ_{t_{i+1}}/σ_{t_i}) x̃_{t_i} − α_{t_{i+1}}(e^{−h_i} − 1) D_i |

        The first step, and the last when ``lower_order_final`` (S < 15) or σ_S = 0, use D_i = x_θ(t_i): the
        first-order DPM-Solver++ update (= DDIM). "heun" weights x_θ(t_i) − x_θ(t_{i−1}) by
        α_{t_{i+1}}((e^{−h}−1)/h + 1)/r_i instead of −α_{t_{i+1}}(e^{−h}−1)/(2r_i).
        ``timestep`` must be ``timesteps[step_index]`` (checked when host-readable).
        Returns ``SchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        i = self._begin_step(timestep)
        cfg = self.config
        tab = {k: v[i] for k, v in self._tables.items()}  # 0-d tensors of step i (indexing: no device sync)
        n = len(self._timestep_list)
        last = i == n - 1
        first_order_final = last and (
            (cfg.lower_order_final and n < LOWER_ORDER_FINAL_MAX_STEPS) or cfg.final_sigmas_type == "zero"
        )

        x0, _ = convert_prediction(model_output, sample, tab["alpha"], tab["sigma"], cfg.prediction_type)  # x_θ
        self._x0_history = [*self._x0_history[-(cfg.solver_order - 1) :], x0] if cfg.solver_order > 1 else [x0]
        sample = sample.to(torch.float32)

        m0 = self._x0_history[-1]
        prev_sample = tab["sigma_ratio"] * sample - tab["alpha_next_expm1"] * m0  # first-order part, (B, C, H, W)
        if cfg.solver_order == 2 and len(self._x0_history) == 2 and not first_order_final:
            d1 = (1.0 / tab["r"]) * (m0 - self._x0_history[-2])  # (x_θ(t_i) − x_θ(t_{i−1}))/r_i
            if cfg.solver_type == "midpoint":
                prev_sample = prev_sample - 0.5 * tab["alpha_next_expm1"] * d1
            else:  # "heun"
                prev_sample = prev_sample + tab["heun_coef"] * d1
        prev_sample = prev_sample.to(model_output.dtype)

        self._end_step()
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)
