"""Turning user images into network input, and network output back to image size.

Accepted images (numpy arrays):
* (H, W) grayscale, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA (alpha dropped);
* dtypes uint8 (0..255), uint16 (0..65535), bool, other integers holding
  values in 0..255 or 0..65535, or floats in [0, 1];
* numpy array subclasses are taken as their plain data; a masked array only
  when no pixel is masked (a masked pixel has no value to segment).
Anything else raises ValueError with a message saying what was wrong.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from .limits import check_image_shape
from .shading import flat_field as divide_field


def to_float_rgb(image: np.ndarray, max_side: int | None = None) -> np.ndarray:
    """Validate ``image`` and return it as (H', W', 3) float32 RGB in [0, 1].

    With ``max_side``, images larger than twice that are first subsampled by
    an integer stride (so an 8000 x 6000 photo never becomes a 576 MB float
    array); H' and W' are then the subsampled size.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if type(image) is not np.ndarray:
        if np.ma.isMaskedArray(image) and np.ma.is_masked(image):
            raise ValueError("image is a masked array with masked pixels: give plain pixel values (e.g. np.ma.filled(image, 0))")
        image = np.asarray(image)
    if not image.dtype.isnative:  # a big-endian uint16 is a uint16: its values, not its bytes, set the scale
        image = image.astype(image.dtype.newbyteorder("="))
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        pass
    elif image.ndim != 2:
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    check_image_shape(image.shape[0], image.shape[1])
    if max_side is not None:
        image = subsample(image, subsample_stride(image.shape[:2], max_side))
    if image.ndim == 3:
        image = image[..., :3] if image.shape[2] >= 3 else image[..., :1]
    scale = _value_scale(image)
    rgb = image.astype(np.float32) / scale
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb)


