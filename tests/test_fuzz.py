"""Property tests: any array either gets masks of its own size or a ValueError with a message."""

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model import Segmenter

from .conftest import tiny_config

torch.manual_seed(0)
SEGMENTER = Segmenter(tiny_config(), "cpu")

dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_])
shapes = st.one_of(
    st.tuples(st.integers(0, 40), st.integers(0, 40)),
    st.tuples(st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 2, 3, 4, 5])),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays(dtype=dtypes, shape=shapes))
def test_propose_never_crashes_with_anything_but_value_error(image):
    try:
        proposal = SEGMENTER.propose(image, n_samples=2, steps=1)
    except ValueError as err:
        assert str(err)
        return
    h, w = image.shape[:2]
    assert proposal.samples.shape == (2, h, w)
    assert proposal.probability.shape == (h, w) and np.isfinite(proposal.probability).all()
    assert np.isfinite(proposal.uncertainty).all()
