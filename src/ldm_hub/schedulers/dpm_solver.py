"""DPM-Solver / DPM-Solver++ (1, 2M, 3M; ODE and SDE): multistep diffusion solvers (Lu et al., arXiv 2206.00927,
2211.01095)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config

# diffusers' pipeline loader saves a component as [module, class] and looks "SchedulerMixin" up in that module
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401
from diffusers.utils.torch_utils import randn_tensor

from .common import DiscreteScheduler, SchedulerOutput, check_choice, convert_prediction, threshold_sample

SOLVER_ORDERS = (1, 2, 3)
SOLVER_TYPES = ("midpoint", "heun")
ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver", "sde-dpmsolver++")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
# None: the model predicts no variance. DDPM's fixed types (a DDPM config switched to DPM-Solver) mean the same,
# as in diffusers; "learned" / "learned_range": the output's extra variance channels are dropped.
VARIANCE_TYPES = (None, "learned", "learned_range", "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")
# Solver types of diffusers' DEIS / UniPC configs: switching such a config to DPM-Solver means the default
# second-order update ("midpoint"), as diffusers does.
FOREIGN_SOLVER_TYPES = {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}
FOREIGN_ALGORITHM_TYPES = {"deis": "dpmsolver++"}
# Karras et al. (arXiv 2206.00364) eq. 5: σ_i = (σ_max^{1/ρ} + i/(N−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, with their ρ.
KARRAS_RHO = 7.0
# DPM-Solver's reference implementation drops to lower orders at the end only for short schedules.
LOWER_ORDER_FINAL_MAX_STEPS = 15
# With rescale_betas_zero_snr, ᾱ_T = 0 would make σ^VE_T infinite; diffusers sets it to 2^-24 instead.
ZERO_SNR_ALPHA_BAR = 2.0**-24


class DPMSolverMultistepScheduler(DiscreteScheduler):
    """DPM-Solver (Lu et al. 2022) and DPM-Solver++ in their multistep forms of order 1, 2 ("2M") and 3 ("3M").

    They integrate the diffusion ODE in λ = log(α_t/σ_t): "dpmsolver++" with the data prediction x̂_0 (the
    default), "dpmsolver" with the noise prediction ε̂, "sde-dpmsolver++" the SDE form of DPM-Solver++ that adds
    fresh noise at every step. Config fields mean what they mean in diffusers' ``DPMSolverMultistepScheduler``
    (same names, defaults and behaviour), so either class loads the other's config. Not implemented, and accepted
    only at their defaults: "sde-dpmsolver", "flow_prediction" and the exponential / beta / Lu / flow sigmas
    (``use_exponential_sigmas``, ``use_beta_sigmas``, ``use_lu_lambdas``, ``use_flow_sigmas``, ``flow_shift``,
    ``use_dynamic_shifting``, ``time_shift_type``).

    Args:
        num_train_timesteps: T, the length of the training chain.
        beta_start, beta_end, beta_schedule: β_1, β_T and the curve between ("linear", "scaled_linear",
            "squaredcos_cap_v2"); ``trained_betas`` overrides all three.
        solver_order: 1, 2 or 3 (previous model outputs combined per step).
        prediction_type: "epsilon" (ε), "sample" (x_0) or "v_prediction" (v).
        thresholding, dynamic_thresholding_ratio, sample_max_value: Imagen's dynamic thresholding of x̂_0.
        algorithm_type: "dpmsolver++", "dpmsolver" (needs ``final_sigmas_type="sigma_min"``) or "sde-dpmsolver++".
        solver_type: the second-order correction: "midpoint" (Alg. 2) or "heun".
        lower_order_final: lower orders on the last steps (first order on the last, at most second on the one
            before) for S < 15 steps.
        euler_at_final: a first-order (Euler) last step whatever S.
        use_karras_sigmas: σ_i on Karras et al.'s ρ = 7 grid between σ_max and σ_min (timesteps rounded to match).
        final_sigmas_type: σ after the last step: "zero" (lands on x̂_0) or "sigma_min" (σ at t = 0).
        lambda_min_clipped: the schedule ends before λ_t drops below this (for cosine schedules).
        variance_type: None, or "learned" / "learned_range" for a model whose output also carries variance
            channels (dropped: the solver uses the first C channels).
        timestep_spacing, steps_offset: "linspace" (default), "leading" (+ offset) or "trailing" over S + 1 points.
        rescale_betas_zero_snr: rescale β so that ᾱ_T = 0 (Lin et al., arXiv 2305.08891; ᾱ_T stored as 2^-24).

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

    _diffusers_name = "DPMSolverMultistepScheduler"
    _unimplemented_fields = {
        "use_exponential_sigmas": (False,),
        "use_beta_sigmas": (False,),
        "use_lu_lambdas": (False,),
        "use_flow_sigmas": (False,),
        "flow_shift": (1.0,),
        "use_dynamic_shifting": (False,),
        "time_shift_type": ("exponential",),
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
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_lu_lambdas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        final_sigmas_type: str = "zero",
        lambda_min_clipped: float = -float("inf"),
        variance_type: str | None = None,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        use_dynamic_shifting: bool = False,
        time_shift_type: str = "exponential",
    ):
        owner = type(self).__name__
        self._refuse_unimplemented(locals())
        if algorithm_type in FOREIGN_ALGORITHM_TYPES:
            self.register_to_config(algorithm_type=FOREIGN_ALGORITHM_TYPES[algorithm_type])
        if solver_type in FOREIGN_SOLVER_TYPES:
            self.register_to_config(solver_type=FOREIGN_SOLVER_TYPES[solver_type])
        check_choice(owner, "algorithm_type", self.config.algorithm_type, ALGORITHM_TYPES)
        check_choice(owner, "solver_type", self.config.solver_type, SOLVER_TYPES)
        check_choice(owner, "solver_order", solver_order, SOLVER_ORDERS)
        check_choice(owner, "final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
        check_choice(owner, "variance_type", variance_type, VARIANCE_TYPES)
        if self.config.algorithm_type == "dpmsolver" and final_sigmas_type == "zero":
            raise ValueError(
                f"{owner}: final_sigmas_type='zero' does not work with algorithm_type='dpmsolver' (its ε form "
                "divides by σ = 0); use final_sigmas_type='sigma_min'"
            )
        self._init_schedule(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, timestep_spacing,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
        )  # fmt: skip
        if rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = ZERO_SNR_ALPHA_BAR
        alpha, sigma = self.alphas_cumprod**0.5, (1 - self.alphas_cumprod) ** 0.5
        self.lambda_t = torch.log(alpha) - torch.log(sigma)  # λ of each training timestep
        self.sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5  # σ^VE of each training timestep
        self._begin_index: int | None = None
        self._reset_history()

    def _reset_history(self) -> None:
        self.model_outputs: list[torch.Tensor | None] = [None] * self.config.solver_order
        self.lower_order_nums = 0
        self._step_index = None

    # ------------------------------------------------------------------------------------------ schedule
    def _spaced_timesteps(self, num_inference_steps: int) -> np.ndarray:
        """S timesteps from S + 1 evenly placed points with the t = 0 end dropped (DPM-Solver's convention), on
        [0, T′) where T′ = T minus the timesteps whose λ is below ``lambda_min_clipped``."""
        T, S, cfg = self.config.num_train_timesteps, num_inference_steps, self.config
        clipped = int(torch.searchsorted(self.lambda_t.flip(0), torch.tensor(cfg.lambda_min_clipped)))
        last = T - clipped  # T′
        if cfg.timestep_spacing == "linspace":
            ts = np.linspace(0, last - 1, S + 1).round()[::-1][:-1]
        elif cfg.timestep_spacing == "leading":
            ts = (np.arange(0, S + 1) * (last // (S + 1))).round()[::-1][:-1] + cfg.steps_offset
        else:  # "trailing"
            ts = np.arange(last, 0, -T / S).round() - 1
        if len(np.unique(ts)) < len(ts):
            # Near S = T the rounding repeats a timestep, and a step of h = λ_s − λ_t = 0 divides by zero (diffusers'
            # DPM-Solver returns NaN there): take S distinct timesteps evenly over [0, T′) instead.
            ts = np.linspace(0, last - 1, S).round()[::-1]
        return ts.astype(np.int64)

    @staticmethod
    def _karras_sigmas(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
        ramp = np.linspace(0, 1, n)
        min_inv_rho, max_inv_rho = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
        return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** KARRAS_RHO

    @staticmethod
    def _sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
        """Fractional training timestep of each σ: piecewise-linear in log σ over the training grid."""
        log_sigma = np.log(np.maximum(sigmas, 1e-10))
        below = np.searchsorted(log_sigmas.astype(np.float64), log_sigma, side="right") - 1  # last grid point ≤ σ
        low = np.clip(below, 0, len(log_sigmas) - 2)
        w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
        return (1 - w) * low + w * (low + 1)

    @property
    def begin_index(self) -> int | None:
        """Index of the first timestep to run, when set with :meth:`set_begin_index` (img2img pipelines)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the next loop at ``timesteps[begin_index]`` (call after ``set_timesteps``)."""
        self._begin_index = begin_index

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        mu: float | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the S timesteps (evenly spaced, Karras, or the descending ``timesteps`` given) and their σ's;
        build the per-point α, σ, λ tables of the solver on ``device``. ``mu`` (dynamic shifting) is not
        implemented and must be None."""
        owner, cfg = type(self).__name__, self.config
        if mu is not None:
            raise ValueError(f"{owner}: unsupported mu={mu!r} (dynamic shifting of flow sigmas is not implemented)")
        custom = self._check_timestep_args(num_inference_steps, timesteps)
        if custom is not None and cfg.use_karras_sigmas:
            raise ValueError(f"{owner}: custom timesteps cannot be combined with use_karras_sigmas=True")
        # VE noise level of the training grid, σ^VE_t = √((1 − ᾱ_t)/ᾱ_t)
        train_sigmas = (((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).numpy()
        if cfg.use_karras_sigmas:
            sigmas = self._karras_sigmas(float(train_sigmas[0]), float(train_sigmas[-1]), num_inference_steps)
            steps = self._sigma_to_t(sigmas, np.log(train_sigmas))
            if cfg.beta_schedule != "squaredcos_cap_v2":
                steps = steps.round()
        else:
            steps = self._spaced_timesteps(num_inference_steps) if custom is None else custom
            sigmas = np.interp(steps, np.arange(len(train_sigmas)), train_sigmas)
        if cfg.final_sigmas_type == "sigma_min":
            sigma_last = float(((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]) ** 0.5)
        else:
            sigma_last = 0.0
        sigmas = torch.from_numpy(np.concatenate([sigmas, [sigma_last]]).astype(np.float32))  # σ^VE_0..σ^VE_S

        self._set_timestep_list(np.asarray(steps).astype(np.int64), device)
        self.num_inference_steps = len(self._timestep_list)
        self._begin_index = None
        self._reset_history()

        # VP quantities of each point: α_i = 1/√(1 + σ_i²), σ_i ← σ_i α_i, λ_i = log α_i − log σ_i
        self.sigmas = sigmas
        alpha = 1 / (sigmas**2 + 1) ** 0.5
        sigma = sigmas * alpha
        self._tables = {
            "alpha": alpha.to(device),
            "sigma": sigma.to(device),
            "lambda": (torch.log(alpha) - torch.log(sigma)).to(device),
        }

    # --------------------------------------------------------------------------------------------- step
    def _locate(self, t: int, timestep) -> int:
        """The step index of a call at timestep ``t`` (diffusers' ``_init_step_index`` on a loop's first call).

        A loop's first call starts at ``begin_index`` if set, else at the element of ``timesteps`` passed, else
        (a bare value) where ``t`` is, its second occurrence if repeated (diffusers' img2img convention).
        """
        owner = type(self).__name__
        positions = self._positions.get(t)
        if not positions:
            raise ValueError(f"{owner}: timestep={t} is not in this schedule (timesteps={self._timestep_list})")
        i, given = self._step_index, self._given_position(timestep)
        if i is None and self._begin_index is not None:
            i = self._begin_index
        elif i is None:
            i = given if given is not None else positions[min(1, len(positions) - 1)]
        if i >= len(self._timestep_list):
            raise ValueError(
                f"{owner}: all {len(self._timestep_list)} timesteps have been stepped; "
                "call set_timesteps() to start a new loop"
            )
        if self._timestep_list[i] != t or given not in (None, i):
            got = f"timestep={t}" if given is None else f"timesteps[{given}]={t}"
            raise ValueError(
                f"{owner}: step() got {got} but this loop is at timesteps[{i}]={self._timestep_list[i]}; a "
                "multistep solver's steps follow the schedule (call set_timesteps() to start a new loop)"
            )
        return i

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """One multistep DPM-Solver(++) step from t_i to t_{i+1} (Alg. 1–2 of arXiv 2211.01095).

        | variable             | DPM-Solver(++) papers                                                |
        |----------------------|----------------------------------------------------------------------|
        | sample               | x̃_{t_i} (computed in float32)                                        |
        | alpha, sigma         | α_{t_i}, σ_{t_i} (VP: α² + σ² = 1); lambda λ_t = log(α_t/σ_t)       |
        | pred_original_sample | x_θ(x̃_{t_i}, t_i) = x̂_0, e.g. (x̃ − σ ε_θ)/α  (thresholded if asked)   |
        | model_outputs        | the last ``solver_order`` x_θ (or ε_θ for "dpmsolver"): the buffer Q  |
        | h                    | h_i = λ_{t_{i+1}} − λ_{t_i};  r_0 = h_{i−1}/h_i,  r_1 = h_{i−2}/h_i   |
        | D0, D1, D2           | m_0; (m_0 − m_1)/r_0 (3M: extrapolated); (D1_0 − D1_1)/(r_0 + r_1)   |
        | prev_sample (++, 1)  | x̃_{t_{i+1}} = (σ_{i+1}/σ_i) x̃ − α_{i+1}(e^{−h} − 1) D0  (eq. 5, Alg. 2) |
        | prev_sample (++, 2M) | … − ½ α_{i+1}(e^{−h} − 1) D1 (midpoint) or + α_{i+1}((e^{−h}−1)/h + 1) D1 (heun) |
        | prev_sample (++, 3M) | … + α_{i+1}((e^{−h}−1)/h + 1) D1 − α_{i+1}((e^{−h}−1+h)/h² − ½) D2     |
        | prev_sample (ε form) | (α_{i+1}/α_i) x̃ − σ_{i+1}(e^{h} − 1) D0 …  (arXiv 2206.00927, eq. 3.7) |
        | noise (SDE)          | z ~ N(0, I): ``variance_noise`` or drawn with ``generator``; the SDE   |
        |                      | step (σ_{i+1}/σ_i e^{−h}) x̃ + α_{i+1}(1 − e^{−2h}) D0 … + σ_{i+1}√(1 − e^{−2h}) z |

        Order: 1 on the loop's first step, 2 on its second, then ``solver_order``; the last step is first order
        with ``euler_at_final``, ``final_sigmas_type="zero"`` or ``lower_order_final`` (S < 15), and the one
        before at most second order with ``lower_order_final`` (S < 15). ``timestep`` must be a timestep of the
        schedule; the first call of a loop starts there (or at ``begin_index``), later calls follow the schedule.
        Returns ``SchedulerOutput(prev_sample, pred_original_sample)`` or that tuple.
        """
        owner, cfg = type(self).__name__, self.config
        if self.num_inference_steps is None:
            raise ValueError(f"{owner}: call set_timesteps(num_inference_steps) before step()")
        i = self._locate(self._begin_step(timestep), timestep)
        n = len(self._timestep_list)
        short = cfg.lower_order_final and n < LOWER_ORDER_FINAL_MAX_STEPS
        first_order_final = i == n - 1 and (cfg.euler_at_final or short or cfg.final_sigmas_type == "zero")
        second_order_at_most = i == n - 2 and short

        tab = self._tables
        alpha_s, sigma_s = tab["alpha"][i], tab["sigma"][i]  # α_{t_i}, σ_{t_i}: 0-d, no device sync
        if cfg.variance_type in ("learned", "learned_range"):
            model_output = model_output[:, : sample.shape[1]]  # drop the predicted-variance channels
        x0, eps = convert_prediction(model_output, sample, alpha_s, sigma_s, cfg.prediction_type)  # x_θ, ε_θ
        if cfg.thresholding:
            x0 = threshold_sample(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
            eps = (sample - alpha_s * x0) / sigma_s
        data_form = cfg.algorithm_type != "dpmsolver"
        self.model_outputs = [*self.model_outputs[1:], x0 if data_form else eps]

        sample = sample.to(torch.float32)
        noise = None
        if cfg.algorithm_type == "sde-dpmsolver++":
            if variance_noise is None:
                noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                                     dtype=torch.float32)  # fmt: skip
            else:
                noise = variance_noise.to(device=model_output.device, dtype=torch.float32)

        if cfg.solver_order == 1 or self.lower_order_nums < 1 or first_order_final:
            order = 1
        elif cfg.solver_order == 2 or self.lower_order_nums < 2 or second_order_at_most:
            order = 2
        else:
            order = 3
        prev_sample = self._update(i, order, sample, noise)
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg.solver_order)
        prev_sample = prev_sample.to(model_output.dtype)

        self._step_index = i + 1
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)

    def _update(self, i: int, order: int, sample: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """x̃_{t_{i+1}} from x̃_{t_i} and the last ``order`` model outputs (the rows of ``step``'s table)."""
        cfg, tab = self.config, self._tables
        alpha_t, sigma_t, lambda_t = tab["alpha"][i + 1], tab["sigma"][i + 1], tab["lambda"][i + 1]
        alpha_s, sigma_s, lambda_s = tab["alpha"][i], tab["sigma"][i], tab["lambda"][i]
        h = lambda_t - lambda_s
        m = self.model_outputs[::-1]  # m_0 (this step), m_1, m_2
        D0 = m[0]
        if order == 2:
            r0 = (lambda_s - tab["lambda"][i - 1]) / h
            D1 = (1.0 / r0) * (m[0] - m[1])
        elif order == 3:
            lambda_s1, lambda_s2 = tab["lambda"][i - 1], tab["lambda"][i - 2]
            r0, r1 = (lambda_s - lambda_s1) / h, (lambda_s1 - lambda_s2) / h
            D1_0, D1_1 = (1.0 / r0) * (m[0] - m[1]), (1.0 / r1) * (m[1] - m[2])
            D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
            D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
        heun = cfg.solver_type == "heun"

        if cfg.algorithm_type == "dpmsolver++":  # data prediction, ODE
            phi = torch.exp(-h) - 1.0  # e^{−h} − 1
            x = (sigma_t / sigma_s) * sample - (alpha_t * phi) * D0
            if order == 2 and not heun:
                x = x - 0.5 * (alpha_t * phi) * D1
            elif order >= 2:
                x = x + (alpha_t * (phi / h + 1.0)) * D1
            if order == 3:
                x = x - (alpha_t * ((phi + h) / h**2 - 0.5)) * D2
            return x
        if cfg.algorithm_type == "dpmsolver":  # noise prediction, ODE
            phi = torch.exp(h) - 1.0  # e^{h} − 1
            x = (alpha_t / alpha_s) * sample - (sigma_t * phi) * D0
            if order == 2 and not heun:
                x = x - 0.5 * (sigma_t * phi) * D1
            elif order >= 2:
                x = x - (sigma_t * (phi / h - 1.0)) * D1
            if order == 3:
                x = x - (sigma_t * ((phi - h) / h**2 - 0.5)) * D2
            return x
        # "sde-dpmsolver++": data prediction, SDE (noise z enters every step)
        psi = 1.0 - torch.exp(-2.0 * h)  # 1 − e^{−2h}
        x = (sigma_t / sigma_s * torch.exp(-h)) * sample + (alpha_t * psi) * D0
        if order == 2 and not heun:
            x = x + 0.5 * (alpha_t * psi) * D1
        elif order >= 2:
            x = x + (alpha_t * (psi / (-2.0 * h) + 1.0)) * D1
        if order == 3:
            x = x + (alpha_t * ((psi - 2.0 * h) / (2.0 * h) ** 2 - 0.5)) * D2
        return x + sigma_t * torch.sqrt(psi) * noise
