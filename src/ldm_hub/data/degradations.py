"""How a high-resolution image becomes the low-resolution input of a super-resolution model.

A degradation maps an RGB image of side ``S`` to one of side ``S / factor``; it is a callable
``degradation(image, low_res_size, rng) -> PIL.Image`` and, for the randomised one, :meth:`BSRDegradation.sample`
also returns the branches it took. The fixed ones (:data:`FIXED`) are single kernels, the way a user's image may
have been made small:

==========  ==================================================================================
name        low-res image
==========  ==================================================================================
bicubic     PIL's bicubic (anti-aliased) resize: the shapes dataset's ``low_res`` and the default
area        area averaging (PIL's box filter; for an integer factor, the mean of each block)
bilinear    PIL's bilinear (anti-aliased) resize
nearest     nearest neighbour (no anti-aliasing: aliased edges)
lanczos     PIL's Lanczos-3 resize
blur+area   an isotropic Gaussian blur (σ = 1 high-res pixel, 7×7 taps), then area averaging
bsr         :class:`BSRDegradation`, randomised per image
==========  ==================================================================================

:class:`BSRDegradation` follows the degradation the paper's ``bsr_sr`` model was trained with (BSRGAN, Zhang et
al. 2021; CompVis ``ldm/modules/image_degradation``), reduced to a fixed order and one resize: with some
probability an isotropic or anisotropic Gaussian blur (a random odd kernel, σ per axis, rotation), then the
resize to the low-res size with a kernel drawn from area / bicubic / bilinear / nearest / lanczos, then with
some probability Gaussian noise (colour or gray), then with some probability a JPEG round trip at a random
quality. Every draw comes from the ``numpy.random.Generator`` passed in, so a seeded caller gets the same
low-res image every time. Only numpy and PIL are used.

Example:
    >>> import numpy as np, PIL.Image
    >>> image = PIL.Image.radial_gradient("L").convert("RGB").resize((64, 64))
    >>> low, branches = BSRDegradation().sample(image, 16, np.random.default_rng(0))
    >>> low.size, set(branches) <= set(BSR_BRANCHES)
    ((16, 16), True)
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import PIL.Image

RESAMPLE = {
    "area": PIL.Image.Resampling.BOX,
    "bicubic": PIL.Image.Resampling.BICUBIC,
    "bilinear": PIL.Image.Resampling.BILINEAR,
    "nearest": PIL.Image.Resampling.NEAREST,
    "lanczos": PIL.Image.Resampling.LANCZOS,
}
KERNELS = tuple(RESAMPLE)
FIXED = (*KERNELS, "blur+area")
DEGRADATIONS = (*FIXED, "bsr")
# Every branch BSRDegradation can take (the degradation-coverage test checks each is drawn often enough).
BSR_BRANCHES = ("blur:isotropic", "blur:anisotropic", *(f"resize:{k}" for k in KERNELS), "noise", "jpeg")


# ---------------------------------------------------------------------------------------------- operations
def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    """A normalised ``size``×``size`` Gaussian, σ ``sigma_x`` / ``sigma_y`` along axes rotated by ``theta``."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    r = (size - 1) / 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def blur(image: PIL.Image.Image, kernel: np.ndarray) -> PIL.Image.Image:
    """Convolve an RGB image with a 2-D kernel (reflected borders), rounded back to uint8."""
    x = np.asarray(image, dtype=np.float64)  # (H, W, 3)
    k = kernel.shape[0] // 2
    padded = np.pad(x, ((k, k), (k, k), (0, 0)), mode="reflect")
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return PIL.Image.fromarray(np.clip(out.round(), 0, 255).astype(np.uint8))


def resize(image: PIL.Image.Image, size: int, kernel: str) -> PIL.Image.Image:
    """Resize to ``size``×``size`` with one of :data:`KERNELS`."""
    return image.resize((size, size), RESAMPLE[kernel])


