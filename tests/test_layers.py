"""The packed-weight CPU convolution: same numbers as torch's, really used, never stale."""

import pytest
import torch
import torch.nn.functional as F

from ldm_hub.models import layers
from ldm_hub.models.layers import Conv2d


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=1),
        dict(kernel_size=3, stride=2, padding=0),
        dict(kernel_size=3, padding=1, bias=False),
    ],
)
def test_packed_conv_matches_torch_and_is_used(kwargs):
    conv = Conv2d(16, 24, **kwargs).eval()
    x = torch.randn(2, 16, 9, 9)
    ref = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    with torch.no_grad():
        out = conv(x)
    # the packed path ran, except for 1×1 convolutions (a GEMM: torch's own path is faster)
    assert ("_packed" in conv.__dict__) == (conv.kernel_size != (1, 1))
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_cache_follows_weight_changes_and_moves():
    conv = Conv2d(16, 16, kernel_size=3, padding=1).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        conv(x)
        assert "_packed" in conv.__dict__
        conv.weight.mul_(2)  # in-place update (load_state_dict, an optimizer step)
        out = conv(x)
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-4, atol=1e-5)
    conv.to(torch.float64)
    assert "_packed" not in conv.__dict__
    with torch.no_grad():  # fp64 takes torch's own path
        torch.testing.assert_close(conv(x.double()), F.conv2d(x.double(), conv.weight, conv.bias, padding=1))


def test_training_and_switch_off_use_torch_path():
    conv = Conv2d(16, 16, kernel_size=3, padding=1)
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    conv(x).sum().backward()  # autograd: the plain path, gradients flow
    assert "_packed" not in conv.__dict__ and x.grad is not None and conv.weight.grad is not None
    layers.set_cpu_prepacking(False)
    try:
        with torch.no_grad():
            conv(x)
        assert "_packed" not in conv.__dict__
    finally:
        layers.set_cpu_prepacking(True)


def test_copy_and_pickle_after_inference():
    import copy
    import pickle

    conv = Conv2d(16, 16, kernel_size=3, padding=1).eval()
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        ref = conv(x)
    assert "_packed" in conv.__dict__
    for clone in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert "_packed" not in clone.__dict__
        with torch.no_grad():
            torch.testing.assert_close(clone(x), ref)


def test_single_small_input_and_few_channels_take_torch_native_path():
    """Like torch's own choice: one small input (batch 1, <= 20480 elements) runs im2col + GEMM, not oneDNN; and a
    convolution into or out of fewer than 16 channels is left to torch too."""
    conv = Conv2d(16, 16, kernel_size=3, padding=1).eval()
    with torch.no_grad():
        small = torch.randn(1, 16, 16, 16)  # 4096 elements
        torch.testing.assert_close(conv(small), F.conv2d(small, conv.weight, conv.bias, padding=1))
        assert "_packed" not in conv.__dict__
        large = torch.randn(1, 16, 64, 64)  # 65536 elements
        torch.testing.assert_close(
            conv(large), F.conv2d(large, conv.weight, conv.bias, padding=1), rtol=1e-4, atol=1e-5
        )
        assert "_packed" in conv.__dict__
        for narrow in (Conv2d(4, 32, kernel_size=3, padding=1).eval(), Conv2d(32, 4, kernel_size=3, padding=1).eval()):
            x = torch.randn(2, narrow.in_channels, 16, 16)
            torch.testing.assert_close(narrow(x), F.conv2d(x, narrow.weight, narrow.bias, padding=1))
            assert "_packed" not in narrow.__dict__
