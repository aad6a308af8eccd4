"""Mapping: what a robot keeps across reconstructions (the accumulated point map, and the volume grown from it).

May import ``geometry``, ``capture`` and ``reconstruction``; never ``io``, ``backends`` or higher.

The robot map's public names are exported lazily (``from showroom_ros.mapping import RobotMap``), so
importing one light module of this package (e.g. ``occupancy``) does not load Open3D.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RobotMap": "robot_map",
    "RobotMapConfig": "robot_map",
    "MapUpdate": "robot_map",
    "MapInputError": "robot_map",
    "keyframe_key": "robot_map",
    "TsdfVolume": "volume",
    "VolumeConfig": "volume",
    "IntegrationReport": "volume",
    "ChunkedMesh": "mesh_chunks",
    "ChunkUpdate": "mesh_chunks",
    "ChunkMesh": "mesh_chunks",
    "OccupancyConfig": "occupancy",
    "OccupancyGrid": "occupancy",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
