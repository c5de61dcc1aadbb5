"""What another clinic's dermatoscope does to an image, as random transforms.

Images from other clinics differ from ISIC's in ways the global photometric
augmentation of :mod:`training.data.augment` does not cover, because they vary
*across* the image:

* **vignetting**: the dark circular frame of a contact dermatoscope, from a
  soft fall-off to black corners;
* **a black frame**: the hard-edged circular field stop of a dermatoscope
  photographed through its lens, the corners at near black;
* **uneven illumination**: a brightness ramp across the field (a tilted
  lens, a single-sided light);
* **hair**: dark thin curved strands over skin and lesion (the mask is
  unchanged: hair on a lesion is still lesion);
* **colour cast** and **scale** are global and already in
  :mod:`training.data.augment` (channel gain; zoom 0.8-1.25). A global per-channel
  gain is removed exactly by :func:`model.inputs.preprocess.standardize`, and so is
  any colour-constancy correction that is one (Shades of Gray, Gray World):
  see :func:`shades_of_gray`.

Every function takes and returns (B, 3, H, W) float images in [0, 1] and
draws its random numbers from a CPU ``torch.Generator``, so a seed means the
same on every device. :func:`apply_shift` applies one named shift at a fixed
strength, for the robustness benchmark (``benchmarks/robustness_shifts.py``).
"""

from __future__ import annotations

import math

import torch

from model.inputs.preprocess import gaussian_blur

SHIFTS = ("vignette", "frame", "illumination", "hair", "colour_cast", "zoom_out")


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _grid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) row and column coordinates of the images' pixel centres, each axis in [-1, 1]."""
    height, width = images.shape[-2:]
    axis = lambda n: (torch.arange(n, device=images.device, dtype=torch.float32) + 0.5) / n * 2 - 1  # noqa: E731
    return axis(height)[:, None].expand(height, width), axis(width)[None, :].expand(height, width)


