"""How a mask file's values become lesion / background: the one rule, stated once.

1. Colour is resolved first: a palette image's indices become their
   palette colours. A mask of exactly two colours is lesion = the brighter
   one (by luminance; a red lesion on black, white on blue). A mask of 3 to
   16 colours in which different colours share a brightest channel (black,
   red and green labels) is refused as ambiguous. Otherwise a pixel's value
   is its brightest channel (so anti-aliased red on black counts). Alpha is
   used only where the colour channels hold one colour throughout (black,
   white, ...) and alpha varies (a lesion drawn in alpha).
2. On the resulting single-channel values:

   * all zero: an empty mask (a case with no lesion); one non-zero value
     everywhere: all lesion;
   * exactly two values, one of them 0 (0/1, 0/255, 0/38 from a palette,
     0/65535, ...): lesion = the non-zero value;
   * 0, a small label-like value (at most 16; at most 255 in a 16-bit
     mask) and a level at or above half the range (0/1/255: a 0/1 mask
     touched with 255; 0/255/65535: an 8-bit mask touched with 16-bit
     white): refused as ambiguous;
   * an 8-bit mask of more than 16 values whose two commonest levels lie
     at least :data:`TWO_LEVEL_GAP` apart and hold most of its pixels (a
     mask of two levels saved as JPEG or resampled: 0 and 128 come back as
     0..4 and 124..132): lesion = values at or above half-way between the
     two levels (a lesion at 128 cut at 128 lost the half of its pixels
     that came back as 127); not when over :data:`THIRD_LEVEL_SHARE` of
     the pixels above the lower level lie well above the upper one (a
     third, brighter level: lesion 255 beside a grey region at 100);
   * otherwise, values reaching half the range (128 for 8-bit values,
     32768 for 16-bit ones; for an anti-aliased mask of more than 16 values
     whose top is below 32768 and whose values pile up near that top, half
     of its top, so 10- and 12-bit masks stored in 16 bits
     work): a grey-level or anti-aliased mask, lesion = values at or above
     half;
   * otherwise (several small values, e.g. the labels 0/1/2): refused as
     ambiguous with a message naming the values; which label is the lesion
     cannot be guessed. Write the lesion as 255 (or 1) and the rest as 0.

A mask with any lesion value is therefore never read as empty.

3. A mask that is a closed outline (a line drawn round the lesion, not
   filled) is refused: its inside would be read as background. A mask whose
   holes, filled, make it :data:`OUTLINE_RATIO` times larger is taken for
   one (on the 2,594 ISIC masks the largest such ratio is 1.2). An outline
   open at the image border is not refused: ISIC's own test reference
   ISIC_0015353 is such a ring, so a rule for it would refuse real data.
4. A photograph saved as a mask (the image itself, or any picture) is
   refused, not thresholded into a nonsense lesion. A mask of more than
   RAMP_VALUES grey levels is one when over :data:`PHOTO_MID_SHARE` of its
   pixels lie between a tenth and nine tenths of the range and fewer than
   :data:`PHOTO_TWO_LEVEL_SHARE` lie near its two commonest levels (a mask of
   any two levels keeps them there, JPEG-saved or blurred: 1 of 2,340 ISIC
   mask variants, a 16 px mask blown up to 512, falls below). A mask of more
   than 16 colours is one when its bright pixels do not share one hue (hues
   in 40ths of each channel over the brightest: the most common holds at
   least 0.70 of a red or brown mask's bright pixels saved as JPEG at quality
   30 or resampled, and less than :data:`PHOTO_HUE_SHARE` of most photos'), or,
   of one hue, when its brightness is one by the grey rule. A photograph of
   even skin and one dark lesion has two levels, like a mask; it is told by
   its texture (:data:`PHOTO_ROUGHNESS`): a mask's pixels near their level,
   away from the edge between the two, are flat, JPEG-saved or resampled,
   and a photograph's skin and lesion are not. Of 519 ISIC images (every
   fifth) saved as RGB masks 518 are refused (511 before the texture rule),
   and of all 2,594 saved as grey 2,589 (271 of every fifth before); no
   ISIC mask is.
"""

from __future__ import annotations

import numpy as np


RAMP_VALUES = 16
"""More distinct values than this can make a grey-level mask (anti-aliasing, a blurred or resampled mask), not labels."""

LABEL_LIKE = 16
"""Non-zero values up to this are label-like (1, 2, ... 16) in an 8-bit mask; in a 16-bit one, values up to 255 are."""


