"""View generation as a long-lived service: models load once, on first use, and are reused.

The ROS node and any other long-running caller hold one :class:`ViewGenerationService`; each call
validates the request, loads the inpainter (and the layout discriminator, when weights are
configured) if not loaded yet, and runs :func:`generate_views`. Loading failures fall back to
OpenCV inpainting and say so in the returned status, as :func:`load_inpainter` does.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from showroom_ros.reconstruction.result import Reconstruction

if TYPE_CHECKING:  # generate pulls in torch (ST-RoomNet): imported on first use, not at node start-up
    from showroom_ros.generation.generate import GeneratedView, GenerationRequest, ProgressCallback


@dataclass
class GenerationSettings:
    backend: str = "auto"  # default inpainting backend: auto | opencv | diffusers
    inpaint_model: str = ""  # hub id or local directory; "" = none configured
    device: str | None = None  # None = CUDA when available
    layout_model: str = ""  # ST-RoomNet Keras .h5 weights; "" = no discriminator


class ViewGenerationService:
    def __init__(self, settings: GenerationSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._inpainters: dict[str, tuple[object, str]] = {}
        self._discriminator: object | None = None
        self._discriminator_status = "no layout model configured (layout_model is empty)"
        self._discriminator_loaded = False

    def _inpainter(self, backend: str) -> tuple[object, str]:
        from showroom_ros.generation.inpainting import load_inpainter

        if backend not in self._inpainters:
            self._inpainters[backend] = load_inpainter(
                backend, model=self.settings.inpaint_model or None, device=self.settings.device
            )
        return self._inpainters[backend]

    def _layout(self) -> object | None:
        if self._discriminator_loaded or not self.settings.layout_model:
            return self._discriminator
        self._discriminator_loaded = True
        from showroom_ros.generation.st_roomnet import RoomLayoutEstimator, load_keras_h5

        path = Path(self.settings.layout_model).expanduser()
        try:
            device = self.settings.device or "cpu"
            self._discriminator = RoomLayoutEstimator(load_keras_h5(path, device=device), device=device)
            self._discriminator_status = f"ST-RoomNet layout discriminator from {path}"
        except (OSError, ValueError, KeyError) as error:
            self._discriminator_status = f"could not load ST-RoomNet weights {path}: {error}; views are not checked"
        return self._discriminator

    def run(
        self,
        request: GenerationRequest,
        reconstruction: Reconstruction | None,
        keyframe_images: Sequence[np.ndarray | None] | None,
        progress: ProgressCallback | None = None,
    ) -> tuple[list[GeneratedView], str]:
        """The generated views and a one-line status naming the models used (one call at a time)."""
        from showroom_ros.generation.generate import generate_views, validate_request

        num_keyframes = len(keyframe_images) if keyframe_images is not None else 0
        if reconstruction is not None and keyframe_images is None:
            num_keyframes = len(reconstruction.camera_poses)
        validate_request(request, reconstruction, num_keyframes)
        with self._lock:
            inpainter, inpaint_status = self._inpainter(request.backend)
            discriminator = self._layout()
            views = generate_views(reconstruction, keyframe_images, request, inpainter, discriminator, progress)
        return views, f"{inpaint_status}; {self._discriminator_status}"
