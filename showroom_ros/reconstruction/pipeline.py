"""Keyframes in, Reconstruction (cloud + surface) out: chooses a backend and runs the stages.

Backends share one small interface so the node, the CLI and the benchmarks run the same code;
``auto`` takes the first backend in :data:`AUTO_ORDER` that can handle the keyframes and says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.reconstruction.rgbd import RGBDFusionConfig, fuse_rgbd
from showroom_ros.reconstruction.surface import SurfaceConfig, attach_mesh

ProgressCallback = Callable[[float, str], None]

# Learned models first (when their weights loaded), then depth fusion, then RGB-only SfM.
AUTO_ORDER = ("fast3r", "showroom", "rgbd", "sfm")


class ReconstructionError(RuntimeError):
    """The keyframes could not be reconstructed; the message says why and what to change."""


class ReconstructionBackend(Protocol):
    name: str

    def unavailable_reason(self, keyframes: Sequence[Keyframe]) -> str | None:
        """None when this backend can reconstruct these keyframes, else a one-line reason."""

    def reconstruct(self, keyframes: Sequence[Keyframe], progress: ProgressCallback) -> Reconstruction:
        """The point cloud and cameras (no mesh: the pipeline adds it)."""


class RGBDBackend:
    """Depth + intrinsics + poses: back-project and fuse (needs no model weights)."""

    name = "rgbd"

    def __init__(self, config: RGBDFusionConfig | None = None) -> None:
        self.config = config or RGBDFusionConfig()

    def unavailable_reason(self, keyframes: Sequence[Keyframe]) -> str | None:
        missing_depth = [i for i, k in enumerate(keyframes) if k.depth is None]
        if missing_depth:
            return f"keyframes {missing_depth} have no depth image"
        missing_intrinsics = [i for i, k in enumerate(keyframes) if k.intrinsics is None]
        if missing_intrinsics:
            return f"keyframes {missing_intrinsics} have no CameraInfo intrinsics"
        missing_pose = [i for i, k in enumerate(keyframes) if k.pose is None]
        if missing_pose and not self.config.register_missing_poses:
            return f"keyframes {missing_pose} have no pose and register_missing_poses is off"
        return None

    def reconstruct(self, keyframes: Sequence[Keyframe], progress: ProgressCallback) -> Reconstruction:
        progress(0.1, "fusing depth images")
        return fuse_rgbd(list(keyframes), self.config)


@dataclass
class PipelineConfig:
    backend: str = "auto"
    build_mesh: bool = True
    min_keyframes: int = 2
    surface: SurfaceConfig = field(default_factory=SurfaceConfig)


class ReconstructionPipeline:
    """Runs one reconstruction; thread-compatible (no shared mutable state between runs)."""

    def __init__(self, config: PipelineConfig, backends: Mapping[str, ReconstructionBackend]) -> None:
        known = set(backends) | {"auto"}
        if config.backend not in known:
            raise ValueError(f"unknown backend '{config.backend}' (available: {', '.join(sorted(known))})")
        self.config = config
        self.backends = dict(backends)

    def select_backend(self, keyframes: Sequence[Keyframe]) -> tuple[ReconstructionBackend, str]:
        """The backend to run and a human-readable reason; raises if none can run."""
        if self.config.backend != "auto":
            backend = self.backends[self.config.backend]
            reason = backend.unavailable_reason(keyframes)
            if reason is not None:
                raise ReconstructionError(f"backend '{backend.name}' cannot run: {reason}")
            return backend, f"backend '{backend.name}' was requested"
        skipped: list[str] = []
        for name in AUTO_ORDER:
            backend = self.backends.get(name)
            if backend is None:
                continue
            reason = backend.unavailable_reason(keyframes)
            if reason is None:
                why = f"auto: {name}" + (f" ({'; '.join(skipped)})" if skipped else "")
                return backend, why
            skipped.append(f"{name}: {reason}")
        raise ReconstructionError("no backend can reconstruct these keyframes: " + "; ".join(skipped))

    def run(self, keyframes: Sequence[Keyframe], progress: ProgressCallback | None = None) -> Reconstruction:
        report = progress or (lambda fraction, stage: None)
        if len(keyframes) < self.config.min_keyframes:
            raise ReconstructionError(f"need at least {self.config.min_keyframes} keyframes, have {len(keyframes)}")
        backend, reason = self.select_backend(keyframes)
        report(0.0, reason)
        started = time.perf_counter()
        reconstruction = backend.reconstruct(keyframes, report)
        reconstruction.backend = backend.name
        reconstruction.timings.setdefault("backend_total", time.perf_counter() - started)
        if reconstruction.num_points == 0:
            raise ReconstructionError(f"backend '{backend.name}' produced no points")
        if not self.config.build_mesh and reconstruction.mesh is not None:
            reconstruction.mesh = None  # a backend that meshes anyway (TSDF from depth) was not asked to
        if self.config.build_mesh:
            report(0.7, "meshing (screened Poisson)" if reconstruction.mesh is None else "surface from the backend")
            mesh_started = time.perf_counter()
            reconstruction = attach_mesh(reconstruction, self.config.surface)
            reconstruction.timings.setdefault("surface_total", time.perf_counter() - mesh_started)
        report(1.0, "done")
        return reconstruction


def default_backends(fusion: RGBDFusionConfig | None = None) -> dict[str, ReconstructionBackend]:
    """The backends that need no model weights."""
    return {"rgbd": RGBDBackend(fusion)}
