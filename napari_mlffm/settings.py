"""Plugin settings that persist between sessions, in a JSON file under the user's config directory.

Location: ``$NAPARI_MLFFM_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/napari-mlffm``
(``~/.config/napari-mlffm``), file ``settings.json``. Default data folders
live under ``$XDG_DATA_HOME/napari-mlffm`` (``~/.local/share/napari-mlffm``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from psygnal import Signal

from model.checkpoint import atomic_write_bytes


def config_dir() -> Path:
    explicit = os.environ.get("NAPARI_MLFFM_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "napari-mlffm"


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "napari-mlffm"


@dataclass(frozen=True)
class Settings:
    model_folder: str = ""
    corrections_store: str = ""
    annotator: str = ""
    active_model: str = ""  # "" = the shipped default
    device: str = "auto"
    samples: int | None = None  # None: the model's default (16 for the shipped weights)
    steps: int | None = None  # None: the model's default (5 for the shipped weights)
    seed: int = 0

    @property
    def model_folder_path(self) -> Path:
        return Path(self.model_folder) if self.model_folder else data_dir() / "models"

    @property
    def store_path(self) -> Path:
        return Path(self.corrections_store) if self.corrections_store else data_dir() / "corrections"


class _SettingsHub:
    """The one in-memory copy of the settings, saved on every change."""

    changed = Signal(object)

    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def path(self) -> Path:
        return config_dir() / "settings.json"

    def get(self) -> Settings:
        if self._settings is None:
            self._settings = self._read()
        return self._settings

    def update(self, **values) -> Settings:
        self._settings = replace(self.get(), **values)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(asdict(self._settings), indent=2).encode())
        self.changed.emit(self._settings)
        return self._settings

    def reload(self) -> Settings:
        self._settings = self._read()
        return self._settings

    def _read(self) -> Settings:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return Settings()
        known = {f.name: f.type for f in fields(Settings)}
        clean = {k: v for k, v in data.items() if k in known}
        try:
            return Settings(**clean)
        except TypeError:
            return Settings()


SETTINGS = _SettingsHub()
