"""The models' speed tricks live in ``ldm_hub.models.cpu_kernels`` alone, and its in-place helpers are exact.

The numerics of each trick are checked where the trick is used: the packed convolution in test_layers.py, the
small-head attention padding and the in-place UNet path against the autograd path in test_fast_paths.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ldm_hub
from ldm_hub.models import cpu_kernels

SRC = Path(ldm_hub.__file__).parent
KERNELS = SRC / "models" / "cpu_kernels.py"
# Where the models' forwards live: every models/ file but the kernels, and LDMBert's.
MODEL_FILES = sorted(p for p in (SRC / "models").glob("*.py") if p != KERNELS) + [SRC / "conditioning" / "text.py"]

# The packed convolution's and the padding's machinery: torch's oneDNN ops and the kernels' own settings.
MACHINERY = {
    "mkldnn",
    "to_mkldnn",
    "_convolution_pointwise",
    "mkldnn_reorder_conv2d_weight",
    "is_compiling",
    "_PREPACK",
    "PACKED_ATTR",
    "CPU_MIN_HEAD_DIM",
    "CPU_PAD_MIN_KEYS",
    "NATIVE_MAX_NUMEL",
    "PACK_MIN_CHANNELS",
}
# F.pad and direct F.scaled_dot_product_attention calls that are the architecture, not a speed trick.
ALLOWED_PAD = {("unet.py", "timestep_embedding"), ("autoencoder_blocks.py", "Downsample.forward")}
ALLOWED_SDPA = {  # single-head over C >= 32 channels; a masked 77-token text encoder (below CPU_PAD_MIN_KEYS)
    ("autoencoder_blocks.py", "SpatialSelfAttention.forward"),
    ("text.py", "LDMBertSelfAttention.forward"),
}


def _nodes(path: Path):
    """(qualified name of the enclosing function or class, node) for every node of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def walk(node, scope):
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            yield inner, child
            yield from walk(child, inner)

    yield from walk(tree, "")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _violations(path: Path, root: Path = SRC) -> list[str]:
    found = []
    for scope, node in _nodes(path):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')} ({scope or 'module'})"
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if name in MACHINERY:
            found.append(f"{where}: {name}")
        if isinstance(node, ast.Constant) and node.value == cpu_kernels.PACKED_ATTR:
            found.append(f"{where}: the packed-weight cache key")
        if isinstance(node, ast.keyword) and node.arg == "inplace":
            found.append(f"{where}: inplace=")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        method, receiver = node.func.attr, _dotted(node.func.value)
        if method.endswith("_") and not method.endswith("__") and not receiver.endswith("init"):
            found.append(f"{where}: in-place .{method}()")  # nn.init.*_ at construction is no trick
        if receiver == "torch" and method == "is_grad_enabled" and scope.endswith("forward"):
            found.append(f"{where}: a forward branching on autograd")
        if receiver == "F" and method == "pad" and (path.name, scope) not in ALLOWED_PAD:
            found.append(f"{where}: F.pad")
        if receiver == "F" and method == "scaled_dot_product_attention" and (path.name, scope) not in ALLOWED_SDPA:
            found.append(f"{where}: F.scaled_dot_product_attention (use cpu_kernels.scaled_dot_product_attention)")
    return found


def test_only_the_kernels_module_touches_the_speed_machinery():
    """No model file names torch's oneDNN ops, the packing / padding settings, ``inplace=``, an in-place tensor
    method, an autograd branch in a forward, or pads / calls SDPA outside the architecture's own places."""
    found = [v for path in MODEL_FILES for v in _violations(path)]
    assert not found, "speed tricks outside models/cpu_kernels.py:\n" + "\n".join(found)
    # ... and nothing else in the package reaches for oneDNN either
    onednn_ops = {"mkldnn", "to_mkldnn", "_convolution_pointwise", "mkldnn_reorder_conv2d_weight"}
    elsewhere = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in SRC.rglob("*.py")
        if path != KERNELS
        for _, node in _nodes(path)
        if isinstance(node, ast.Attribute) and node.attr in onednn_ops
    ]
    assert not elsewhere


def test_the_check_sees_the_tricks(tmp_path):
    """The AST check above flags each form the tricks took before they moved (so its silence means something)."""
    (tmp_path / "old.py").write_text(
        "import torch\nimport torch.nn.functional as F\n"
        "class Block:\n"
        "    def forward(self, x, h, q):\n"
        "        inplace = not torch.is_grad_enabled()\n"
        "        h = F.silu(h, inplace=inplace)\n"
        "        w = torch._C._nn.mkldnn_reorder_conv2d_weight(x.to_mkldnn())\n"
        "        q = F.scaled_dot_product_attention(F.pad(q, (0, 12)), q, q)\n"
        "        return h.add_(x)\n"
    )
    found = " | ".join(_violations(tmp_path / "old.py", root=tmp_path))
    for needle in ("autograd", "inplace=", "mkldnn_reorder_conv2d_weight", "to_mkldnn", "F.pad", "SDPA", ".add_()"):
        assert needle.replace("SDPA", "scaled_dot_product_attention") in found, needle


@pytest.mark.parametrize(
    "helper, plain",
    [
        (cpu_kernels.add, lambda a, b: a + b),
        (cpu_kernels.mul, lambda a, b: a * b),
        (lambda a, b: cpu_kernels.silu(a), lambda a, b: F.silu(a)),
    ],
    ids=["add", "mul", "silu"],
)
def test_in_place_helpers(helper, plain):
    """Under no_grad the helper writes into its first argument; with autograd on it leaves both alone and
    gradients flow; both give the plain expression's values bit for bit (also broadcasting a (B, C, 1, 1) term)."""
    fresh, other = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 1, 1)
    expected = plain(fresh, other)
    with torch.no_grad():
        buffer = fresh.clone()
        out = helper(buffer, other)
    assert out is buffer and torch.equal(out, expected)
    leaf = fresh.clone().requires_grad_()
    out = helper(leaf, other)
    assert out is not leaf and torch.equal(leaf.detach(), fresh) and torch.equal(out.detach(), expected)
    out.sum().backward()
    assert leaf.grad is not None


def test_packed_conv2d_declines_what_torch_does_better():
    """``packed_conv2d`` answers None (the caller runs torch's convolution) for autograd, 1×1, fp64, narrow
    convolutions and when switched off; otherwise it gives the convolution."""
    conv = nn.Conv2d(16, 16, 3, padding=1).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(cpu_kernels.packed_conv2d(conv, x), conv(x), rtol=1e-4, atol=1e-5)
        assert cpu_kernels.packed_conv2d(nn.Conv2d(16, 16, 1), x) is None
        assert cpu_kernels.packed_conv2d(nn.Conv2d(4, 16, 3), torch.randn(2, 4, 8, 8)) is None
        assert cpu_kernels.packed_conv2d(conv.double(), x.double()) is None
        cpu_kernels.set_cpu_prepacking(False)
        try:
            assert cpu_kernels.packed_conv2d(conv.float(), x) is None
        finally:
            cpu_kernels.set_cpu_prepacking(True)
    assert cpu_kernels.packed_conv2d(conv, x.requires_grad_()) is None
