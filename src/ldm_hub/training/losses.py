"""Losses of the first-stage training (paper §3.1, App. G; taming-transformers' VQGAN recipe).

    L_AE = L_rec(x, x̃) + w_p · LPIPS(x, x̃) + λ · w_adv · L_adv(D_ψ(x̃)) + L_reg

=============  ========================================================================================
term           here
=============  ========================================================================================
L_rec          mean |x − x̃| (L1) over pixels
LPIPS          :class:`LPIPS` (VGG16 features, learned linear weights) when its weights are given; the
               weights are *not* downloadable here (no torchvision, no Hub), so without them the term is
               dropped with a warning and the loss is L1 + adversarial + regulariser
L_adv          generator side of a hinge (or vanilla) GAN against :class:`PatchDiscriminator`, switched on
               at ``disc_start``; λ = ‖∇_{D_last} L_rec‖ / ‖∇_{D_last} L_adv‖ (adaptive weight, Esser et al.)
L_reg (KL)     ``kl_weight`` · KL(q(z|x) ‖ N(0, I)), summed per image and divided by the pixel count (the
               same ratio to L_rec as the CompVis configs, whose L_rec is a per-image sum)
L_reg (VQ)     ``codebook_weight`` · (codebook + β · commitment), from :class:`~ldm_hub.models.VQModel`
=============  ========================================================================================
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..loading import load_state_dict_file
from ..models.layers import Conv2d

# PatchGAN (pix2pix): 4×4 kernels, stride 2 until the last two layers, LeakyReLU slope, at most 8× the width.
DISC_KERNEL = 4
DISC_LEAKY_SLOPE = 0.2
DISC_MAX_WIDTH_MULT = 8
# pix2pix / taming initialisation: conv weights N(0, 0.02), norm weights N(1, 0.02).
DISC_INIT_STD = 0.02
# Adaptive weight: λ = ‖∇L_rec‖ / (‖∇L_adv‖ + ε), clamped to [0, λ_max] (taming).
ADAPTIVE_EPS = 1e-4
ADAPTIVE_MAX = 1e4

# LPIPS (Zhang et al. 2018): inputs in [-1, 1] are shifted and scaled to VGG's ImageNet statistics.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# VGG16 "features" as torchvision numbers them: (index of conv, out channels); ReLU follows each conv,
# max-pool at the listed indices; LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
VGG16_CONVS = (
    (0, 64),
    (2, 64),
    (5, 128),
    (7, 128),
    (10, 256),
    (12, 256),
    (14, 256),
    (17, 512),
    (19, 512),
    (21, 512),
    (24, 512),
    (26, 512),
    (28, 512),
)
VGG16_POOLS = (4, 9, 16, 23)
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_NORM_EPS = 1e-10
LPIPS_FILES = ("vgg16.pth", "vgg.pth")


class PatchDiscriminator(nn.Module):
    """D_ψ: the PatchGAN discriminator of pix2pix / taming, one real-vs-fake logit per overlapping patch.

    Example:
        >>> disc = PatchDiscriminator(channels=16, num_layers=2)
        >>> disc(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 1, 14, 14])
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [Conv2d(in_channels, channels, DISC_KERNEL, 2, 1), nn.LeakyReLU(DISC_LEAKY_SLOPE)]
        width = channels
        for n in range(1, num_layers + 1):
            stride = 2 if n < num_layers else 1
            out = channels * min(2**n, DISC_MAX_WIDTH_MULT)
            layers += [
                Conv2d(width, out, DISC_KERNEL, stride, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(DISC_LEAKY_SLOPE),
            ]
            width = out
        layers.append(Conv2d(width, 1, DISC_KERNEL, 1, 1))
        self.main = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, DISC_INIT_STD)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, DISC_INIT_STD)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) → patch logits (B, 1, H', W')."""
        return self.main(x)


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """L_D: hinge ½(E[relu(1 − D(x))] + E[relu(1 + D(x̃))]) or vanilla ½(E[softplus(−D(x))] + E[softplus(D(x̃))])."""
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    if kind == "vanilla":
        return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
    raise ValueError(f"unknown discriminator loss {kind!r}; use 'hinge' or 'vanilla'")


def generator_adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """L_adv for the autoencoder: −E[D(x̃)]."""
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """λ = ‖∇_w L_rec‖ / (‖∇_w L_adv‖ + ε) at the decoder's last weight w, clamped, without gradient."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (adv_grad.norm() + ADAPTIVE_EPS)).clamp(0.0, ADAPTIVE_MAX).detach()


