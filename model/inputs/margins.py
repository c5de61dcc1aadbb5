"""Uniform margins round a photo: letterbox bars, a page's white border, a screenshot's frame.

Another clinic's export may put the dermoscopic photo inside bars or a page
of one flat colour. The network works on the whole frame squeezed to its
square working size, so a margin shrinks and distorts the lesion and is
itself outlined as a "lesion" (a photo inside a white page: Dice 0.34, the
mask tracing the photo's rectangle). :func:`find_margins` finds the rows and
columns at each edge that hold one colour (every channel within
:data:`FLAT_LEVELS` / 255 of the image's own spread of values along the
whole line, and the band's lines of one colour), the segmenter runs
on what is inside, and the masks are put back at the image's size with the
margins as background.

A dermatoscope's round black frame leaves no flat full row or column in all
but 1 of 649 ISIC images checked (every fourth), whose right edge holds a
15 px band; the rule acts on bands of at least :data:`MIN_BAND` of the side
(at least 2 px), and only when what is left is at least :data:`MIN_CONTENT`
of each side and 16 px.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..proposal import Proposal
from .kept import KeptPixels
from .limits import check_image_shape
from .prompts import Prompts

FLAT_LEVELS = 8
"""A line is flat when each channel varies by at most this many of 255 levels along it (JPEG noise included)."""

MIN_BAND = 0.02
"""Margins narrower than this share of the side (and 2 px) are left in place."""

MIN_CONTENT = 0.1
"""No cropping when less than this share of a side (or 16 px) would remain: the image is (almost) one colour."""


@dataclass(frozen=True)
class Margins:
    """Rows ``top`` .. ``bottom`` - 1 and columns ``left`` .. ``right`` - 1 of an (H, W) image are its content;
    ``note`` says what was left out, for the proposal's notes."""

    height: int
    width: int
    top: int
    bottom: int
    left: int
    right: int
    note: str = ""

    def crop(self, array: np.ndarray) -> np.ndarray:
        """The content of an (H, W, ...) array."""
        return array[self.top:self.bottom, self.left:self.right]

    def crop_prompts(self, prompts: Prompts | None) -> Prompts | None:
        """Clicks and prior in the content's pixels; clicks on the margins (background already) are dropped."""
        if not isinstance(prompts, Prompts):
            return prompts  # None, or a wrong type the segmenter names
        prompts.check(self.height, self.width)

        def inside(points):
            return tuple((float(r) - self.top, float(c) - self.left) for r, c in points
                         if self.top - 0.5 <= float(r) < self.bottom - 0.5 and self.left - 0.5 <= float(c) < self.right - 0.5)

        prior = None if prompts.prior is None else self.crop(np.asarray(prompts.prior))
        return Prompts(inside(prompts.positive), inside(prompts.negative), prior)

    def crop_kept(self, kept: KeptPixels | None) -> KeptPixels | None:
        if not isinstance(kept, KeptPixels):
            return kept
        kept.check(self.height, self.width)
        return KeptPixels(self.crop(np.asarray(kept.mask)), self.crop(np.asarray(kept.values)))

    def pad(self, proposal: Proposal, kept: KeptPixels | None = None) -> Proposal:
        """A proposal of the content put back at (H, W): background (probability 0, no uncertainty) on the
        margins, then ``kept`` pixels (full size) set as everywhere."""
        samples = np.zeros((proposal.samples.shape[0], self.height, self.width), bool)
        probability = np.zeros((self.height, self.width), np.float32)
        uncertainty = np.zeros((self.height, self.width), np.float32)
        rows, cols = slice(self.top, self.bottom), slice(self.left, self.right)
        samples[:, rows, cols] = proposal.samples
        probability[rows, cols] = proposal.probability
        uncertainty[rows, cols] = proposal.uncertainty
        padded = dataclasses.replace(proposal, samples=samples, probability=probability, uncertainty=uncertainty,
                                     notes=proposal.notes + ((self.note,) if self.note else ()))
        return padded.with_kept(kept)


def find_margins(image: np.ndarray) -> Margins | None:
    """The uniform margins of a validated (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, None when there are
    none worth leaving out. A line is flat when every channel varies along it by at most FLAT_LEVELS / 255 of the
    image's own spread of values (its 0.5th to 99.5th percentile: a dark or 12-bit photo's rows of skin are not
    flat by the dtype's range), and a margin is a band of such lines of one colour (each line's mean within
    that of its outermost line); alpha ignored. None too when the inside would break the image limits."""
    height, width = image.shape[:2]
    pixels = image if image.ndim == 3 else image[..., None]
    pixels = pixels[..., :3]
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8)
    step = max(1, int(np.sqrt(height * width / 250_000)))
    low, high = np.percentile(pixels[::step, ::step], [0.5, 99.5])
    tolerance = FLAT_LEVELS / 255 * float(high - low)

    def band(lines) -> int:
        count, colour = 0, None
        for line in lines:
            spread = (line.max(axis=0).astype(np.float64) - line.min(axis=0)).max()
            mean = line.mean(axis=0, dtype=np.float64)
            colour = mean if colour is None else colour
            if spread > tolerance or np.abs(mean - colour).max() > tolerance:
                break
            count += 1
        return count

    top = band(pixels[r] for r in range(height))
    if top == height:
        return None  # one colour throughout: the blank rule's case
    bottom = height - band(pixels[r] for r in range(height - 1, top - 1, -1))
    if bottom - top < 16:
        return None  # flat bands meeting in the middle (stripes): no photo between them
    left = band(pixels[top:bottom, c] for c in range(width))
    right = width - band(pixels[top:bottom, c] for c in range(width - 1, left - 1, -1))

    def worth(n: int, side: int) -> bool:
        return n >= max(2, MIN_BAND * side)

    top, bottom = (top if worth(top, height) else 0), (bottom if worth(height - bottom, height) else height)
    left, right = (left if worth(left, width) else 0), (right if worth(width - right, width) else width)
    if (top, bottom, left, right) == (0, height, 0, width):
        return None
    if min(bottom - top, right - left) < 16 or bottom - top < MIN_CONTENT * height or right - left < MIN_CONTENT * width:
        return None
    inside = pixels[top:bottom, left:right]
    if float(inside.max()) - float(inside.min()) <= tolerance:
        return None  # the margins hold all there is to see (a faint lesion on flat skin): keep the whole frame
    try:
        check_image_shape(bottom - top, right - left)  # a strip too thin for the model: keep the whole frame
    except ValueError:
        return None
    sides = [(top, "top"), (height - bottom, "bottom"), (left, "left"), (width - right, "right")]
    said = ", ".join(f"{n} px {name}" for n, name in sides if n)
    note = f"uniform margins left out as background ({said}): the lesion is sought in the {right - left} x {bottom - top} px inside"
    return Margins(height, width, top, bottom, left, right, note)
