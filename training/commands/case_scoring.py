"""The case loop ``mlffm evaluate`` and ``mlffm calibrate`` share: read, propose, skip what cannot be scored.

A case is skipped, with one warning line naming its file, when its image or
mask cannot be read (or their sizes differ), or when its proposal runs out of
memory or is refused (a size over the proposal limits); the run goes on with the next case, and the command reports every
skipped case at the end (and exits 1).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from model import Proposal

from ..data.datasets import Case, DatasetListing, load_case
from ..data.imageio import ImageReadError
from ..files.outputs import display


MAX_PROBLEMS_SHOWN = 10
"""Lines of a listing's other problems (not skipped cases) printed before scoring; the rest are counted."""


class CaseScoring:
    """The cases of one split, proposed one by one; ``skipped`` lists (one line each) what was not scored.

    It starts with the listing's notes, its other problems (the first
    :data:`MAX_PROBLEMS_SHOWN`: a mask used where another lay beside it,
    images in no split) and the pairs the listing itself could not use, each
    printed as a warning.
    """

    def __init__(self, listing: DatasetListing) -> None:
        for line in listing.notes:
            print(f"note: {line}", file=sys.stderr)
        skipped = set(listing.skipped)
        others = [line for line in listing.problems if line not in skipped]  # not cases lost, but worth a word (a mask beside another)
        for line in others[:MAX_PROBLEMS_SHOWN]:
            print(f"warning: {display(line)}", file=sys.stderr)
        if len(others) > MAX_PROBLEMS_SHOWN:
            print(f"warning: ... and {len(others) - MAX_PROBLEMS_SHOWN} more problems of the listing", file=sys.stderr)
        self.skipped: list[str] = [display(line) for line in listing.skipped]
        for line in self.skipped:
            print(f"warning: {line}", file=sys.stderr)
        self.bar: tqdm | None = None

    def proposals(
        self, cases: Iterable[Case], desc: str, propose: Callable[[np.ndarray], Proposal]
    ) -> Iterator[tuple[Case, np.ndarray, np.ndarray, Proposal, float]]:
        """Yield (case, (H, W, 3) image, (H, W) bool truth, ``propose(image)``, seconds of the proposal).

        ``self.bar`` is the progress bar while this runs (for a postfix).
        """
        self.bar = tqdm(list(cases), desc=desc, unit="image", dynamic_ncols=True)
        for case in self.bar:
            try:
                image, truth = load_case(case)
            except ImageReadError as err:
                self._skip(str(err))
                continue
            started = time.perf_counter()
            try:
                proposal = propose(image)
            except (MemoryError, torch.cuda.OutOfMemoryError, ValueError) as err:
                self.skip(case, err)
                continue
            yield case, image, truth, proposal, time.perf_counter() - started

    def skip(self, case: Case, err: BaseException) -> None:
        """Record ``case`` as not scored because of ``err`` (out of memory, or a size over the limits), in one line."""
        text = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
        self._skip(f"{case.image_path}: {text}")

    def nothing_scored(self, data: object, count: int, split: str, verb: str = "scored") -> ValueError:
        """The error for a split of ``count`` cases none of which could be ``verb``: its first skipped reasons, in one line."""
        shown = "; ".join(self.skipped[:3]) + (f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else "")
        return ValueError(f"{data}: none of the {count} cases of split {split!r} could be {verb} ({shown or 'no reason given'})")

    def _skip(self, line: str) -> None:
        self.skipped.append(display(line))
        tqdm.write(f"warning: skipped: {line}", file=sys.stderr)
