"""Matrix/TRC ICC v2 display profiles built from their primaries, for tests (no profile files ship).

A profile is a 128-byte header, a tag table, and tags: a description, the
white point, the three primaries' XYZ columns (adapted to D50, the ICC
connection space) and one tone curve per channel.
"""

from __future__ import annotations

import struct

import numpy as np

D50 = np.array([0.9642, 1.0, 0.8249])
D65 = np.array([0.95047, 1.0, 1.08883])
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])

DISPLAY_P3_XY = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
ADOBE_RGB_XY = ((0.640, 0.330), (0.210, 0.710), (0.150, 0.060))
SRGB_XY = ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060))


def rgb_to_xyz_d65(primaries_xy: tuple) -> np.ndarray:
    """(3, 3) matrix from linear RGB to XYZ (D65 white), columns = the primaries."""
    columns = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries_xy]).T
    scale = np.linalg.solve(columns, D65)
    return columns * scale


def _d65_to_d50() -> np.ndarray:
    source, target = _BRADFORD @ D65, _BRADFORD @ D50
    return np.linalg.inv(_BRADFORD) @ np.diag(target / source) @ _BRADFORD


def srgb_decode(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    v = np.clip(linear, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def _s15(value: float) -> bytes:
    return struct.pack(">i", int(round(value * 65536)))


def _xyz_tag(xyz: np.ndarray) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in xyz)


def _curve_tag(gamma: float | None) -> bytes:
    if gamma is not None:
        return b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", int(round(gamma * 256)))
    table = np.round(srgb_decode(np.linspace(0, 1, 1024)) * 65535).astype(">u2")
    return b"curv" + b"\0" * 4 + struct.pack(">I", len(table)) + table.tobytes()


def _desc_tag(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67


def display_profile(description: str, primaries_xy: tuple, gamma: float | None = None) -> bytes:
    """ICC v2 RGB display profile bytes; ``gamma`` None gives the sRGB tone curve (as Display P3 uses)."""
    to_d50 = _d65_to_d50() @ rgb_to_xyz_d65(primaries_xy)
    curve = _curve_tag(gamma)
    tags = [
        (b"desc", _desc_tag(description)),
        (b"wtpt", _xyz_tag(D50)),
        (b"rXYZ", _xyz_tag(to_d50[:, 0])),
        (b"gXYZ", _xyz_tag(to_d50[:, 1])),
        (b"bXYZ", _xyz_tag(to_d50[:, 2])),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text" + b"\0" * 4 + b"no copyright, test profile\0"),
    ]
    return _assemble(tags, b"RGB ")


def _assemble(tags: list[tuple[bytes, bytes]], colour_space: bytes) -> bytes:
    offset = 128 + 4 + 12 * len(tags)
    table, data = [], b""
    for signature, body in tags:
        table.append(signature + struct.pack(">II", offset + len(data), len(body)))
        data += body + b"\0" * (-len(body) % 4)
    body = struct.pack(">I", len(tags)) + b"".join(table) + data
    size = 128 + len(body)
    header = (
        struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntr" + colour_space + b"XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 8
        + struct.pack(">I", 0) + b"".join(_s15(v) for v in D50) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28
    )
    assert len(header) == 128
    return header + body


def grey_profile(description: str, gamma: float) -> bytes:
    """ICC v2 grey display profile bytes: a D50 white point and one gamma tone curve (kTRC)."""
    tags = [(b"desc", _desc_tag(description)), (b"wtpt", _xyz_tag(D50)), (b"kTRC", _curve_tag(gamma))]
    return _assemble(tags, b"GRAY")


def expected_srgb(rgb8: np.ndarray, primaries_xy: tuple, gamma: float | None = None) -> np.ndarray:
    """The sRGB 8-bit values of ``rgb8`` stored in the given space (relative colorimetric, clipped)."""
    encoded = np.asarray(rgb8, dtype=np.float64) / 255.0
    linear = encoded**gamma if gamma is not None else srgb_decode(encoded)
    xyz = linear @ rgb_to_xyz_d65(primaries_xy).T
    srgb_linear = xyz @ np.linalg.inv(rgb_to_xyz_d65(SRGB_XY)).T
    return np.round(srgb_encode(srgb_linear) * 255.0)