class LPIPS(nn.Module):
    """LPIPS perceptual distance (Zhang et al. 2018, "lin" variant on VGG16), frozen.

    d(x, y) = Σ_l mean_{h,w} ‖ w_l ⊙ (φ̂_l(x) − φ̂_l(y)) ‖², φ̂_l the channel-normalised VGG16 activations at
    relu1_2 … relu5_3. The weights cannot be downloaded here; :meth:`from_folder` reads torchvision's VGG16
    state dict (``vgg16.pth``, keys ``features.N.weight``) and the LPIPS v0.1 linear layers (``vgg.pth``,
    keys ``linK.model.1.weight``).

    Example:
        >>> lpips = LPIPS()  # random weights: for shapes only
        >>> x = torch.rand(1, 3, 32, 32) * 2 - 1
        >>> float(lpips(x, x).sum())
        0.0
    """

    def __init__(self):
        super().__init__()
        layers: dict[int, nn.Module] = {}
        in_ch = 3
        for index, out_ch in VGG16_CONVS:
            layers[index] = Conv2d(in_ch, out_ch, 3, padding=1)
            layers[index + 1] = nn.ReLU()
            in_ch = out_ch
        for index in VGG16_POOLS:
            layers[index] = nn.MaxPool2d(2, 2)
        self.features = nn.Sequential(*(layers[i] for i in range(max(layers) + 1)))
        tap_channels = [dict(VGG16_CONVS)[t - 1] for t in LPIPS_TAPS]
        for k, ch in enumerate(tap_channels):
            self.add_module(f"lin{k}", nn.Sequential(nn.Dropout(), Conv2d(ch, 1, 1, bias=False)))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_folder(cls, folder: str | Path) -> LPIPS:
        """LPIPS with weights from ``folder/vgg16.pth`` (torchvision) and ``folder/vgg.pth`` (lpips v0.1)."""
        folder = Path(folder)
        model = cls()
        backbone = {
            k: v for k, v in load_state_dict_file(folder / LPIPS_FILES[0]).items() if k.startswith("features.")
        }
        linear = load_state_dict_file(folder / LPIPS_FILES[1])
        state = {**backbone, **{k: v for k, v in linear.items() if k.startswith("lin")}}
        missing = sorted(set(model.state_dict()) - set(state))
        if missing:
            raise ValueError(f"LPIPS weights in {folder} lack {len(missing)} tensors, e.g. {missing[:3]}")
        model.load_state_dict(state, strict=False)
        return model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, 3, H, W) in [-1, 1] → distance (B, 1, 1, 1)."""
        h = torch.cat([x, y]).sub(self.shift).div(self.scale)  # (2B, 3, H, W)
        total = 0.0
        taps = iter(LPIPS_TAPS)
        tap, k = next(taps), 0
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index == tap:
                fx, fy = h.chunk(2)  # (B, C_l, H_l, W_l) each
                fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + LPIPS_NORM_EPS)
                fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + LPIPS_NORM_EPS)
                lin = getattr(self, f"lin{k}")
                total = total + lin((fx - fy).pow(2)).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
                k += 1
                tap = next(taps, None)
                if tap is None:
                    break
        return total


def build_perceptual_loss(weights_folder: str | None, weight: float) -> LPIPS | None:
    """LPIPS from ``weights_folder``; None (with a warning saying so) when no weights are given."""
    if weight == 0:
        return None
    if not weights_folder:
        warnings.warn(
            "no LPIPS weights (--lpips-weights DIR with vgg16.pth and vgg.pth; they cannot be downloaded here): "
            "training WITHOUT the perceptual term, loss = L1 + adversarial + regulariser",
            stacklevel=2,
        )
        return None
    folder = Path(weights_folder)
    missing = [name for name in LPIPS_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"--lpips-weights {folder}: missing {missing} (need torchvision's VGG16 state dict as "
            "vgg16.pth and the LPIPS v0.1 linear layers as vgg.pth)"
        )
    return LPIPS.from_folder(folder)
