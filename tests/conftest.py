"""Shared fixtures: tiny model configs, real fixture images, thread settings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from model import NetworkConfig, Segmenter, SegmenterConfig

# Tiny models gain nothing from threads, and oversubscribed cores slow torch badly.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMALL_DATA = FIXTURES / "isic_small"
SAMPLES = ROOT / "napari_mlffm" / "samples"


def tiny_config(**overrides) -> SegmenterConfig:
    network = overrides.pop("network", NetworkConfig(widths=(8, 16, 32), time_dim=16))
    return SegmenterConfig(size=32, network=network, default_steps=3, default_samples=2, **overrides)


@pytest.fixture
def tiny_segmenter() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(tiny_config(), "cpu")


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_segmenter) -> Path:
    path = tmp_path / "tiny.mlffm"
    tiny_segmenter.save(path)
    return path


@pytest.fixture
def sample_images() -> list[Path]:
    paths = sorted(SAMPLES.glob("*.jpg"))
    assert len(paths) >= 2
    return paths


@pytest.fixture
def rgb_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
