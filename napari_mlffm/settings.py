"""Plugin settings that persist between sessions, in a JSON file under the user's config directory.

Location: ``$NAPARI_MLFFM_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/napari-mlffm``
(``~/.config/napari-mlffm``), file ``settings.json``. Default data folders
live under ``$XDG_DATA_HOME/napari-mlffm`` (``~/.local/share/napari-mlffm``).

The file is read field by field: a value of the wrong type or out of range
(``device: "gpu"``, ``samples: 500``), a file that is not a JSON object, or
one that is not JSON at all falls back to the default for that field (or
for all), with one napari warning naming what was replaced, so the plugin
always opens. The file is rewritten whole on the next change.
"""

from __future__ import annotations

import json
import re
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from psygnal import Signal

from model.files.checkpoint import atomic_write_bytes
from model.devices import DEVICE_CHOICES
from model.inputs.limits import MAX_SAMPLES, MAX_STEPS

# The sampling settings the plugin offers (the Propose dock's spin boxes and the settings file).
SAMPLES_RANGE = (1, MAX_SAMPLES)  # proposals per image: the model layer's bounds
STEPS_RANGE = (1, MAX_STEPS)  # DDIM steps; a model's training timesteps bound them further
SEED_RANGE = (0, 2**31 - 1)


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
    flat_field: bool | None = None  # None: the model's choice (off for the shipped weights); model/inputs/shading.py

    @property
    def model_folder_path(self) -> Path:
        return Path(self.model_folder) if self.model_folder else data_dir() / "models"

    @property
    def store_path(self) -> Path:
        return Path(self.corrections_store) if self.corrections_store else data_dir() / "corrections"


def _in_range(value, bounds: tuple[int, int]) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]


def _usable_path(text: str) -> bool:
    """A path every stat and open can take: no NUL, no name longer than the file system's 255 (bytes on POSIX,
    characters on Windows), not over 4096 bytes (32767 characters on Windows), encodable as a file name (a lone
    surrogate is not). Others made the docks fail to open (a long name is an OSError, a surrogate a UnicodeEncodeError)."""
    if "\x00" in text:
        return False
    try:
        encoded = os.fsencode(text)  # non-UTF-8 bytes of a POSIX name come back as they were (surrogateescape)
    except UnicodeError:
        return False
    if os.name == "nt":
        return len(text) <= 32767 and all(len(part) <= 255 for part in re.split(r"[\\/]", text))
    return len(encoded) <= 4096 and all(len(part) <= 255 for part in encoded.split(b"/"))


def _valid_field(name: str, value) -> bool:
    if name == "annotator":
        return isinstance(value, str) and "\x00" not in value and len(value) <= 4096
    if name in ("model_folder", "corrections_store", "active_model"):
        return isinstance(value, str) and _usable_path(value)
    if name == "device":
        return isinstance(value, str) and value in DEVICE_CHOICES
    if name == "samples":
        return value is None or _in_range(value, SAMPLES_RANGE)
    if name == "steps":
        return value is None or _in_range(value, STEPS_RANGE)
    if name == "seed":
        return _in_range(value, SEED_RANGE)
    if name == "flat_field":
        return value is None or isinstance(value, bool)
    return False


def settings_from_dict(data) -> tuple[Settings, list[str]]:
    """Settings from parsed JSON, field by field: (settings, the fields replaced by their defaults, as 'name=value')."""
    if not isinstance(data, dict):
        return Settings(), [f"not a JSON object ({type(data).__name__})"]
    clean, replaced = {}, []
    for field in fields(Settings):
        if field.name not in data:
            continue
        value = data[field.name]
        if _valid_field(field.name, value):
            clean[field.name] = value
        else:
            shown = repr(value)
            replaced.append(f"{field.name}={shown if len(shown) <= 40 else shown[:37] + '...'}")
    return Settings(**clean), replaced


def _warn(message: str) -> None:
    """One napari warning (a log line where napari is absent)."""
    try:
        from napari.utils.notifications import show_warning
    except ImportError:  # headless use of the settings
        import warnings

        warnings.warn(message, stacklevel=3)
        return
    show_warning(message)


class _SettingsHub:
    """The one in-memory copy of the settings, saved on every change."""

    changed = Signal(object)

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self.problems: list[str] = []  # what the last read replaced by defaults

    @property
    def path(self) -> Path:
        return config_dir() / "settings.json"

    def get(self) -> Settings:
        if self._settings is None:
            self._settings = self._read()
        return self._settings

    def update(self, **values) -> Settings:
        self._settings = replace(self.get(), **values)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(asdict(self._settings), indent=2).encode())
        except OSError as err:  # kept for this session; the plugin goes on
            _warn(f"{self.path}: settings not saved ({err.strerror or err})")
        self.changed.emit(self._settings)
        return self._settings

    def reload(self) -> Settings:
        self._settings = self._read()
        return self._settings

    def _read(self) -> Settings:
        self.problems = []
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Settings()
        except (OSError, UnicodeDecodeError) as err:
            self.problems = [f"unreadable ({getattr(err, 'strerror', None) or type(err).__name__})"]
            _warn(f"{self.path}: {self.problems[0]}; using the default settings")
            return Settings()
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:
            self.problems = [f"not valid JSON ({type(err).__name__})"]
            _warn(f"{self.path}: {self.problems[0]}; using the default settings")
            return Settings()
        settings, self.problems = settings_from_dict(data)
        if self.problems:
            _warn(f"{self.path}: invalid {', '.join(self.problems)}; using the defaults for these")
        return settings


SETTINGS = _SettingsHub()
