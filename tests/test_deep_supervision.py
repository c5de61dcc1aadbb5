"""Deep supervision: auxiliary clean-mask heads on the decoder, trained, never on the sampling path."""

import numpy as np
import pytest
import torch

from model import NetworkConfig, Segmenter, SegmenterConfig
from model.config import DiffusionConfig
from model.nets.network import DualPathUNet
from training.cli import main
from training.loop.train_step import deep_supervision_loss

from .conftest import SMALL_DATA, tiny_config

TINY = ["--size", "32", "--widths", "8,16,32", "--batch-size", "4"]


def test_aux_heads_give_one_coarse_logit_map_per_level_and_leave_the_output_alone():
    torch.manual_seed(0)
    network = DualPathUNet(NetworkConfig(widths=(8, 16, 32, 32), time_dim=16, deep_supervision=2)).eval()
    features = network.encode_image(torch.randn(2, 3, 32, 32))
    x_t, t = torch.randn(2, 1, 32, 32), torch.tensor([5, 900])
    output, aux = network.denoise_with_aux(features, x_t, t)
    assert [tuple(a.shape) for a in aux] == [(2, 1, 16, 16), (2, 1, 8, 8)]  # finest first
    assert all(torch.count_nonzero(a) == 0 for a in aux)  # zero-initialised: no push on the decoder at first
    assert torch.equal(output, network.denoise(features, x_t, t))
    plain = DualPathUNet(NetworkConfig(widths=(8, 16, 32), time_dim=16, mask_path=False, fusion="plain", deep_supervision=1))
    _, aux = plain.denoise_with_aux(plain.encode_image(torch.randn(1, 3, 32, 32)), torch.zeros(1, 1, 32, 32), torch.tensor([9]))
    assert [tuple(a.shape) for a in aux] == [(1, 1, 16, 16)]


def test_deep_supervision_is_validated_up_front():
    with pytest.raises(ValueError, match="deep_supervision must be 0-1"):
        NetworkConfig(widths=(8, 16, 32), deep_supervision=2)
    with pytest.raises(ValueError, match="clean-mask target"):
        SegmenterConfig(size=32, network=NetworkConfig(widths=(8, 16, 32), deep_supervision=1), diffusion=DiffusionConfig(prediction="eps"))
    for value in (True, "1", 1.5, None):
        with pytest.raises(ValueError, match="deep_supervision"):
            NetworkConfig(widths=(8, 16, 32), time_dim=16, deep_supervision=value)


def test_adding_or_removing_heads_keeps_every_proposal_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)
    base = Segmenter(tiny_config(network=NetworkConfig(widths=(8, 16, 32), time_dim=16)), "cpu")
    supervised = base.with_deep_supervision(1)
    assert supervised.config.network.deep_supervision == 1 and len(supervised.network.aux_heads) == 1
    before, after = base.propose(image, seed=3), supervised.propose(image, seed=3)
    assert np.array_equal(before.samples, after.samples) and np.array_equal(before.probability, after.probability)
    supervised.save(tmp_path / "ds.mlffm")
    loaded = Segmenter.load(tmp_path / "ds.mlffm", "cpu")
    assert loaded.config.network.deep_supervision == 1
    stripped = loaded.with_deep_supervision(0)
    assert not any(k.startswith("aux_heads") for k in stripped.network.state_dict())
    assert np.array_equal(stripped.propose(image, seed=3).samples, before.samples)


def test_the_loss_is_small_for_coarse_logits_that_match_the_pooled_mask_and_checks_shapes():
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 2:10] = 1
    pooled = [torch.nn.functional.avg_pool2d(target, 2 ** level) for level in (1, 2)]
    right = [torch.logit(p.clamp(1e-4, 1 - 1e-4)) for p in pooled]
    wrong = [-r for r in right]
    assert deep_supervision_loss(right, target) < 0.1 < deep_supervision_loss(wrong, target)
    logits = [r.clone().requires_grad_(True) for r in wrong]
    deep_supervision_loss(logits, target).backward()
    assert all(l.grad is not None and l.grad.abs().sum() > 0 for l in logits)
    with pytest.raises(ValueError, match="auxiliary level 1"):
        deep_supervision_loss([torch.zeros(2, 1, 4, 4)], target)


def test_train_with_deep_supervision_reports_the_aux_term_and_warm_starts_keep_it(tmp_path, capsys):
    out = tmp_path / "ds.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(out), *TINY, "--epochs", "1", "--deep-supervision", "1", "--progress", "json"]) == 0
    printed = capsys.readouterr().out
    assert '"terms": {' in printed and '"aux":' in printed and "deep supervision on 1 decoder levels" in printed
    trained = Segmenter.load(out, "cpu")
    assert trained.config.network.deep_supervision == 1
    # A warm start keeps the heads unless told otherwise; 0 removes them.
    again = tmp_path / "again.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(again), "--init", str(out), "--batch-size", "4", "--epochs", "1", "--deep-supervision", "0"]) == 0
    assert Segmenter.load(again, "cpu").config.network.deep_supervision == 0
    capsys.readouterr()
    # One clear line for what cannot work.
    bad = tmp_path / "bad.mlffm"
    assert main(["train", str(SMALL_DATA), "-o", str(bad), *TINY, "--deep-supervision", "5"]) == 2
    assert "--deep-supervision 5" in capsys.readouterr().err
    assert main(["train", str(SMALL_DATA), "-o", str(bad), "--init", str(again), "--deep-supervision", "1", "--freeze-base", "--click-prob", "1"]) == 2
    err = capsys.readouterr().err
    assert "--freeze-base" in err and "Traceback" not in err and not bad.exists()
