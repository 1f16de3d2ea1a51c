"""Training's photometric augmentation, batch-wise on the device after the transfer (colour jitter, blur, noise,
coarse dropout): the per-sample parameters come with the batch, drawn by data.transforms.TrainTransform in the
loader workers from each sample's seed, so the same seed gives the same images on any device.

The parameters stay a host array (the DataModule takes them out of the transfer): every choice made from them
(which images to blur, each image's noise seed) is made on the host, so a step never waits to read the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from melanoma_lit.data.transforms import PHOTOMETRIC_COLUMNS

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as OpenCV's and PIL's RGB -> gray
_BLUR_KERNEL = 5


def photometric_augment(images: torch.Tensor, params: np.ndarray) -> torch.Tensor:
    """``images`` (uint8 NCHW, on the device) changed by ``params`` (a host array, one row per image, in
    TrainTransform's layout); float32 in 0-255, which the LightningModule normalises as it does uint8."""
    x = images.float() / 255
    x = _colour(x, params[:, :4])
    x = _blur(x, params[:, 4])
    x = _noise(x, params[:, 5], params[:, 6])
    return _dropout(x, params[:, len(PHOTOMETRIC_COLUMNS) :].reshape(len(x), -1, 4)) * 255


def _on(x: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    """``values`` on ``x``'s device; through pinned memory to a GPU, as a copy from pageable memory would first
    wait for the device's queue."""
    tensor = torch.as_tensor(values, dtype=x.dtype)
    return tensor.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else tensor


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _colour(x: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
    """Brightness, contrast, saturation (scaled about black, the mean gray, the pixel's gray), then a hue turn of
    the chroma plane (YIQ), each clipped to [0, 1]: 1, 1, 1, 0 leaves an image as it is."""
    brightness, contrast, saturation, hue = (_on(x, factors[:, i]).view(-1, 1, 1, 1) for i in range(4))
    x = (x * brightness).clamp(0, 1)
    mean = _gray(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * saturation + gray).clamp(0, 1)
    if not factors[:, 3].any():
        return x
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device, dtype=x.dtype
    )
    angle = hue.view(-1) * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    turn = torch.zeros(len(x), 3, 3, device=x.device, dtype=x.dtype)
    turn[:, 0, 0] = 1
    turn[:, 1, 1], turn[:, 1, 2], turn[:, 2, 1], turn[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ turn @ to_yiq  # per image, RGB -> RGB
    return torch.einsum("nij,njhw->nihw", matrix, x).clamp(0, 1)


def _blur(x: torch.Tensor, sigma: np.ndarray) -> torch.Tensor:
    rows = np.flatnonzero(sigma > 0)
    if len(rows) == 0:
        return x
    offsets = np.arange(_BLUR_KERNEL) - _BLUR_KERNEL // 2
    kernel = np.exp(-(offsets[None, :] ** 2) / (2 * sigma[rows, None] ** 2))
    kernel /= kernel.sum(axis=1, keepdims=True)  # [n, k]: separable, one per blurred image
    n, channels, height, width = len(rows), x.shape[1], x.shape[2], x.shape[3]
    weights = _on(x, np.repeat(kernel, channels, axis=0))
    index = _on(x, rows).long()
    chosen = x.index_select(0, index).reshape(1, n * channels, height, width)
    pad = _BLUR_KERNEL // 2
    horizontal = weights.view(-1, 1, 1, _BLUR_KERNEL)
    chosen = F.conv2d(F.pad(chosen, (pad, pad, 0, 0), mode="reflect"), horizontal, groups=n * channels)
    vertical = weights.view(-1, 1, _BLUR_KERNEL, 1)
    chosen = F.conv2d(F.pad(chosen, (0, 0, pad, pad), mode="reflect"), vertical, groups=n * channels)
    return x.index_copy(0, index, chosen.view(n, channels, height, width))


def _noise(x: torch.Tensor, std: np.ndarray, seed: np.ndarray) -> torch.Tensor:
    """Gaussian noise from each image's own seed: the same image gets the same noise in any batch."""
    rows = np.flatnonzero(std > 0)
    if len(rows) == 0:
        return x
    x = x.clone()
    for row in rows:
        generator = torch.Generator(device=x.device).manual_seed(int(seed[row]))
        noise = torch.randn(x.shape[1:], generator=generator, device=x.device, dtype=x.dtype)
        x[row] = (x[row] + noise * float(std[row])).clamp(0, 1)
    return x


def _dropout(x: torch.Tensor, holes: np.ndarray) -> torch.Tensor:
    """Blank each image's holes (top, left, height, width as fractions; zero-sized rows are no hole)."""
    if not (holes[..., 2:] > 0).any():
        return x
    height, width = x.shape[2], x.shape[3]
    rows = torch.arange(height, device=x.device, dtype=x.dtype).view(1, 1, -1, 1) / height
    cols = torch.arange(width, device=x.device, dtype=x.dtype).view(1, 1, 1, -1) / width
    top, left, tall, wide = (_on(x, holes[..., i])[..., None, None] for i in range(4))
    inside = (rows >= top) & (rows < top + tall) & (cols >= left) & (cols < left + wide)
    return x * ~inside.any(dim=1, keepdim=True)
