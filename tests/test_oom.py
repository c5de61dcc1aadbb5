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


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 9663676416 bytes."),
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    ],
    ids=["cpu", "cuda"],
)
def test_training_out_of_memory_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys, error):
    """What torch raises when training's first batch cannot be allocated (as under `ulimit -v`) ends the command in one line."""
    from training.cli import main
    from training.commands import train as train_command

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(train_command, "train", fail)
    from .conftest import SMALL_DATA

    code = main(["train", str(SMALL_DATA), "-o", str(tmp_path / "m.mlffm"), "--size", "32", "--widths", "8,16", "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mlffm")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1 and err.strip().endswith(errors[0])
    assert errors[0].startswith("mlffm train: error: out of memory (") and "--batch-size" in errors[0]
    assert not (tmp_path / "m.mlffm").exists()


def test_a_runtime_error_that_is_not_memory_is_not_hidden(tmp_path, monkeypatch):
    from training.cli import main
    from training.commands import train as train_command

    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(train_command, "train", fail)
    from .conftest import SMALL_DATA

    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", str(SMALL_DATA), "-o", str(tmp_path / "m.mlffm"), "--size", "32", "--widths", "8,16", "--epochs", "1", "--device", "cpu"])
