"""Out of GPU memory: fewer samples per batch, then the CPU, and the proposal says so."""

import numpy as np
import pytest
import torch


def test_oom_falls_back_to_smaller_batches_with_same_masks(tiny_segmenter, rgb_image, monkeypatch):
    reference = tiny_segmenter.propose(rgb_image, n_samples=8, steps=3, seed=5)
    original = tiny_segmenter.network.denoise
    batches = []

    def limited(features, x_t, t):
        batches.append(x_t.shape[0])
        if x_t.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(features, x_t, t)

    monkeypatch.setattr(tiny_segmenter.network, "denoise", limited)
    with pytest.warns(RuntimeWarning, match="samples per batch"):
        proposal = tiny_segmenter.propose(rgb_image, n_samples=8, steps=3, seed=5)
    assert max(b for b in batches[-12:]) <= 2
    assert any("2 samples per batch" in note for note in proposal.notes)
    assert np.allclose(proposal.probability, reference.probability, atol=1e-5)


def test_oom_on_cpu_with_one_sample_is_raised(tiny_segmenter, rgb_image, monkeypatch):
    def always(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("simulated")

    monkeypatch.setattr(tiny_segmenter.network, "denoise", always)
    with pytest.warns(RuntimeWarning), pytest.raises(torch.cuda.OutOfMemoryError):
        tiny_segmenter.propose(rgb_image, n_samples=2, steps=2)
