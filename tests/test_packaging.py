"""The wheel ships the root napari.yaml, the samples and the weights, and npe2 validates the installed wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return next(out.glob("*.whl"))


def test_wheel_contains_manifest_samples_and_weights(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("napari_mlffm/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "napari-mlffm = napari_mlffm:napari.yaml" in entry_points and "mlffm = training.cli:main" in entry_points
    for sample in (ROOT / "napari_mlffm" / "samples").iterdir():
        assert f"napari_mlffm/samples/{sample.name}" in names
    for weights in (ROOT / "model" / "weights").glob("*.mlffm"):
        assert f"model/weights/{weights.name}" in names
    assert not any(n.startswith(("tests/", "runs/")) for n in names)
    for package in ("model", "training", "napari_mlffm"):  # every module, subpackages (_qt, commands, ...) included
        for module in (ROOT / package).rglob("*.py"):
            assert module.relative_to(ROOT).as_posix() in names, module


def test_npe2_validates_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    assert (target / "napari_mlffm" / "napari.yaml").is_file() and not (target / "napari_mlffm" / "napari.yaml").is_symlink()
    env = dict(os.environ, PYTHONPATH=str(target))
    code = "import napari_mlffm, sys; print(napari_mlffm.__file__); from npe2.cli import main; sys.argv=['npe2','validate','napari-mlffm']; main()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert str(target) in result.stdout, result.stdout
    assert "valid" in result.stdout + result.stderr and result.returncode == 0, result.stdout + result.stderr


def test_npe2_validates_the_editable_install():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-mlffm"], capture_output=True, text=True, timeout=300)
    if "No module named npe2.__main__" in result.stderr:
        from npe2 import PluginManifest

        PluginManifest.from_distribution("napari-mlffm").validate_imports()
        return
    assert result.returncode == 0, result.stdout + result.stderr
    assert (Path(ROOT) / "napari_mlffm" / "napari.yaml").resolve() == (ROOT / "napari.yaml").resolve()
