"""The whole denoising loop as one CUDA graph: recorded once for fixed shapes, then replayed.

A 50-step guided sampling loop launches thousands of small kernels (UNet, guidance combine, scheduler update);
at small batch the GPU waits on the CPU that launches them. :class:`CapturedLoop` records every kernel of the
loop, scheduler update and guidance combine included, into one ``torch.cuda.CUDAGraph`` and replays it with a
single launch. The loop must be a pure function of its tensor inputs with fixed shapes and no host
synchronisation (ldm_hub's schedulers index their tables on the device for that reason), and must not draw
random numbers (DDIM with eta=0, PLMS and DPM-Solver qualify; DDPM and DDIM with eta>0 do not).

Use it through :meth:`ldm_hub.LDMPipeline.enable_cuda_graph`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

# Graphs kept per pipeline (one per distinct shape / step count / guidance setting); the oldest goes first.
MAX_CACHED_GRAPHS = 4
# Eager runs before capture, on a side stream: lazy initialisation (cuBLAS handles, autotuning) must not be
# recorded.
WARMUP_RUNS = 2


class CapturedLoop:
    """``run(*inputs) -> tensor`` recorded as one CUDA graph over static copies of ``inputs``.

    Calling it copies new inputs (same shapes and dtypes; None stays None) into the static buffers, replays the
    graph and returns a clone of the static output, so a later replay never overwrites an earlier result.
    ``graph_factory`` and ``capture`` default to ``torch.cuda.CUDAGraph`` and ``torch.cuda.graph``.

    Example:
        ```py
        >>> loop = CapturedLoop(lambda x: (x * 2).sin(), [torch.randn(4, device="cuda")])  # doctest: +SKIP
        >>> loop(torch.ones(4, device="cuda"))  # one graph launch  # doctest: +SKIP
        ```
    """

    def __init__(
        self,
        run: Callable[..., torch.Tensor],
        inputs: list[torch.Tensor | None],
        *,
        warmup: int = WARMUP_RUNS,
        graph_factory: Callable[[], object] | None = None,
        capture: Callable | None = None,
    ):
        self.static_inputs = [None if x is None else x.clone() for x in inputs]
        self.replays = 0
        on_cuda = any(x is not None and x.is_cuda for x in self.static_inputs)
        if on_cuda:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    run(*self.static_inputs)
            torch.cuda.current_stream().wait_stream(side)
        else:
            for _ in range(warmup):
                run(*self.static_inputs)
        self.graph = (graph_factory or torch.cuda.CUDAGraph)()
        with (capture or torch.cuda.graph)(self.graph):
            self.static_output = run(*self.static_inputs)

    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        if len(inputs) != len(self.static_inputs):
            raise ValueError(f"expected {len(self.static_inputs)} inputs, got {len(inputs)}")
        for i, (buffer, new) in enumerate(zip(self.static_inputs, inputs)):
            if (buffer is None) != (new is None) or (new is not None and new.shape != buffer.shape):
                got = None if new is None else tuple(new.shape)
                want = None if buffer is None else tuple(buffer.shape)
                raise ValueError(f"input {i}: the graph was captured for shape {want}, got {got}")
            if buffer is not None:
                buffer.copy_(new)
        self.graph.replay()
        self.replays += 1
        return self.static_output.clone()


class GraphCache:
    """Captured loops by key (shapes, dtype, steps, guidance, scheduler), least recently used dropped first."""

    def __init__(self, size: int = MAX_CACHED_GRAPHS):
        self.size = size
        self.loops: OrderedDict[Hashable, CapturedLoop] = OrderedDict()
        self.captures = 0

    def get(self, key: Hashable, build: Callable[[], CapturedLoop]) -> CapturedLoop:
        if key in self.loops:
            self.loops.move_to_end(key)
            return self.loops[key]
        loop = build()
        self.captures += 1
        self.loops[key] = loop
        while len(self.loops) > self.size:
            self.loops.popitem(last=False)
        return loop
