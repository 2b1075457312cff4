"""Exponential moving average of weights (the EMA the released LDM checkpoints are sampled with)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

# CompVis LitEma warm-up: the decay at update n is min(decay, (1 + n) / (EMA_WARMUP_OFFSET + n)).
EMA_WARMUP_OFFSET = 10


class ExponentialMovingAverage:
    """θ_ema ← d·θ_ema + (1 − d)·θ after every optimizer step, d = min(decay, (1+n)/(10+n)) with warm-up.

    Keeps fp32 shadow copies of the given parameters; ``state_dict``/``load_state_dict`` make it part of a
    checkpoint, ``copy_to`` writes the averages into a model for saving or sampling.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> ema = ExponentialMovingAverage(net.parameters(), decay=0.9)
        >>> _ = net.weight.data.add_(1.0); ema.update(net.parameters())
        >>> ema.num_updates
        1
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float = 0.9999, warmup: bool = True):
        self.decay, self.warmup = float(decay), bool(warmup)
        self.shadow = [p.detach().float().clone() for p in parameters]
        self.num_updates = 0

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (EMA_WARMUP_OFFSET + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        decay = self.current_decay()
        params = [p.detach().float() for p in parameters]
        if len(params) != len(self.shadow):
            raise ValueError(f"EMA tracks {len(self.shadow)} tensors, got {len(params)}")
        torch._foreach_lerp_(self.shadow, params, 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        for p, s in zip(parameters, self.shadow):
            p.copy_(s.to(p.dtype))

    def to(self, device) -> ExponentialMovingAverage:
        self.shadow = [s.to(device) for s in self.shadow]
        return self

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": [s.clone() for s in self.shadow],
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state['shadow'])} tensors, the model {len(self.shadow)}")
        device = self.shadow[0].device if self.shadow else "cpu"
        self.decay, self.warmup = float(state["decay"]), bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        self.shadow = [s.to(device=device, dtype=torch.float32) for s in state["shadow"]]