OUTLINE_RATIO = 3.0
"""A mask that its filled holes make this many times larger is an outline, not a lesion."""


PHOTO_MID_SHARE = 0.25
"""A grey-level mask with more than this share of mid-grey pixels is taken for a photograph or a soft map."""

PHOTO_TWO_LEVEL_SHARE = 0.8
"""A mid-grey mask is a photograph when less than this share of its pixels lie near its two commonest levels."""

TWO_LEVEL_GAP = 64
"""Two commonest levels at least this far apart (8-bit) make a JPEG-saved or resampled mask two-level: cut between them."""

THIRD_LEVEL_SHARE = 0.05
"""A two-level cut is not made when more than this share of the pixels above the lower level lie over 32 levels above
the upper one: a third, brighter level (lesion 255, a grey ruler or field of view at 100, background 0), which the
half-range rule reads as the lesion. JPEG ringing and resampling of a two-level mask put at most 0.019 there (40 ISIC
shapes, levels 64..200, quality 5..95, blown up from 8 or 32 px); a lesion at 255 of 2.6 % of the image beside a grey
region at 100 larger than it, 0.085."""

PHOTO_ROUGHNESS = 0.32
"""A two-level mid-grey mask is a photograph when its pixels within 12 levels of their level and over 8 px from the edge
between the two levels differ from their 5 x 5 neighbourhood's mean by more than this many 8-bit levels on average.
On ISIC: 1,218 of the 2,594 images in grey pass the two-level rule, and their roughness is 0.333 or more (1 % below
0.41); their masks with a grey lesion or background, JPEG-saved down to quality 10, blurred, or blown up from 32 px and
saved at quality 10, reach 0.29 at most (docs/results.md, sixteenth session)."""

PHOTO_HUE_SHARE = 0.45
"""A many-coloured mask whose most common hue holds less than this share of its bright pixels is a photograph."""


class AmbiguousMaskError(ValueError):
    """The values of a mask do not say which pixels are lesion; the message says why."""


def binary_mask(values: np.ndarray) -> np.ndarray:
    """(H, W) bool lesion mask from (H, W) integer or bool values, by the rule above.

    Raises AmbiguousMaskError for label-like masks (several small non-zero values).
    """
    if values.dtype == np.bool_:
        return values.copy()
    if np.issubdtype(values.dtype, np.floating):
        values = np.nan_to_num(values)
        if values.size and values.max() <= 1.0 and values.min() >= 0.0:
            return values >= 0.5
        values = np.clip(values, 0, 65535).round().astype(np.uint16)
    values = np.clip(values, 0, None) if np.issubdtype(values.dtype, np.signedinteger) else values
    top = int(values.max()) if values.size else 0
    if top == 0:
        return np.zeros(values.shape, bool)
    present = _distinct(values, top)
    if len(present) == 1:  # one non-zero value everywhere: all lesion
        return np.ones(values.shape, bool)
    if len(present) == 2 and present[0] == 0:
        return values == present[1]
    half = 128 if top <= 255 else 32768
    if 255 < top < half and len(present) > RAMP_VALUES and _peaks_at_top(values, top):
        half = (top + 1) // 2  # an anti-aliased mask of 10- or 12-bit values in a 16-bit file: half of its own top
    small = LABEL_LIKE if top <= 255 else 255  # in a 16-bit file, an 8-bit level is as small as a label
    if len(present) == 3 and present[0] == 0 and present[1] <= small < half <= present[2]:
        raise AmbiguousMaskError(
            f"mask values 0, {present[1]} and {present[2]}: a small label and a level above half the range, "
            "so which is the lesion is ambiguous (a 0/1 mask touched with 255, or a label map?); "
            "write the lesion as 255 or 1 and everything else as 0"
        )
    cut = _lossy_two_level_cut(values, present)
    if cut is not None:  # a lesion at 128 saved as JPEG comes back as 126..130: half-way to the background, not 128
        return values >= cut
    if top >= half:
        return values >= half
    shown = ", ".join(str(v) for v in present[:6]) + (", ..." if len(present) > 6 else "")
    raise AmbiguousMaskError(
        f"mask values {shown} look like labels, not a binary mask, so which is the lesion is ambiguous "
        "(write the lesion as 255 or 1 and everything else as 0)"
    )


