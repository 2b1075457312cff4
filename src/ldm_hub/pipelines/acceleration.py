"""The pipeline's fast paths, in one place: fused QKV projections, ``torch.compile`` of its models, and the
whole denoising loop recorded as one CUDA graph (:mod:`ldm_hub.pipelines.cuda_graph`).

:class:`AccelerationMixin` is mixed into :class:`~ldm_hub.LDMPipeline`; :func:`denoise_step` is the one step
z_t → z_{t−1} that both the eager loop and the recorded loop run. Imports: models, schedulers, cuda_graph.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch

from ..models import denoiser
from ..schedulers import DDIMScheduler, DPMSolverMultistepScheduler, PLMSScheduler
from .cuda_graph import CapturedLoop, GraphCache

logger = logging.getLogger(__name__)
# The reasons the CUDA-graph fallback notice has given in this process: each is said once (a CPU run would
# otherwise repeat it on every call), later calls log it at debug level.
_FALLBACK_NOTICES_GIVEN: set[str] = set()

# torch.compile modes that record CUDA graphs themselves (they cannot nest in enable_cuda_graph's recording).
COMPILE_MODES_WITH_CUDA_GRAPHS = ("reduce-overhead", "max-autotune")


def _tensors_in(value) -> list[torch.Tensor]:
    """Every tensor inside nested dicts / lists / tuples (a scheduler's attributes)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors_in(item)]
    return []


def denoise_step(
    unet, scheduler, latents, t, context, concat, guidance_scale, step_kwargs, tiles=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step z_t → z_{t−1}: ε̂ = ε_θ(z_t, t, y) (:func:`~ldm_hub.models.denoiser.predict_noise`, one batched
    call when guided), then the scheduler update. Tensor ops only (no host sync), so the whole loop of them can
    be recorded as one CUDA graph."""
    model_input = scheduler.scale_model_input(latents, t)  # (B, c, h, w)
    noise_pred = denoiser.predict_noise(
        unet, model_input, t, context=context, concat=concat, guidance_scale=guidance_scale, tiles=tiles
    )
    latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
    return latents, noise_pred


class AccelerationMixin:
    """Fast paths of :class:`~ldm_hub.LDMPipeline` (they change speed, never the images)."""

    # Set by enable_cuda_graph(); None: the plain loop.
    _cuda_graphs: GraphCache | None = None
    _compile_mode: str | None = None

    def fuse_qkv_projections(self) -> None:
        """Fuse the UNet's q/k/v (self-attention) and k/v (cross-attention) projections into single GEMMs; the
        images and the saved weights are unchanged. :meth:`unfuse_qkv_projections` undoes it."""
        self.unet.fuse_qkv_projections()

    def unfuse_qkv_projections(self) -> None:
        """Undo :meth:`fuse_qkv_projections`."""
        self.unet.unfuse_qkv_projections()

    def enable_compile(self, components: tuple[str, ...] = ("unet",), **torch_compile_kwargs) -> None:
        """Compile models with ``torch.compile(fullgraph=True, **torch_compile_kwargs)``, in place.

        ``components``: any of ``"unet"`` (ε_θ), ``"vae"`` (the decoder D the pipeline calls) and
        ``"cond_encoder"`` (τ_θ). Each stays the same module (same class, state dict and ``save_pretrained``);
        only its call goes through the compiled graph. ``fullgraph=True`` makes any graph break an error rather
        than a silent slowdown. With :meth:`enable_cuda_graph` (which records the whole loop itself) pick a mode
        without CUDA graphs of its own, e.g. ``mode="max-autotune-no-cudagraphs"``.

        Example:
            ```py
            >>> pipe.enable_compile(mode="reduce-overhead")  # doctest: +SKIP
            >>> components = ("unet", "vae", "cond_encoder")
            >>> pipe.enable_compile(components, mode="max-autotune-no-cudagraphs")  # doctest: +SKIP
            ```
        """
        targets = {
            "unet": lambda: self.unet,
            "vae": lambda: self.vae.decoder,
            "cond_encoder": lambda: self.cond_encoder,
        }
        unknown = set(components) - set(targets)
        if unknown:
            raise ValueError(f"enable_compile: unknown component(s) {sorted(unknown)}; choose from {sorted(targets)}")
        kwargs = {"fullgraph": True, **torch_compile_kwargs}
        if self._cuda_graphs is not None and kwargs.get("mode") in COMPILE_MODES_WITH_CUDA_GRAPHS:
            raise ValueError(
                f"enable_cuda_graph records the loop itself: mode={kwargs['mode']!r} brings CUDA graphs of its own; "
                "compile with mode='max-autotune-no-cudagraphs' (or none)"
            )
        for name in components:
            module = targets[name]()
            if module is None:
                raise ValueError(f"enable_compile: this pipeline has no {name}")
            module.compile(**kwargs)
        self._compile_mode = kwargs.get("mode")

    def enable_cuda_graph(self) -> None:
        """Record the whole denoising loop (ε_θ calls, guidance combine, scheduler updates) as one CUDA graph
        per input shape / step count / guidance scale, and replay it on later calls with one launch.

        Applies to calls on a CUDA device whose scheduler step draws no noise (DDIM with ``eta=0``, PLMS,
        DPM-Solver), without tiling or ``callback_on_step_end``; any other call runs the plain loop (with a
        warning). The first call of a new shape records (slower); inputs are copied into static buffers and
        the result is a fresh tensor. Combine with ``enable_compile(mode="max-autotune-no-cudagraphs")``.

        Example:
            ```py
            >>> pipe = LDMPipeline.from_pretrained(path, torch_dtype=torch.bfloat16).to("cuda")  # doctest: +SKIP
            >>> pipe.enable_cuda_graph()  # doctest: +SKIP
            >>> image = pipe("a red circle", guidance_scale=3.0).images[0]  # records, then replays  # doctest: +SKIP
            ```
        """
        if self._compile_mode in COMPILE_MODES_WITH_CUDA_GRAPHS:
            raise ValueError(
                f"the UNet is compiled with mode={self._compile_mode!r}, which brings its own CUDA graphs; compile "
                "with mode='max-autotune-no-cudagraphs' (or none) before enable_cuda_graph"
            )
        self._cuda_graphs = GraphCache()

    def disable_cuda_graph(self) -> None:
        """Back to the plain loop; recorded graphs are freed."""
        self._cuda_graphs = None

    def set_attention_slice(self, slice_size) -> None:
        """Not offered (diffusers' ``enable_attention_slicing`` lands here): ldm_hub's attention runs on
        ``F.scaled_dot_product_attention``, whose memory-efficient kernels never hold the full attention matrix.
        ``disable_attention_slicing()`` is accepted; asking for a slice size is an error rather than ignored."""
        if slice_size is not None:
            raise ValueError(
                f"attention slicing (slice_size={slice_size!r}) is not offered: ldm_hub's attention uses SDPA's "
                "memory-efficient kernels; to bound memory use pipe.vae.enable_slicing() / enable_tiling() or "
                "tile_size= (super-resolution, semantic maps)"
            )

    def _step_draws_noise(self, eta: float) -> bool:
        """Whether the scheduler's update draws random numbers (then the loop is not replayable as a graph)."""
        if isinstance(self.scheduler, DDIMScheduler):
            return eta > 0
        return not isinstance(self.scheduler, (PLMSScheduler, DPMSolverMultistepScheduler))

    def _loop_runner(self, num_inference_steps: int, guidance_scale, step_kwargs: dict, device) -> Callable:
        """``run(latents, context, concat) -> z_0``: the loop over a private copy of the scheduler. Its device
        tables are made once here, before any CUDA-graph capture (a host-to-device copy cannot be recorded), and
        shared read-only by every run; each run gets its own step state, and keeps the tables alive as long as a
        graph recorded from it."""
        template = copy.deepcopy(self.scheduler)
        template.set_timesteps(num_inference_steps, device=device)  # device tables made here, outside any capture
        shared = {id(v): v for v in _tensors_in(vars(template))}  # tables are read-only: every run shares them
        runs = []

        def run(latents, context, concat):
            scheduler = copy.deepcopy(template, memo=dict(shared))  # fresh step state, no tensor copied
            runs.append(scheduler)  # keep what the recorded kernels read alive
            for t in scheduler.timesteps:
                latents, _ = denoise_step(
                    self.unet, scheduler, latents, t, context, concat, guidance_scale, step_kwargs
                )
            return latents

        return run

    def _captured_loop(self, latents, context, concat, guidance_scale, steps, eta, step_kwargs, eligible: bool):
        """The recorded loop for these inputs, or None to run the plain loop."""
        if self._cuda_graphs is None:
            return None
        reason = None
        if latents.device.type != "cuda":
            reason = f"the pipeline runs on {latents.device.type}, not CUDA"
        elif not eligible:
            reason = "tiled sampling and callback_on_step_end run step by step"
        elif self._step_draws_noise(eta):
            reason = f"{type(self.scheduler).__name__} (eta={eta}) draws noise in its steps"
        if reason is not None:
            level = logging.DEBUG if reason in _FALLBACK_NOTICES_GIVEN else logging.WARNING
            _FALLBACK_NOTICES_GIVEN.add(reason)
            logger.log(level, "enable_cuda_graph: the plain loop runs (said once per process): %s", reason)
            return None

        def shape(x):
            return None if x is None else tuple(x.shape)

        key = (
            shape(latents), latents.dtype, shape(context), shape(concat), guidance_scale, steps, eta, id(self.unet),
            type(self.scheduler).__name__, self.scheduler.config.__repr__(),
        )  # fmt: skip

        def record() -> CapturedLoop:
            run = self._loop_runner(steps, guidance_scale, step_kwargs, latents.device)
            return CapturedLoop(run, [latents, context, concat])

        return self._cuda_graphs.get(key, record)
