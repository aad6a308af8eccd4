"""Occupancy grids as ``nav2_map_server`` map files: a trinary PGM and its YAML, written atomically.

The format (nav2_map_server's map_io): the YAML names ``image`` (relative to the YAML), ``mode``
(trinary), ``resolution`` (m/cell), ``origin`` [x, y, yaw] of the lower-left pixel, ``negate``,
``occupied_thresh`` and ``free_thresh``. With negate 0 a pixel's occupancy is p = (255 - value) / 255:
p > occupied_thresh is occupied (100), p < free_thresh is free (0), anything else unknown (-1).
We write 0 (occupied), 254 (free) and 205 (unknown), as map_saver does. Image row 0 is the top of
the map (max y); the grid's row 0 is min y (nav_msgs/OccupancyGrid order), hence the flip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from showroom_ros.io.export import atomic_write_bytes

OCCUPIED_PIXEL, FREE_PIXEL, UNKNOWN_PIXEL = 0, 254, 205
OCCUPIED_THRESH, FREE_THRESH = 0.65, 0.196


@dataclass
class MapFile:
    """A grid read back from disk: data (H, W) int8 in {100, 0, -1}, row 0 = min y."""

    data: np.ndarray
    resolution: float
    origin: tuple[float, float, float]
    image_path: Path


def write_nav2_map(
    yaml_path: str | os.PathLike[str],
    data: np.ndarray,
    resolution: float,
    origin_xy: tuple[float, float],
    yaw: float = 0.0,
) -> tuple[Path, Path]:
    """Write ``<stem>.pgm`` beside ``yaml_path`` and the YAML; returns (yaml, pgm) paths."""
    grid = np.asarray(data)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"occupancy data must be a non-empty 2D array, got shape {grid.shape}")
    if not resolution > 0:
        raise ValueError(f"resolution must be > 0, got {resolution}")
    values = grid.astype(np.int16)
    pixels = np.full(grid.shape, UNKNOWN_PIXEL, np.uint8)
    pixels[values == 0] = FREE_PIXEL
    pixels[values >= 65] = OCCUPIED_PIXEL  # like map_saver: >= 65 % occupied
    pixels[(values > 0) & (values <= 25)] = FREE_PIXEL  # <= 25 % counts as free
    pixels = np.ascontiguousarray(pixels[::-1])  # image row 0 = max y
    height, width = pixels.shape
    yaml_file = Path(yaml_path)
    pgm_file = yaml_file.with_suffix(".pgm")
    atomic_write_bytes(pgm_file, f"P5\n{width} {height}\n255\n".encode("ascii") + pixels.tobytes())
    document = {
        "image": pgm_file.name,
        "mode": "trinary",
        "resolution": float(resolution),
        "origin": [float(origin_xy[0]), float(origin_xy[1]), float(yaw)],
        "negate": 0,
        "occupied_thresh": OCCUPIED_THRESH,
        "free_thresh": FREE_THRESH,
    }
    atomic_write_bytes(yaml_file, yaml.safe_dump(document, sort_keys=False).encode("utf-8"))
    return yaml_file, pgm_file


def _read_pgm(path: Path) -> np.ndarray:
    """Binary (P5) 8-bit PGM, with comments allowed in the header."""
    raw = path.read_bytes()
    tokens: list[bytes] = []
    position = 0
    while len(tokens) < 4:
        while position < len(raw) and raw[position : position + 1].isspace():
            position += 1
        if raw[position : position + 1] == b"#":
            position = raw.index(b"\n", position) + 1
            continue
        end = position
        while end < len(raw) and not raw[end : end + 1].isspace():
            end += 1
        tokens.append(raw[position:end])
        position = end
    if tokens[0] != b"P5":
        raise ValueError(f"{path}: not a binary PGM (magic {tokens[0]!r})")
    width, height, maxval = (int(t) for t in tokens[1:])
    if maxval != 255:
        raise ValueError(f"{path}: only 8-bit PGM is supported, maxval {maxval}")
    start = position + 1  # exactly one whitespace byte after maxval
    pixels = np.frombuffer(raw, np.uint8, count=width * height, offset=start)
    return pixels.reshape(height, width)


def read_nav2_map(yaml_path: str | os.PathLike[str]) -> MapFile:
    """Read a map_server YAML + image the way nav2_map_server interprets it (trinary and its thresholds)."""
    yaml_file = Path(yaml_path)
    document = yaml.safe_load(yaml_file.read_text())
    missing = {"image", "resolution", "origin", "occupied_thresh", "free_thresh"} - set(document)
    if missing:
        raise ValueError(f"{yaml_file}: missing keys {sorted(missing)}")
    if document.get("mode", "trinary") != "trinary":
        raise ValueError(f"{yaml_file}: only mode trinary is supported, got {document['mode']!r}")
    image = Path(document["image"])
    image_path = image if image.is_absolute() else yaml_file.parent / image
    pixels = _read_pgm(image_path).astype(np.float64)
    occupancy = pixels / 255.0 if int(document.get("negate", 0)) else (255.0 - pixels) / 255.0
    data = np.full(pixels.shape, -1, np.int8)
    data[occupancy > float(document["occupied_thresh"])] = 100
    data[occupancy < float(document["free_thresh"])] = 0
    origin = tuple(float(v) for v in document["origin"])
    if len(origin) != 3:
        raise ValueError(f"{yaml_file}: origin must be [x, y, yaw], got {document['origin']}")
    return MapFile(np.ascontiguousarray(data[::-1]), float(document["resolution"]), origin, image_path)  # type: ignore[arg-type]