def check_not_outline(mask: np.ndarray) -> None:
    """AmbiguousMaskError for an (H, W) bool mask that is a closed outline round the lesion, not the lesion."""
    area = int(np.count_nonzero(mask))
    if not area:
        return
    from scipy.ndimage import binary_fill_holes

    inside = int(np.count_nonzero(binary_fill_holes(mask))) - area
    if area + inside >= OUTLINE_RATIO * area:
        raise AmbiguousMaskError(
            f"mask is an outline: a closed line of {area} px round {inside} px that it leaves out; "
            "fill it: the lesion is the inside"
        )


def _check_not_mid_grey(values: np.ndarray) -> None:
    """AmbiguousMaskError for (H, W) values of more than RAMP_VALUES levels that are a picture: over
    PHOTO_MID_SHARE of them between 0.1 and 0.9 of the range (256 for 8-bit values, 65536 above) and under
    PHOTO_TWO_LEVEL_SHARE within 12 of 255 levels of their two commonest levels (a mask of any two levels,
    JPEG-saved or blurred, keeps its pixels there; a photograph spreads them), or near them but textured (rougher
    than PHOTO_ROUGHNESS: a photograph of even skin and one dark lesion)."""
    top = int(values.max()) if values.size else 0
    if top == 0 or len(_distinct(values, top)) <= RAMP_VALUES:
        return
    scaled = values.astype(np.float64) * (256.0 / (256 if top <= 255 else 65536))
    mid = float(np.count_nonzero((scaled > 25.6) & (scaled < 230.4))) / values.size
    if mid <= PHOTO_MID_SHARE:
        return
    first, second, near_level = _two_levels(scaled)
    two = float(np.count_nonzero(near_level)) / values.size
    if two < PHOTO_TWO_LEVEL_SHARE:
        raise AmbiguousMaskError(
            f"mask is {mid:.0%} mid-grey with no two levels holding its pixels: a photograph, not a mask; "
            "save the lesion as 255 and everything else as 0"
        )
    rough = _roughness(scaled, near_level, (first + second) / 2)
    if rough > PHOTO_ROUGHNESS:
        raise AmbiguousMaskError(
            f"mask is {mid:.0%} mid-grey and textured within its two levels (roughness {rough:.2f} grey levels; "
            "a mask's levels are flat): a photograph, not a mask; save the lesion as 255 and everything else as 0"
        )


