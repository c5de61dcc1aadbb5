"""Sample data: three real ISIC 2018 dermoscopic images (CC BY-NC 4.0, see samples/LICENSE.md)."""

from __future__ import annotations

from pathlib import Path

from training.data.imageio import read_image

SAMPLES = Path(__file__).resolve().parent / "samples"


def _sample(case_id: str):
    path = SAMPLES / f"{case_id}.jpg"
    return [(read_image(path), {"name": case_id, "rgb": True, "metadata": {"source": str(path)}}, "image")]


def isic_0000018():
    return _sample("ISIC_0000018")


def isic_0000019():
    return _sample("ISIC_0000019")


def isic_0000020():
    return _sample("ISIC_0000020")
