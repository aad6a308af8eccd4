"""The names of what the package saves: one rule for the base names users give, and the files of a
saved reconstruction and of a saved map.

A base name comes from a service request (``~/save``, ``~/save_map``, ``~/load_map``), a CLI option or
a timestamped default, and every saved file is ``<output folder>/<name><suffix>``. The rule below is
what keeps such a name from leaving the folder (no separator, no leading dot, nothing but a plain
file name) and from being awkward to type or glob; the node, the CLI, the demo and the writers in
``io/export.py`` and ``apps/map_session.py`` all take their names from here. Free of ROS and of the
heavy writers, so it imports in microseconds.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"
"""The whole rule, as every refusal states it."""

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""The characters and length of :data:`NAME_RULE` (use :func:`name_refusal`: it adds the ``'..'`` check)."""

RECONSTRUCTION_FILES = {"cloud": ".ply", "mesh": "_mesh.ply", "glb": ".glb", "png": ".png", "npz": ".npz"}
"""Kind -> suffix of the files a saved reconstruction ``<name>`` has; ``.npz`` is written last (it is
what ``load_reconstruction`` reads, and what marks a complete save)."""

MAP_FILES = {
    "mesh": "_map_mesh.ply",
    "cloud": "_map_cloud.ply",
    "occupancy_yaml": "_occupancy.yaml",  # nav2_map_server's YAML; its ``image`` names the PGM beside it
    "occupancy_pgm": "_occupancy.pgm",
    "volume": "_volume.npz",  # the TSDF volume a map is continued from
    "settings": "_map.yaml",  # frame and occupancy band
}
"""Kind -> suffix of the files a saved map ``<name>`` has."""

SLAM_SUFFIX = "_slam.npz"
"""A map saved while ``pose_source: slam`` also has its pose graph and keyframe database (slam/storage.py)."""


def slam_file(directory: str | os.PathLike[str], name: str) -> Path:
    """The SLAM state saved with map ``name``."""
    return Path(directory).expanduser() / (require_valid_name(name, "map name") + SLAM_SUFFIX)


KEYFRAMES_SUFFIX = "_keyframes"
"""``<name>_keyframes/``: the keyframe photos ``showroom reconstruct`` keeps beside ``<name>.npz``."""

GENERATED_SUFFIX = "_generated"
"""``<name>_generated/``: the views ``showroom generate`` writes beside ``<name>.npz``."""


class InvalidName(ValueError):
    """A base name breaks :data:`NAME_RULE`; the message quotes the name and states the whole rule."""


def name_refusal(name: str, what: str = "name") -> str | None:
    """Why ``name`` cannot be a base name (a sentence stating the whole rule), or None when it can."""
    if NAME_PATTERN.fullmatch(name) and ".." not in name:
        return None
    return f"invalid {what} {name!r}: {NAME_RULE}"


def require_valid_name(name: str, what: str = "name") -> str:
    """``name`` itself, or :class:`InvalidName` (a ValueError) saying why; ``what`` names it in the message."""
    refusal = name_refusal(name, what)
    if refusal is not None:
        raise InvalidName(refusal)
    return name


def timestamped_name(prefix: str, sequence: int | None = None, when: float | None = None) -> str:
    """``<prefix>-YYYYmmdd-HHMMSS`` in local time (``when``, default now), then ``-NNNN`` for a ``sequence``:
    the default when a request names nothing, so saves sort by time and never collide within a second
    when numbered."""
    require_valid_name(prefix, "name prefix")
    name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}"
    return name if sequence is None else f"{name}-{sequence:04d}"


def checked_name(requested: str, default_prefix: str, output_dir: str | os.PathLike[str]) -> tuple[str | None, str]:
    """``(name, "")`` for a service request's name, or ``(None, refusal)`` to answer it with.

    Surrounding white space is dropped; an empty request gets :func:`timestamped_name` of
    ``default_prefix``, or is refused when that is empty (a load must name what it loads). The refusal
    states the rule and the folder the files are in.
    """
    name = requested.strip() or (timestamped_name(default_prefix) if default_prefix else "")
    refusal = name_refusal(name)
    if refusal is None:
        return name, ""
    return None, f"{refusal} (files are written under {output_dir})"


def _files(directory: str | os.PathLike[str], name: str, suffixes: dict[str, str]) -> dict[str, Path]:
    folder = Path(directory).expanduser()
    return {kind: folder / f"{name}{suffix}" for kind, suffix in suffixes.items()}


def reconstruction_files(directory: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Kind -> path of the files a reconstruction saved as ``name`` has (:data:`RECONSTRUCTION_FILES`);
    :class:`InvalidName` for a name that breaks the rule."""
    return _files(directory, require_valid_name(name, "reconstruction name"), RECONSTRUCTION_FILES)


def map_files(directory: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Kind -> path of the files a map saved as ``name`` has (:data:`MAP_FILES`); :class:`InvalidName`
    for a name that breaks the rule."""
    return _files(directory, require_valid_name(name, "map name"), MAP_FILES)


def map_files_beside(volume: str | os.PathLike[str]) -> dict[str, Path] | None:
    """The files saved together with a ``<name>_volume.npz`` (kind -> path, existing or not), or None
    for a volume file named otherwise. Not checked against the rule: it reads what is already there,
    under whatever name a user gave it."""
    path = Path(volume).expanduser()
    if not path.name.endswith(MAP_FILES["volume"]):
        return None
    return _files(path.parent, path.name.removesuffix(MAP_FILES["volume"]), MAP_FILES)