def subsample_stride(shape: tuple[int, int], size: int) -> int:
    """Integer stride that brings an (H, W) image to at least twice ``size`` on its short side (1 = none)."""
    return max(min(shape[0], shape[1]) // (2 * size), 1)


def subsample(array: np.ndarray, stride: int) -> np.ndarray:
    """Every ``stride``-th row and column of an (H, W, ...) array, from the middle of the first block.

    Sample k stands for the block of rows (columns) k * stride .. (k + 1) * stride - 1,
    so it is taken at offset (stride - 1) // 2 in it: the picture does not move
    by (stride - 1) / 2 pixels (15 px in an 8192 x 6144 photo), and the samples
    span the image, not ``stride - 1`` pixels past its far edge. Strides 1 and
    2 take the first pixel, as before (ISIC's 512 px images are unchanged).
    """
    offset = (stride - 1) // 2
    return array[offset::stride, offset::stride]


def resize_to_working(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of (B, C, H, W) to (B, C, size, size): the one resize inference and training share."""
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _value_scale(image: np.ndarray) -> float:
    if image.dtype.kind not in "buif":  # timedelta64 counts as an integer to numpy; dates, strings, objects are not pixels
        raise ValueError(f"unsupported image dtype {image.dtype}")
    if image.dtype == np.bool_:
        return 1.0
    if image.dtype == np.uint8:
        return 255.0
    if image.dtype == np.uint16:
        return 65535.0
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 65535:
            raise ValueError(f"integer image values must lie in 0..65535, got {low}..{high}")
        return 255.0 if high <= 255 else 65535.0
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float images must lie in [0, 1], got {low:.3g}..{high:.3g}")
        return 1.0
    raise ValueError(f"unsupported image dtype {image.dtype}")


# An image whose every channel varies less than this (standard deviation at the
# working size, in [0, 1] units of its dtype's range) is blank: one flat colour.
# The standardization below divides by std + 1e-3, so the network sees (almost)
# nothing, and what it draws then is its prior, not the image (a flat grey or
# black frame came out 90 % "lesion"). The bound is far below any real picture:
# a uint16 image holding 8-bit values varies about 1e-3 in these units and is
# segmented as before; the least varied ISIC 2018 image varies 0.022.
BLANK_CONTRAST = 1e-5


def contrast(images: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) float images in [0, 1] -> (B,): each image's largest per-channel standard deviation."""
    return images.flatten(2).std(dim=2).amax(dim=1)


def standardize(batch: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel zero mean and unit variance.

    This removes global colour casts and exposure differences between
    dermatoscopes. Input and output: (B, 3, S, S).
    """
    mean = batch.mean(dim=(2, 3), keepdim=True)
    std = batch.std(dim=(2, 3), keepdim=True)
    return (batch - mean) / (std + 1e-3)


def network_input(images: torch.Tensor, flat_field: bool = False) -> torch.Tensor:
    """(B, 3, S, S) float RGB in [0, 1] at the working size -> the network's standardized input, the same shape.

    The one step inference and training share: with ``flat_field``, each
    image's illumination field is divided out first (:func:`model.inputs.shading.flat_field`).
    """
    if flat_field:
        images = divide_field(images)
    return standardize(images)


def image_to_input(rgb: np.ndarray, size: int, device: torch.device, flat_field: bool = False) -> torch.Tensor:
    """(H, W, 3) float RGB -> (1, 3, size, size) network input on ``device`` (see :func:`network_input`)."""
    return image_and_contrast(rgb, size, device, flat_field)[0]


def image_and_contrast(rgb: np.ndarray, size: int, device: torch.device, flat_field: bool = False) -> tuple[torch.Tensor, float]:
    """(H, W, 3) float RGB -> ((1, 3, size, size) network input on ``device``, the image's :func:`contrast` at ``size``)."""
    tensor = resize_to_working(torch.from_numpy(rgb).permute(2, 0, 1)[None], size)
    return network_input(tensor, flat_field).to(device), float(contrast(tensor)[0])


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding (identity for sigma <= 0)."""
    if sigma <= 0:
        return images
    radius = max(int(3 * sigma), 1)
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    if radius < 1:
        return images
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def resize_soft(soft: torch.Tensor, height: int, width: int, smoothing: float = 0.0) -> torch.Tensor:
    """Resize soft masks (N, 1, S, S) -> (N, H, W) float32 on the CPU, clamped to [0, 1].

    ``smoothing`` is a Gaussian sigma in working-size pixels applied before the
    bilinear upsampling, so the 0.5 contour of a nearly binary mask follows a
    smooth curve instead of the working grid's staircase.
    """
    soft = gaussian_blur(soft.float().cpu(), smoothing)
    out = F.interpolate(soft, size=(height, width), mode="bilinear", align_corners=False)
    return out[:, 0].clamp_(0, 1)


def _flip_dims(view: int) -> tuple[int, ...]:
    """View 0: as is; 1: left-right; 2: upside down; 3: both (each its own inverse)."""
    return ((), (-1,), (-2,), (-2, -1))[view]


def flip_views(x: torch.Tensor, n_views: int) -> torch.Tensor:
    """(1, C, S, S) -> (n_views, C, S, S): the image and its mirrored copies."""
    return torch.cat([x.flip(_flip_dims(v)) if v else x for v in range(n_views)])


def unflip_samples(soft: torch.Tensor, n_views: int) -> torch.Tensor:
    """Undo :func:`flip_views` on (N, C, S, S) samples where sample i was drawn on view ``i % n_views``."""
    if n_views == 1:
        return soft
    return torch.stack([s.flip(_flip_dims(i % n_views)) if i % n_views else s for i, s in enumerate(soft)])


def untempered_threshold(threshold: float, temperature: float) -> float:
    """The raw probability p with sigmoid(logit(p) / T) == ``threshold``: sigmoid(T * logit(threshold))."""
    if temperature == 1.0 or threshold == 0.5:
        return threshold
    # In log space, and a sigmoid that never overflows: any threshold in (0, 1) and temperature > 0 give a
    # probability in [0, 1] (0.0 or 1.0 where the exact answer is beyond float precision), never an OverflowError.
    logit = math.log(threshold) - math.log1p(-threshold)
    return _sigmoid(temperature * logit)


def _sigmoid(z: float) -> float:
    """1 / (1 + exp(-z)) without overflow for any z (exp only ever sees a number <= 0)."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def apply_temperature(probability: torch.Tensor, temperature: float) -> torch.Tensor:
    """sigmoid(logit(p) / T) of a probability map of any shape; the 0.5 level stays where it is."""
    if temperature == 1.0:
        return probability
    p = probability.clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid(torch.log(p / (1 - p)) / temperature)
