"""Shared test helpers: every parameter random, so no wrong mapping can hide behind a zero or a one."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter of ``module`` with seeded random values (in place).

    Matrices and convolution kernels get N(0, 1/fan_in) so activations stay O(1) through deep nets;
    vectors (biases, norm weights, embeddings' rows) get values around 0 or 1 with a random spread, so
    zero-initialised output layers and identity-initialised norms are random too.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        if p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            if "emb" in name and p.ndim == 2:
                fan_in = 1
            new = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
        elif name.endswith("weight"):  # norm scales
            new = 1.0 + 0.2 * torch.randn(p.shape, generator=gen)
        else:  # biases, norm shifts, scalars
            new = 0.1 * torch.randn(p.shape, generator=gen)
        p.copy_(new.to(p.dtype))
    return module


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


_HOST_READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


def no_host_syncs(monkeypatch, counts: dict | None = None) -> Callable:
    """``guard(fn, key=None)``: a wrapper that makes every tensor → Python read inside ``fn`` raise.

    On a GPU each such read is a device sync. The one exception is the schedulers' order check of a *host*
    timestep (``_begin_step``), which they skip for a timestep on a device. ``counts[key]`` counts the calls.
    """
    originals = {name: getattr(torch.Tensor, name) for name in _HOST_READS}

    def forbid(name):
        def raiser(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_name
            if caller == "_begin_step" and self.device.type == "cpu":
                return originals[name](self, *args, **kwargs)
            raise AssertionError(f"host sync: Tensor.{name} called inside the sampling loop (from {caller})")

        return raiser

    def guard(fn, key=None):
        def wrapper(*args, **kwargs):
            if key is not None:
                counts[key] += 1
            with monkeypatch.context() as m:
                for name in originals:
                    m.setattr(torch.Tensor, name, forbid(name))
                return fn(*args, **kwargs)

        return wrapper

    return guard


def install_wheel(root, tmp_path):
    """Build a real (non-editable) wheel of ``root``, install it into a fresh venv under ``tmp_path`` and return
    the venv folder. Dependencies come from this environment's site-packages (a plain path entry: its .pth
    files, including the editable ldm_hub finder, are not processed); ldm_hub itself only from the wheel."""
    import subprocess
    import sysconfig
    from pathlib import Path

    dist, venv = Path(tmp_path) / "dist", Path(tmp_path) / "venv"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, root],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("ldm_hub-*.whl")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    py = venv / "bin" / "python"
    purelib = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True, timeout=300)
    return venv
