"""Knowledge distillation of ShowRoom's student from the Fast3R teacher (``showroom distill``).

The student keeps the teacher's encoder and decoder and halves the DPT head widths; it is trained to
reproduce the teacher's pointmaps with dense and/or ShowRoom's relation (RKD) losses. See
docs/distillation.md. Importing this package does not import the models (torch-heavy) until needed.

May import ``models`` and the folders below it; never ``apps`` or ``ros``.
"""

from showroom_ros.distillation.config import (
    KNOWN_LOSSES,
    ConfigError,
    DataConfig,
    DistillConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from showroom_ros.distillation.data import DataError, Room, RoomViewsDataset, collate_views, discover_rooms

__all__ = [
    "KNOWN_LOSSES",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DistillConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "Room",
    "RoomViewsDataset",
    "TrainConfig",
    "collate_views",
    "discover_rooms",
]
