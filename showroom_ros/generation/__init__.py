"""View generation ("3D generate"): novel views of a reconstruction, inpainted, checked by room layout.

Submodules: :mod:`.view_synthesis` (turned cameras, rendering, hole masks), :mod:`.inpainting`
(Stable Diffusion 2 / OpenCV), :mod:`.st_roomnet` (layout network), :mod:`.layout` (ShowRoom's
decision rules, plausibility), :mod:`.generate` (request validation, the generation loop, keyframes),
:mod:`.cli` (``showroom generate``).
Names are imported lazily so that rendering alone does not pull in torch, transformers or diffusers.

May import ``geometry``, ``capture``, ``reconstruction``, ``io`` and ``models``; never ``apps`` or ``ros``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GenerationRequest": "generate",
    "GeneratedView": "generate",
    "validate_request": "generate",
    "generate_views": "generate",
    "generated_views_to_keyframes": "generate",
    "save_generated_views": "generate",
    "add_generate_arguments": "cli",
    "run_generate_cli": "cli",
    "main": "cli",
    "Inpainter": "inpainting",
    "InpaintSettings": "inpainting",
    "OpenCVInpainter": "inpainting",
    "DiffusersInpainter": "inpainting",
    "load_inpainter": "inpainting",
    "STRoomNet": "st_roomnet",
    "RoomLayout": "st_roomnet",
    "RoomLayoutEstimator": "st_roomnet",
    "load_keras_h5": "st_roomnet",
    "choose_extension": "layout",
    "check_layout_plausibility": "layout",
    "is_front_view": "layout",
    "NovelView": "view_synthesis",
    "HoleMaskConfig": "view_synthesis",
    "render_novel_view": "view_synthesis",
    "yawed_pose": "view_synthesis",
    "estimate_up_direction": "view_synthesis",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