def _two_levels(scaled: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The two commonest levels of (H, W) values in 0..255 (histogram smoothed over 5 levels, the second at least 33
    levels from the first) and the (H, W) bool map of the pixels within 12 levels of either."""
    counts = np.convolve(np.bincount(np.clip(scaled, 0, 255).astype(np.int64).ravel(), minlength=256), np.ones(5), mode="same")
    first = int(np.argmax(counts))
    counts[max(first - 32, 0):first + 33] = 0
    second = int(np.argmax(counts))
    return first, second, (np.abs(scaled - first) <= 12) | (np.abs(scaled - second) <= 12)


def _lossy_two_level_cut(values: np.ndarray, present: list[int]) -> int | None:
    """The cut between the two levels of an 8-bit two-level mask that JPEG or resampling spread over more than
    RAMP_VALUES values: half-way between its two commonest levels, when they lie at least TWO_LEVEL_GAP apart and
    hold PHOTO_TWO_LEVEL_SHARE of its pixels; None otherwise (the half-range rule applies)."""
    if len(present) <= RAMP_VALUES or present[-1] > 255:
        return None
    first, second, near_level = _two_levels(values.astype(np.float64))
    low, high = sorted((first, second))
    if high - low < TWO_LEVEL_GAP or np.count_nonzero(near_level) < PHOTO_TWO_LEVEL_SHARE * values.size:
        return None
    if np.count_nonzero(values > high + 32) > THIRD_LEVEL_SHARE * np.count_nonzero(values > low + 12):
        return None  # a third, brighter level (a lesion at 255 beside a grey ruler or field of view at 100): not two-level
    return (low + high + 1) // 2


def _roughness(scaled: np.ndarray, near_level: np.ndarray, cut: float) -> float:
    """Mean absolute difference, in 8-bit levels, between the (H, W) ``scaled`` values and their 5 x 5 mean, over the
    ``near_level`` pixels more than 8 px from the edge at ``cut`` and from the image's border (JPEG blocks and resampling
    soften a mask there);
    0.0 when under a fifth of the pixels are such (too little flat area to judge)."""
    from scipy import ndimage

    high = scaled > cut
    inner = (ndimage.distance_transform_edt(high) > 8) | (ndimage.distance_transform_edt(~high) > 8)
    inner[:8] = inner[-8:] = False  # nor within 8 px of the image's border: a mask's outline may run along it, a
    inner[:, :8] = inner[:, -8:] = False  # pixel or two in, softened there to grey that does not cross the cut
    inner &= near_level
    if np.count_nonzero(inner) < 0.2 * scaled.size:
        return 0.0
    return float(np.abs(scaled - ndimage.uniform_filter(scaled, 5))[inner].mean())


def _check_not_photo(rgb: np.ndarray, brightest: np.ndarray) -> None:
    """AmbiguousMaskError for an (H, W, 3) mask of many colours that is a picture: its bright pixels do not share
    one hue, or (one hue) its brightness is a picture by :func:`_check_not_mid_grey`."""
    bright = brightest >= 64
    count = int(np.count_nonzero(bright))
    if count < 0.05 * brightest.size:
        return
    chroma = np.round(rgb[bright].astype(np.float64) / brightest[bright, None] * 40).astype(np.int64)  # hue in 40ths
    hues, counts = np.unique(chroma[:, 0] * 41 * 41 + chroma[:, 1] * 41 + chroma[:, 2], return_counts=True)
    share = counts.max() / count
    if share < PHOTO_HUE_SHARE:
        raise AmbiguousMaskError(
            f"mask is a colour picture (its most common hue holds {share:.0%} of its bright pixels), not a mask; "
            "save the lesion as 255 and everything else as 0"
        )
    _check_not_mid_grey(brightest)  # one hue: its brightness as a grey-level mask


def _peaks_at_top(values: np.ndarray, top: int) -> bool:
    """Whether the values pile up near the top, as in an anti-aliased or blurred mask (a solid lesion and a thin
    band of grey at its edge), not spread evenly as in a label map or a ramp: the top tenth of the range holds at
    least 1.25 times as many pixels as an average tenth of its middle (0.2 to 0.8 of the top)."""
    share = values[values > 0].astype(np.float64) / top
    near_top = int(np.count_nonzero(share >= 0.9))
    middle_tenth = np.count_nonzero((share >= 0.2) & (share < 0.8)) / 6
    return near_top >= 1.25 * max(middle_tenth, 1.0)


def _distinct(values: np.ndarray, top: int) -> list[int]:
    if top <= 65535:
        counts = np.bincount(values.ravel().astype(np.int64), minlength=top + 1)
        return [int(v) for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(values)]


def mask_values_from_pil(img) -> np.ndarray:
    """Single-channel values of a PIL mask image, colour and palette resolved as the module says."""
    mode = img.mode
    if mode in ("1",):
        return np.asarray(img, dtype=bool)
    if mode in ("L", "I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img)
        if mode != "F":
            _check_not_mid_grey(values)
        return values
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info)
    rgba = np.asarray(img.convert("RGBA"))
    rgb = rgba[..., :3]
    colour = rgb.max(axis=2)
    if has_alpha and (not colour.any() or (rgb == rgb.reshape(-1, 3)[0]).all()):  # one colour throughout: the drawing is in alpha
        alpha = rgba[..., 3]
        if alpha.min() != alpha.max():
            return alpha
    return _resolve_colours(rgb, colour)


def _resolve_colours(rgb: np.ndarray, brightest: np.ndarray) -> np.ndarray:
    """Bool lesion mask for two-colour masks, the brightest channel otherwise; refuses label-like colour maps."""
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    colours = np.unique(packed)
    if len(colours) == 1:
        return brightest
    if len(colours) > 16:
        _check_not_photo(rgb, brightest)
        return brightest
    triples = [((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255) for c in colours]
    if len(colours) == 2:
        luminance = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in triples]
        if luminance[0] == luminance[1]:
            raise AmbiguousMaskError(f"mask colours {triples[0]} and {triples[1]} are equally bright, so which is the lesion is ambiguous")
        lesion = colours[int(np.argmax(luminance))]
        return packed == lesion
    if len({max(t) for t in triples}) < len(triples):
        shown = ", ".join(str(t) for t in triples[:6]) + (", ..." if len(triples) > 6 else "")
        raise AmbiguousMaskError(
            f"mask colours {shown} look like labels, not a binary mask, so which is the lesion is ambiguous "
            "(write the lesion as 255 or 1 and everything else as 0)"
        )
    return brightest
