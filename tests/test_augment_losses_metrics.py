"""Augmentation alignment, losses and metrics on hand-computable cases and brute-force references."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from training.data.augment import AugmentConfig, augment_batch
from training.loop.losses import SegmentationDiffusionLoss, boundary_weights, dice_loss, weighted_bce
from training.scoring.metrics import MetricAccumulator, _surface, dice, ece, ged, hd95, jaccard, pixel_scores


def _disk(size, cy, cx, r):
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)


def test_augmentation_keeps_image_and_mask_aligned():
    disk = _disk(64, 24, 36, 12)
    images = torch.from_numpy(np.stack([0.8 - 0.6 * disk] * 3))[None].repeat(4, 1, 1, 1)  # dark lesion on light skin
    masks = torch.from_numpy(disk)[None, None].repeat(4, 1, 1, 1)
    config = AugmentConfig(brightness=0, contrast=0, channel_gain=0, saturation=0, gamma=0, blur_probability=0)
    out_images, out_masks = augment_batch(images, masks, config, torch.Generator().manual_seed(3))
    moved = False
    for image, mask in zip(out_images, out_masks):
        lesion_in_image = image.mean(0) < 0.5
        lesion_in_mask = mask[0] >= 0.5
        iou = (lesion_in_image & lesion_in_mask).sum() / (lesion_in_image | lesion_in_mask).sum()
        assert iou > 0.9
        area_ratio = float(lesion_in_mask.sum()) / disk.sum()
        assert 0.5 < area_ratio < 1.8  # still one disk of similar size (scale range 0.8..1.25)
        moved |= not torch.equal(lesion_in_mask, torch.from_numpy(disk > 0.5))
    assert moved


def test_photometric_changes_image_only():
    images = torch.rand(2, 3, 16, 16)
    masks = torch.ones(2, 1, 16, 16) * 0.0
    config = AugmentConfig(max_rotation_deg=0, rotate90=False, flip=False, scale_range=(1, 1), max_translate=0)
    out_images, out_masks = augment_batch(images, masks, config, torch.Generator().manual_seed(0))
    assert not torch.allclose(out_images, images) and torch.equal(out_masks, masks)
    assert out_images.min() >= 0 and out_images.max() <= 1


def test_dice_loss_hand_computed():
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.ones(1, 1, 2, 2)
    assert dice_loss(logits, target).item() == pytest.approx(1 - 5 / 7)  # (2*2 + 1) / (2 + 4 + 1)


def test_boundary_weights_peak_on_the_edge():
    mask = np.zeros((1, 7, 7), bool)
    mask[0, :, 3:] = True
    w = boundary_weights(mask, sigma=1.0, amplitude=4.0)
    assert w[0, 0, 2] == pytest.approx(5.0) and w[0, 0, 3] == pytest.approx(5.0)  # pixels on either side
    assert w[0, 0, 1] == pytest.approx(1 + 4 * math.exp(-0.5))
    assert np.all(boundary_weights(np.zeros((1, 4, 4), bool), 1.0, 4.0) == 1)


def test_weighted_bce_with_uniform_weights_is_bce():
    logits, target = torch.randn(2, 1, 5, 5), (torch.rand(2, 1, 5, 5) > 0.5).float()
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert weighted_bce(logits, target, torch.full_like(target, 3.0)).item() == pytest.approx(plain.item(), rel=1e-5)


def test_loss_options_validated_up_front():
    with pytest.raises(ValueError):
        SegmentationDiffusionLoss(bce_weight=-1)
    with pytest.raises(ValueError):
        SegmentationDiffusionLoss(0, 0, 0)
    loss, terms = SegmentationDiffusionLoss(boundary_weight=0)(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
    assert set(terms) == {"bce", "dice"}
    with pytest.raises(ValueError, match="shape"):
        SegmentationDiffusionLoss()(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))


def _brute_hd95(a, b):
    pa, pb = np.argwhere(_surface(a)), np.argwhere(_surface(b))
    d = cdist(pa, pb)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


@pytest.mark.parametrize("seed", range(5))
def test_metrics_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = _disk(24, *rng.integers(8, 16, 2), rng.integers(3, 7)) > 0
    b = _disk(24, *rng.integers(8, 16, 2), rng.integers(3, 7)) > 0
    tp, fp, fn = (a & b).sum(), (a & ~b).sum(), (~a & b).sum()
    tn = a.size - tp - fp - fn
    assert dice(a, b) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert jaccard(a, b) == pytest.approx(tp / (tp + fp + fn))
    scores = pixel_scores(a, b)
    assert scores["specificity"] == pytest.approx(tn / (tn + fp)) and scores["recall"] == pytest.approx(tp / (tp + fn))
    assert hd95(a, b) == pytest.approx(_brute_hd95(a, b))


def test_degenerate_conventions():
    empty = np.zeros((4, 4), bool)
    assert dice(empty, empty) == 1.0 and hd95(empty, empty) == 0.0
    assert math.isnan(hd95(empty, np.ones((4, 4), bool)))


def test_ece_hand_computed():
    prob = np.array([[0.9, 0.9, 0.1, 0.1]])
    truth = np.array([[1, 0, 0, 0]], bool)
    # bins: 0.9 -> mean p 0.9, freq 0.5 (gap 0.4); 0.1 -> mean p 0.1, freq 0 (gap 0.1)
    assert ece(prob, truth, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)


def test_ged_hand_computed():
    truth = np.array([[1, 1, 0, 0]], bool)
    samples = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]], bool)
    # d(s1,y) = 0, d(s2,y) = 1/2; d(s1,s2) = 1/2 -> E_ss' = (0 + .5 + .5 + 0) / 4
    assert ged(samples, truth) == pytest.approx(2 * 0.25 - 0.25)
    assert math.isnan(ged(samples[:1], truth))


def test_accumulator_pools_ece_and_averages_the_rest():
    acc = MetricAccumulator(bins=10)
    truth = np.array([[1, 0]], bool)
    acc.update(truth, truth, prob=np.array([[0.9, 0.1]]), samples=np.stack([truth, truth]), case_id="a")
    acc.update(~truth, truth, prob=np.array([[0.1, 0.9]]), samples=np.stack([~truth, ~truth]), case_id="b")
    summary = acc.summary()
    assert summary["dice"] == pytest.approx(0.5) and summary["ged"] == pytest.approx(1.0)
    assert summary["ece"] == pytest.approx(0.4)  # pooled: each bin has mean p 0.9 or 0.1 and frequency 0.5
    assert [r["id"] for r in acc.per_image] == ["a", "b"]


def test_uncertainty_error_spearman_ranks():
    from training.commands.evaluate import uncertainty_error_spearman

    records = [{"mean_uncertainty": u, "dice": d} for u, d in [(0.1, 0.95), (0.2, 0.9), (0.3, 0.7), (0.4, 0.5)]]
    assert uncertainty_error_spearman(records) == pytest.approx(1.0)
    assert math.isnan(uncertainty_error_spearman(records[:2]))
    doubt = [{"disagreement": u, "dice": d} for u, d in [(0.4, 0.95), (0.3, 0.9), (0.2, 0.7), (0.1, 0.5)]]
    assert uncertainty_error_spearman(doubt, "disagreement") == pytest.approx(-1.0)
    assert math.isnan(uncertainty_error_spearman(doubt))  # no mean_uncertainty in these records
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant error (every mask empty and found) ranks nothing, without a warning
        assert math.isnan(uncertainty_error_spearman([{"mean_uncertainty": u, "dice": 1.0} for u in (0.1, 0.2, 0.3)]))


def test_spearman_printout_says_why_there_is_no_rho_instead_of_nan():
    from training.commands.evaluate import format_spearman, uncertainty_error_spearman

    records = [{"mean_uncertainty": u, "dice": d} for u, d in [(0.1, 0.95), (0.2, 0.9), (0.3, 0.7)]]
    assert format_spearman(uncertainty_error_spearman(records), records) == "1.000"
    assert format_spearman(uncertainty_error_spearman(records[:2]), records[:2]) == "n/a (fewer than 3 images)"
    flat = [{"mean_uncertainty": u, "dice": 1.0} for u in (0.1, 0.2, 0.3)]
    assert format_spearman(uncertainty_error_spearman(flat), flat) == "n/a (the score or the error is the same on every image)"
    assert format_spearman(uncertainty_error_spearman(records, "disagreement"), records, "disagreement") == "n/a (fewer than 3 images)"


def test_strata_group_images_by_true_lesion_size_and_border_contact():
    from training.scoring.strata import area_band, format_strata, strata_table, truth_traits

    inside = np.zeros((20, 20), bool)
    inside[5:7, 5:7] = True  # 4 of 400 pixels: 1 %
    touching = np.zeros((20, 20), bool)
    touching[:10, :12] = True  # 30 %, on the top and left edges
    assert truth_traits(inside) == {"truth_area_fraction": 0.01, "truth_touches_border": False}
    assert truth_traits(touching) == {"truth_area_fraction": 0.3, "truth_touches_border": True}
    assert [area_band(f) for f in (0.0, 0.0499, 0.05, 0.15, 0.399, 0.4, 1.0)] == ["< 5%", "< 5%", "5-15%", "15-40%", "15-40%", ">= 40%", ">= 40%"]
    with pytest.raises(ValueError, match="truth must be"):
        truth_traits(np.zeros((2, 2, 2), bool))
    records = [
        {"dice": 0.2, "jaccard": 0.1, **truth_traits(inside)},
        {"dice": 0.9, "jaccard": 0.8, **truth_traits(touching)},
        {"dice": 0.7, "jaccard": 0.5, **truth_traits(touching)},
        {"dice": 0.6, "jaccard": 0.4},  # no traits: in "all images" only
    ]
    rows = {r["group"]: r for r in strata_table(records)}
    assert rows["all images"]["n_images"] == 4 and rows["all images"]["failures"] == 1
    assert rows["all images"]["dice_mean"] == pytest.approx(0.6)
    small = rows["lesion < 5% of the image"]
    assert (small["n_images"], small["failures"], small["dice_median"]) == (1, 1, 0.2)
    border = rows["lesion touches the image border"]
    assert border["n_images"] == 2 and border["dice_mean"] == pytest.approx(0.8) and border["jaccard_mean"] == pytest.approx(0.65)
    assert rows["lesion 15-40% of the image"]["n_images"] == 2 and rows["lesion inside the image"]["n_images"] == 1
    assert rows["lesion >= 40% of the image"]["n_images"] == 0 and math.isnan(rows["lesion >= 40% of the image"]["dice_mean"])
    table = format_strata(list(rows.values()))
    assert "lesion touches the image border" in table and "nan" not in table
    assert table.splitlines()[5].split()[-4:] == ["-", "-", "-", "0"]  # the empty >= 40 % group


def test_triage_recall_counts_failures_among_the_most_doubtful():
    from training.scoring.strata import format_triage, triage_recall

    records = [{"dice": d, "disagreement": u} for d, u in [(0.1, 0.9), (0.95, 0.8), (0.7, 0.5), (0.4, 0.05), (0.9, 0.1), (0.92, 0.2)]]
    records.append({"dice": 0.0})  # no score: left out
    rows = triage_recall(records, review_fractions=(0.5, 1.0), below=(0.5, 0.8))
    by_key = {(r["review_fraction"], r["dice_below"]): r for r in rows}
    assert by_key[0.5, 0.5] == {"review_fraction": 0.5, "reviewed": 3, "dice_below": 0.5, "caught": 1, "total": 2}
    assert (by_key[0.5, 0.8]["caught"], by_key[0.5, 0.8]["total"]) == (2, 3)
    assert (by_key[1.0, 0.5]["caught"], by_key[1.0, 0.5]["reviewed"]) == (2, 6)
    assert triage_recall([{"dice": 0.5}]) == []
    with pytest.raises(ValueError, match="review fractions"):
        triage_recall(records, review_fractions=(0.0,))
    assert "(3 images) hold 1 of the 2 with Dice < 0.5" in format_triage(rows)
    assert format_triage(triage_recall([{"dice": 0.9, "disagreement": 0.1}], review_fractions=(1.0,), below=(0.5,))) == (
        "the 100% most doubtful by disagreement (1 image): no image has Dice < 0.5"
    )