def add_noise(image: PIL.Image.Image, sigma: float, rng: np.random.Generator, gray: bool) -> PIL.Image.Image:
    """Additive Gaussian noise of standard deviation ``sigma`` (in 0–255 units), the same on every channel when
    ``gray``."""
    x = np.asarray(image, dtype=np.float64)
    shape = (*x.shape[:2], 1) if gray else x.shape
    x = x + rng.normal(0.0, sigma, size=shape)
    return PIL.Image.fromarray(np.clip(x.round(), 0, 255).astype(np.uint8))


def jpeg(image: PIL.Image.Image, quality: int) -> PIL.Image.Image:
    """A JPEG encode / decode round trip at ``quality``."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with PIL.Image.open(buffer) as decoded:
        return decoded.convert("RGB")


# ---------------------------------------------------------------------------------------------- degradations
@dataclass(frozen=True)
class FixedDegradation:
    """One kernel of :data:`FIXED` (no randomness; ``rng`` is accepted and ignored)."""

    name: str = "bicubic"
    blur_sigma: float = 1.0  # blur+area: σ in high-res pixels
    blur_size: int = 7

    def __post_init__(self):
        if self.name not in FIXED:
            raise ValueError(f"unknown degradation {self.name!r}; choose one of {DEGRADATIONS}")

    def __call__(self, image: PIL.Image.Image, low_res_size: int, rng=None) -> PIL.Image.Image:
        if self.name == "blur+area":
            image = blur(image, gaussian_kernel(self.blur_size, self.blur_sigma))
            return resize(image, low_res_size, "area")
        return resize(image, low_res_size, self.name)


@dataclass(frozen=True)
class BSRDegradation:
    """The randomised degradation (module docstring): blur → resize (random kernel) → noise → JPEG."""

    blur_probability: float = 0.5  # half of it isotropic, half anisotropic
    blur_sizes: tuple[int, ...] = (7, 9, 11, 13, 15)
    blur_sigma: tuple[float, float] = (0.2, 2.5)  # in high-res pixels
    noise_probability: float = 0.3
    noise_sigma: tuple[float, float] = (1.0, 10.0)  # 0–255 units
    gray_noise_probability: float = 0.3
    jpeg_probability: float = 0.3
    jpeg_quality: tuple[int, int] = (40, 95)

    def sample(self, image: PIL.Image.Image, low_res_size: int, rng: np.random.Generator):
        """``(low-res image, branches taken)`` for one draw of ``rng``."""
        image = image.convert("RGB")
        branches = []
        if rng.random() < self.blur_probability:
            size = int(rng.choice(self.blur_sizes))
            if rng.random() < 0.5:
                sigma = float(rng.uniform(*self.blur_sigma))
                kernel = gaussian_kernel(size, sigma)
                branches.append("blur:isotropic")
            else:
                sx, sy = (float(v) for v in rng.uniform(*self.blur_sigma, size=2))
                kernel = gaussian_kernel(size, sx, sy, float(rng.uniform(0, math.pi)))
                branches.append("blur:anisotropic")
            image = blur(image, kernel)
        kernel_name = KERNELS[int(rng.integers(len(KERNELS)))]
        image = resize(image, low_res_size, kernel_name)
        branches.append(f"resize:{kernel_name}")
        if rng.random() < self.noise_probability:
            sigma = float(rng.uniform(*self.noise_sigma))
            image = add_noise(image, sigma, rng, gray=bool(rng.random() < self.gray_noise_probability))
            branches.append("noise")
        if rng.random() < self.jpeg_probability:
            image = jpeg(image, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
            branches.append("jpeg")
        return image, tuple(branches)

    def __call__(self, image: PIL.Image.Image, low_res_size: int, rng: np.random.Generator) -> PIL.Image.Image:
        return self.sample(image, low_res_size, rng)[0]


def make_degradation(name: str):
    """The degradation called ``name`` (one of :data:`DEGRADATIONS`)."""
    if name == "bsr":
        return BSRDegradation()
    if name not in FIXED:
        raise ValueError(f"unknown degradation {name!r}; choose one of {DEGRADATIONS}")
    return FixedDegradation(name)
