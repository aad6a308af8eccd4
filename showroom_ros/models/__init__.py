"""Fast3R (facebookresearch/fast3r, CVPR 2025) and ShowRoom's distilled student, ROS-free (torch only).

Typical use::

    model = Fast3R.from_pretrained(FAST3R_RELEASE_REPO)
    prediction = predict_scene(model, ["a.jpg", "b.jpg", "c.jpg"], size=512, dtype="bf16")
    cloud = prediction.colored_points(conf_percentile=50)

Imports only ``geometry`` among the showroom_ros folders, so the models load anywhere. The names below
are loaded at first use (PEP 562): importing the package, or its torch-free
:mod:`~showroom_ros.models.names` that the parameter table and the CLI read at start-up, imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Every public name of the package -> the module that owns it.
_OWNERS = {
    "FAST3R_RELEASE_REPO": "names",
    "CheckpointError": "loading",
    "ColoredPoints": "predict",
    "DecoderConfig": "config",
    "EncoderConfig": "config",
    "Fast3R": "fast3r",
    "Fast3RConfig": "config",
    "Fast3RPrediction": "predict",
    "HeadConfig": "config",
    "align_local_to_global": "postprocess",
    "draw_random_image_ids": "decoder",
    "estimate_focal": "postprocess",
    "estimate_poses": "postprocess",
    "predict_scene": "predict",
    "preprocess_images": "preprocess",
    "resolve_dtype": "dtypes",
    "sequential_image_ids": "decoder",
    "student_config": "config",
    "view_colors": "preprocess",
}

__all__ = sorted(_OWNERS)


def __getattr__(name: str) -> Any:
    """Import the owning module of ``name`` on first access, then keep the value here."""
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{owner}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