def vignette(images: torch.Tensor, strength: torch.Tensor, radius: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Darken outside a circle: ``strength`` (B,) in [0, 1] (1: black corners), ``radius`` (B,) where the fall-off
    starts (1 = the half side), ``centre`` (B, 2) in [-1, 1] coordinates."""
    rows, cols = _grid(images)
    cy, cx = centre[:, 0, None, None].to(images.device), centre[:, 1, None, None].to(images.device)
    r = torch.sqrt((rows - cy) ** 2 + (cols - cx) ** 2)
    start = radius.to(images.device)[:, None, None]
    fall = ((r - start) / 0.35).clamp(0, 1)
    fall = fall * fall * (3 - 2 * fall)  # smoothstep: a soft edge, as a lens gives
    return (images * (1 - strength.to(images.device)[:, None, None, None] * fall[:, None])).clamp(0, 1)


def black_frame(images: torch.Tensor, radius: torch.Tensor, centre: torch.Tensor, floor: float = 0.03) -> torch.Tensor:
    """Black out everything beyond a circle: ``radius`` (B,) in half sides, ``centre`` (B, 2) in [-1, 1] coordinates.

    Outside, pixels keep ``floor`` of their value (a real frame is near
    black, not zero); the edge is a ramp about 1.5 % of the half side wide,
    as sharp as a field stop in focus.
    """
    rows, cols = _grid(images)
    cy, cx = centre[:, 0, None, None].to(images.device), centre[:, 1, None, None].to(images.device)
    r = torch.sqrt((rows - cy) ** 2 + (cols - cx) ** 2)
    inside = ((radius.to(images.device)[:, None, None] - r) / 0.03).clamp(0, 1)
    return (images * (floor + (1 - floor) * inside[:, None])).clamp(0, 1)


def illumination(images: torch.Tensor, amount: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Multiply by a linear ramp ``1 + amount * (cos a * x + sin a * y)``: ``amount`` (B,) up to about 0.4."""
    rows, cols = _grid(images)
    a = angle.to(images.device)[:, None, None]
    ramp = 1 + amount.to(images.device)[:, None, None] * (torch.cos(a) * cols + torch.sin(a) * rows)
    return (images * ramp[:, None]).clamp(0, 1)


def hair(images: torch.Tensor, strands: int, generator: torch.Generator, width: float | None = None) -> torch.Tensor:
    """Draw ``strands`` dark curved hairs on every image (quadratic Bezier curves, anti-aliased).

    Curves are drawn in pixels, so strands keep their width on non-square
    images. ``width``: the strand's half-width in pixels (default: the short
    side / 256, at least 0.5: a strand about 4 px wide at 512, 1 at 96).
    """
    n, _, height, width_px = images.shape
    if strands < 1 or n == 0:
        return images
    short = min(height, width_px)
    half = width if width is not None else max(0.5, short / 256)
    rows = torch.arange(height, device=images.device, dtype=torch.float32)[:, None] + 0.5
    cols = torch.arange(width_px, device=images.device, dtype=torch.float32)[None, :] + 0.5
    scale = torch.tensor([height / 2, width_px / 2])
    coverage = torch.zeros((n, height, width_px), device=images.device)
    steps = 16
    t = torch.linspace(0, 1, steps)
    for _ in range(strands):
        p0 = _uniform(2 * n, -1.1, 1.1, generator).view(n, 2)
        direction = _uniform(n, 0, 2 * math.pi, generator)
        length = _uniform(n, 0.4, 1.6, generator)
        p2 = p0 + length[:, None] * torch.stack([torch.sin(direction), torch.cos(direction)], 1)
        p1 = (p0 + p2) / 2 + _uniform(2 * n, -0.3, 0.3, generator).view(n, 2)
        # Points along the curve in pixels (row, col), (B, steps, 2); [-1, 1] spans the short side's length on both axes.
        curve = (1 - t)[None, :, None] ** 2 * p0[:, None] + 2 * ((1 - t) * t)[None, :, None] * p1[:, None] + (t**2)[None, :, None] * p2[:, None]
        curve = (curve * (short / 2) + scale).to(images.device)
        d = torch.full((n, height, width_px), float("inf"), device=images.device)
        for k in range(steps - 1):
            a, ab = curve[:, k], curve[:, k + 1] - curve[:, k]
            ap_r, ap_c = rows[None] - a[:, 0, None, None], cols[None] - a[:, 1, None, None]
            denom = (ab**2).sum(1).clamp_min(1e-12)[:, None, None]
            u = ((ap_r * ab[:, 0, None, None] + ap_c * ab[:, 1, None, None]) / denom).clamp(0, 1)
            d = torch.minimum(d, torch.hypot(ap_r - u * ab[:, 0, None, None], ap_c - u * ab[:, 1, None, None]))
        coverage = torch.maximum(coverage, (1 - (d - half)).clamp(0, 1))
    shade = _uniform(n, 0.05, 0.25, generator).to(images.device)[:, None, None, None]  # near black to dark brown
    tint = torch.tensor([1.0, 0.8, 0.65], device=images.device)[None, :, None, None]
    return (images * (1 - coverage[:, None]) + (shade * tint) * coverage[:, None]).clamp(0, 1)


def colour_cast(images: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Per-channel gains (B, 3): a white balance another camera chose."""
    return (images * gains.to(images.device)[:, :, None, None]).clamp(0, 1)


def zoom_out(images: torch.Tensor, masks: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink the field by ``factor`` (< 1) around the centre: a wider field of view.

    The new margin is skin: each image's mean colour along its own border
    (mirroring would copy the lesion into the margin).
    """
    from torch.nn import functional as F  # noqa: PLC0415

    n = images.shape[0]
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factor
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1).mean(-1)
    skin = border[:, :, None, None]
    shrunk = F.grid_sample(images - skin, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + skin
    inside = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    soft = gaussian_blur(inside, max(1.0, 0.02 * min(images.shape[-2:])))  # a feathered edge, not a frame
    images = (skin + soft * (shrunk - skin)).clamp(0, 1)
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return images, masks


def shades_of_gray(images: torch.Tensor, p: float = 6.0) -> torch.Tensor:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004): divide each channel by its Minkowski p-mean.

    (B, 3, S, S) in [0, 1] -> the same, rescaled so the estimated illuminant
    is grey (the mean over channels is kept). It is one gain per channel, so
    :func:`model.inputs.preprocess.standardize` (per-image, per-channel zero mean and
    unit variance) undoes it exactly up to its 1e-3 guard: this model sees
    the same input with or without it.
    """
    illuminant = images.clamp_min(0).pow(p).mean(dim=(2, 3), keepdim=True).pow(1 / p)
    illuminant = illuminant / illuminant.mean(dim=1, keepdim=True).clamp_min(1e-6)
    return images / illuminant.clamp_min(1e-6)


def random_shifts(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation: each of vignetting, uneven illumination and hair with ``probability`` per image."""
    n = images.shape[0]
    pick = lambda: (torch.rand(n, generator=generator) < probability).float()  # noqa: E731
    on = pick()
    images = vignette(images, on * _uniform(n, 0.3, 1.0, generator), _uniform(n, 0.55, 1.1, generator), _uniform(2 * n, -0.15, 0.15, generator).view(n, 2))
    on = pick()
    images = illumination(images, on * _uniform(n, 0.05, 0.35, generator), _uniform(n, 0, 2 * math.pi, generator))
    on = pick().bool()
    strands = int(torch.randint(1, 13, (1,), generator=generator))
    if on.any():
        images = images.clone()
        chosen = on.to(images.device)
        images[chosen] = hair(images[chosen], strands, generator)
    return images


def apply_shift(name: str, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One named shift of :data:`SHIFTS` at a fixed, clearly visible strength (the robustness benchmark)."""
    n = images.shape[0]
    if name == "vignette":
        return vignette(images, torch.full((n,), 0.9), torch.full((n,), 0.75), torch.zeros(n, 2)), masks
    if name == "frame":
        return black_frame(images, torch.full((n,), 1.08), torch.zeros(n, 2)), masks
    if name == "illumination":
        return illumination(images, torch.full((n,), 0.3), _uniform(n, 0, 2 * math.pi, generator)), masks
    if name == "hair":
        return hair(images, 10, generator), masks
    if name == "colour_cast":
        return colour_cast(images, torch.tensor([[1.15, 0.95, 0.8]]).expand(n, 3)), masks
    if name == "zoom_out":
        return zoom_out(images, masks, 0.7)
    raise ValueError(f"shift must be one of {SHIFTS}, got {name!r}")
