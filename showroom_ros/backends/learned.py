"""``fast3r`` and ``showroom`` backends: a learned multi-view model on the RGB keyframes.

Fast3R (the teacher) and ShowRoom's distilled student are the same network family; both predict, for
every keyframe, a pointmap in view 0's camera frame at an arbitrary scale. This backend runs the model
on the keyframe arrays (no temporary files), recovers the cameras (PnP with the CameraInfo intrinsics
rescaled to the model's input when they are known, else with the model's own focal estimate), and
registers the result to the robot (:func:`showroom_ros.reconstruction.registration.register_to_keyframes`).

Weights are big (2.6 GB for ViT-L) and may be missing, so a :class:`ModelHolder` loads them in a
background thread; until it is ready, or when it failed, :meth:`LearnedBackend.unavailable_reason`
says why and the pipeline's ``auto`` mode falls back to ``rgbd`` or ``sfm``. torch is imported only
when a model is configured, so the node starts quickly either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.models.devices import resolve_compute_dtype, resolve_device
from showroom_ros.models.names import (
    DEFAULT_ENGINE,
    DEVICES,
    ENGINE_CACHE_MAX_GB,
    ENGINE_PRECISION_CHOICES,
    ENGINES,
    normalise_dtype,
)
from showroom_ros.reconstruction.fusion import median_scene_depth, voxel_fuse
from showroom_ros.reconstruction.pipeline import ProgressCallback, ReconstructionError
from showroom_ros.reconstruction.registration import RegistrationReport, register_to_keyframes
from showroom_ros.reconstruction.result import Reconstruction

if TYPE_CHECKING:
    import torch

    from showroom_ros.models import Fast3R

PATCH_SIZE = 16


# --- the model holder ------------------------------------------------------------------------------


def _short(error: BaseException, limit: int = 400) -> str:
    text = " ".join(str(error).split())
    text = text if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_loader(source: str, device: str, weights_dtype: torch.dtype, student: bool) -> Fast3R:
    """Fast3R.from_pretrained, with the student's configuration for a bare ShowRoom checkpoint file.

    ShowRoom saved its student as a ``.pth`` with no config; without one the release (teacher) config
    would be assumed and every DPT layer would mismatch.
    """
    from showroom_ros.models import Fast3R, Fast3RConfig, student_config

    config = None
    path = Path(source).expanduser()
    if (
        student
        and path.is_file()
        and not (path.parent / "config.json").is_file()
        and path.suffix != ".safetensors"
    ):
        config = student_config(Fast3RConfig.vit_large_512())
    return Fast3R.from_pretrained(source, device=device, dtype=weights_dtype, config=config)


class ModelHolder:
    """Loads a model once, in the background, and says where it stands.

    ``state`` is one of ``not configured`` (no source given), ``loading``, ``ready``, ``failed``;
    ``reason`` is a one-line explanation fit for a status message (the error when it failed).
    Thread-safe: the node's executor reads the state while the loader thread writes it.
    """

    def __init__(
        self,
        source: str | Path | None,
        device: str = "auto",
        dtype: str = "auto",
        student: bool = False,
        loader: Callable[[str, str, Any, bool], Fast3R] | None = None,
        label: str = "model",
        engine: str = DEFAULT_ENGINE,
        engine_precision: str = "auto",
        engine_cache_dir: str = "",
        engine_cache_max_gb: float | None = None,
    ) -> None:
        self.source = str(source).strip() if source else ""
        self.engine, self.engine_precision, self.engine_cache_dir = engine, engine_precision, engine_cache_dir
        self.engine_cache_max_gb = engine_cache_max_gb
        self.requested_device = device
        self.requested_dtype = dtype
        self.student = student
        self.label = label
        self._loader = loader or default_loader
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._model: Fast3R | None = None
        self._state = "not configured" if not self.source else "idle"
        self._reason = f"no {label} weights configured" if not self.source else "not loaded yet"
        self._started = 0.0
        self._seconds = 0.0
        self.device = "cpu"
        self.compute_dtype = "fp32"
        self.inference_lock = threading.Lock()
        if not self.source:
            self._ready.set()

    @property
    def state(self) -> str:
        """``not configured`` / ``loading`` / ``ready`` / ``failed`` (``idle`` before start_loading)."""
        with self._lock:
            return self._state

    @property
    def reason(self) -> str:
        with self._lock:
            if self._state == "loading":
                return f"loading {self.source} ({time.monotonic() - self._started:.0f} s so far)"
            return self._reason

    @property
    def load_seconds(self) -> float:
        """How long the load took (or has taken so far); 0 before start_loading."""
        with self._lock:
            if self._state == "loading":
                return time.monotonic() - self._started
            return self._seconds

    @property
    def model(self) -> Fast3R | None:
        with self._lock:
            return self._model

    def start_loading(self) -> None:
        """Start the background load (idempotent; returns at once)."""
        with self._lock:
            if self._state != "idle":
                return
            self._state, self._started = "loading", time.monotonic()
            self._thread = threading.Thread(
                target=self._load, name=f"showroom-load-{self.label}", daemon=True
            )
            self._thread.start()

    def skip(self, reason: str) -> None:
        """Never load (the selected backend cannot use this model); ``reason`` is what status says."""
        with self._lock:
            if self._state != "idle":
                return
            self._state, self._reason = "not configured", reason
        self._ready.set()

    @property
    def loading(self) -> bool:
        """Whether the loader thread is still running (a download or torch load under way)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def load(self) -> str:
        """Load in this thread (CLI, benchmarks); returns the final state."""
        self.start_loading()
        self.wait()
        return self.state

    def wait(self, timeout: float | None = None) -> str:
        """Block until the load finished (or ``timeout`` seconds); returns the state.

        Joins the loader thread too, so that a process exiting right after does not tear down torch
        while that thread is still releasing its objects (which aborts the interpreter).
        """
        if self._ready.wait(timeout) and self._thread is not None:
            self._thread.join(timeout)
        return self.state

    def _load(self) -> None:
        try:
            device = resolve_device(self.requested_device)
            compute = resolve_compute_dtype(self.requested_dtype, device)
            # Weights stay fp32 on CPU (autocast does bf16 per op); on a GPU they are stored in the
            # compute dtype, which halves the 2.6 GB of ViT-L.
            from showroom_ros.models.dtypes import TORCH_DTYPES

            weights = TORCH_DTYPES["fp32" if device == "cpu" else compute]
            model = self._loader(self.source, device, weights, self.student)
            engine_note = self._attach_engine(model, device, compute)
        except MemoryError:
            self._finish(None, f"failed: out of memory while loading {self.source}")
        except Exception as error:  # any loader failure must reach the status, not kill the node
            kind = type(error).__name__
            self._finish(None, f"failed: {kind}: {_short(error)}")
        else:
            self.device, self.compute_dtype = device, compute
            millions = sum(p.numel() for p in model.parameters()) / 1e6
            seconds = time.monotonic() - self._started
            self._finish(
                model,
                f"{self.source} on {device} ({compute}), {millions:.1f} M parameters, "
                f"loaded in {seconds:.1f} s{engine_note}",
            )

    def _attach_engine(self, model: Fast3R, device: str, compute: str) -> str:
        """Put the network on the configured inference engine (built lazily per image size); a note."""
        if self.engine == "torch":
            return ""
        if device != "cpu":
            if self.engine == "auto":
                return "; engine: eager torch (the inference engines are for CPU)"
            raise ValueError(f"model_engine '{self.engine}' runs on CPU, but the model is on {device}")
        precision = compute if self.engine_precision == "auto" else self.engine_precision
        limit = None if self.engine_cache_max_gb is None else int(self.engine_cache_max_gb * 1e9)
        engine = model.use_engine(self.engine, precision, self.engine_cache_dir or None, cache_max_bytes=limit)
        where = engine.cache_dir if engine is not None else "-"
        return f"; engine {self.engine} {precision} (built at the first run of each image size, cached in {where})"

    def _finish(self, model: Fast3R | None, reason: str) -> None:
        with self._lock:
            self._model = model
            self._state = "ready" if model is not None else "failed"
            self._reason = reason
            self._seconds = time.monotonic() - self._started
        self._ready.set()


# --- the backend -----------------------------------------------------------------------------------


@dataclass
class LearnedConfig:
    """Parameters of a learned backend (one per model: ``fast3r``, ``showroom``).

    ``model``: Hugging Face repo id or local path (directory with config.json + model.safetensors, a
    .safetensors or a .pth); empty = not configured. ``input_size``: long side fed to the network
    (512: 512x384 for 4:3 images, the release's resolution; 256: ShowRoom's fast 256x192 mode).
    ``conf_percentile``: per view, keep pixels at or above this percentile of the view's confidence;
    ``min_confidence``: and at or above this absolute confidence (Fast3R's confidence is >= 1).
    ``image_idx_seed``: -1 = deterministic image indices 0..N-1, else upstream's random draw seeded.
    ``voxel_size`` (m) thins the output once it is metric; ``relative_voxel_size`` x the median scene
    depth when it is not. ``pixel_stride`` samples every n-th pixel for the scale-from-depth fit.
    """

    model: str = ""
    device: str = "auto"
    dtype: str = "auto"
    input_size: int = 512
    conf_percentile: float = 50.0
    min_confidence: float = 1.0
    image_idx_seed: int = -1
    use_known_intrinsics: bool = True
    voxel_size: float = 0.01
    relative_voxel_size: float = 0.002
    pnp_iterations: int = 100
    pnp_reprojection_error: float = 5.0
    depth_pixel_stride: int = 4
    engine: str = DEFAULT_ENGINE
    engine_precision: str = "auto"
    engine_cache_dir: str = ""
    engine_cache_max_gb: float = ENGINE_CACHE_MAX_GB  # least recently used artefacts go beyond it; 0: no limit

    def __post_init__(self) -> None:
        if (
            int(self.input_size) != self.input_size
            or self.input_size < 2 * PATCH_SIZE
            or self.input_size % PATCH_SIZE
        ):
            raise ValueError(
                f"input_size must be a multiple of {PATCH_SIZE} (512 or 256), got {self.input_size}"
            )
        if not 0 <= self.conf_percentile < 100:
            raise ValueError(f"conf_percentile must be in [0, 100), got {self.conf_percentile}")
        if self.device.strip().lower() not in DEVICES and not self.device.strip().lower().startswith("cuda"):
            raise ValueError(f"unknown device '{self.device}': use one of {', '.join(DEVICES)}")
        normalise_dtype(self.dtype)
        if self.engine not in ENGINES:
            raise ValueError(f"unknown model engine '{self.engine}': use one of {', '.join(ENGINES)}")
        if self.engine_precision not in ENGINE_PRECISION_CHOICES:
            raise ValueError(
                f"unknown engine precision '{self.engine_precision}': "
                f"use one of {', '.join(ENGINE_PRECISION_CHOICES)}"
            )
        if self.engine_precision == "int8" and self.engine != "onnxruntime":
            raise ValueError("engine precision int8 needs model_engine 'onnxruntime' (it is never chosen by auto)")
        if not 0 <= self.engine_cache_max_gb < float("inf"):
            raise ValueError(f"engine_cache_max_gb must be >= 0 GB (0: no limit), got {self.engine_cache_max_gb}")
        if not (self.voxel_size > 0 and self.relative_voxel_size > 0):
            raise ValueError("voxel_size and relative_voxel_size must be > 0")
        if self.depth_pixel_stride < 1:
            raise ValueError(f"depth_pixel_stride must be >= 1, got {self.depth_pixel_stride}")


@dataclass(frozen=True)
class ViewGeometry:
    """How a keyframe maps to the model's input: resized, then centre-cropped at (crop_x, crop_y)."""

    width: int
    height: int
    resized_width: int
    resized_height: int
    crop_x: int
    crop_y: int
    crop_width: int
    crop_height: int

    def to_original(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model-input pixel coordinates -> original image pixel coordinates (pixel centres at integers)."""
        sx, sy = self.width / self.resized_width, self.height / self.resized_height
        return (u + self.crop_x + 0.5) * sx - 0.5, (v + self.crop_y + 0.5) * sy - 0.5

    def model_intrinsics(self, intrinsics: CameraIntrinsics) -> CameraIntrinsics:
        """The keyframe's CameraInfo intrinsics as the model sees the image (rescaled, then cropped)."""
        resized = intrinsics.scaled(self.width, self.height).scaled(self.resized_width, self.resized_height)
        return resized.cropped(self.crop_x, self.crop_y, self.crop_width, self.crop_height)

    def original_intrinsics(self, focal: float) -> CameraIntrinsics:
        """Original-resolution intrinsics of a model-resolution focal, principal point at the crop centre."""
        sx, sy = self.width / self.resized_width, self.height / self.resized_height
        cx, cy = self.to_original(np.array(self.crop_width / 2 - 0.5), np.array(self.crop_height / 2 - 0.5))
        return CameraIntrinsics(focal * sx, focal * sy, float(cx), float(cy), self.width, self.height)


def view_geometry(width: int, height: int, size: int) -> ViewGeometry:
    """The resize-and-centre-crop of Fast3R's loader (long side to ``size``, crop to multiples of 16)."""
    long_side = max(width, height)
    resized_w, resized_h = round(width * size / long_side), round(height * size / long_side)
    cx, cy = resized_w // 2, resized_h // 2
    half_w, half_h = ((2 * cx) // PATCH_SIZE) * 8, ((2 * cy) // PATCH_SIZE) * 8
    if resized_w == resized_h:
        half_h = 3 * half_w // 4
    if half_w == 0 or half_h == 0:
        raise ValueError(
            f"a {width}x{height} image leaves nothing after the model's {size}-px resize and crop"
        )
    return ViewGeometry(width, height, resized_w, resized_h, cx - half_w, cy - half_h, 2 * half_w, 2 * half_h)


def pose_from_known_intrinsics(
    pts3d: np.ndarray,
    conf: np.ndarray,
    intrinsics: CameraIntrinsics,
    iterations: int,
    reprojection_error: float,
) -> np.ndarray | None:
    """Camera-to-view-0 pose of one view by PnP-RANSAC with the camera's real intrinsics (None on failure).

    Upstream's PnP uses the model's own focal and the image centre; with CameraInfo known the real
    intrinsics make the poses consistent with the robot's camera.
    """
    import cv2

    keep = np.isfinite(conf) & (conf > 1.0) & np.isfinite(pts3d).all(axis=-1)
    if int(keep.sum()) < 6:
        return None
    v, u = np.nonzero(keep)
    image_points = np.stack([u, v], axis=1).astype(np.float64)
    object_points = pts3d[keep].astype(np.float64)
    try:
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            object_points,
            image_points,
            intrinsics.matrix,
            None,
            iterationsCount=iterations,
            reprojectionError=reprojection_error,
            flags=cv2.SOLVEPNP_SQPNP,
        )
    except cv2.error:
        return None
    if not ok or inliers is None or len(inliers) < 6:
        return None
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = cv2.Rodrigues(rvec)[0]
    world_to_camera[:3, 3] = np.asarray(tvec).reshape(3)
    return np.linalg.inv(world_to_camera)


class LearnedBackend:
    """Fast3R-family model -> registered coloured cloud (``fast3r``: teacher, ``showroom``: student)."""

    def __init__(self, name: str, holder: ModelHolder, config: LearnedConfig) -> None:
        self.name = name
        self.holder = holder
        self.config = config
        self.last_registration: RegistrationReport | None = None

    def unavailable_reason(self, keyframes: Sequence[Keyframe]) -> str | None:
        state = self.holder.state
        if state == "not configured":
            if self.holder.source:  # configured, but skipped: the selected backend does not use it
                return self.holder.reason
            return f"not configured: no weights given for '{self.name}'"
        if state == "idle":
            return "model not loaded (start_loading() was not called)"
        if state == "loading":
            return self.holder.reason
        if state == "failed":
            return self.holder.reason
        if len(keyframes) < 2:
            return f"needs at least 2 keyframes, got {len(keyframes)}"
        sizes = {(k.width, k.height) for k in keyframes}
        if len(sizes) > 1:
            return f"keyframes have different image sizes {sorted(sizes)}; the model needs one size per run"
        return None

    def reconstruct(self, keyframes: Sequence[Keyframe], progress: ProgressCallback) -> Reconstruction:
        from showroom_ros.models import predict_scene

        keyframes = list(keyframes)
        model = self.holder.model
        if model is None:
            raise ReconstructionError(f"backend '{self.name}' has no model: {self.holder.reason}")
        config = self.config
        sizes = {(k.width, k.height) for k in keyframes}
        if len(sizes) > 1:
            raise ReconstructionError(
                f"the learned model needs keyframes of one size, got {sorted(sizes)}: "
                "use one camera model per run"
            )
        timings: dict[str, float] = {}
        geometry = view_geometry(keyframes[0].width, keyframes[0].height, config.input_size)
        engine = model.engine
        crop = (geometry.crop_height, geometry.crop_width)
        building = engine is not None and not engine.is_prepared(crop)
        progress(
            0.1,
            f"{self.name}: running the model on {len(keyframes)} keyframes at {config.input_size} px"
            + (f" (first run at this size: preparing the {engine.engine} engine)" if building else ""),
        )
        started = time.perf_counter()
        with self.holder.inference_lock:
            prediction = predict_scene(
                model,
                [k.image for k in keyframes],
                size=config.input_size,
                dtype=self.holder.compute_dtype,
                image_idx_seed=None if config.image_idx_seed < 0 else config.image_idx_seed,
                conf_percentile=config.conf_percentile,
                niter_pnp=config.pnp_iterations,
            )
        timings.update({f"model_{k}": v for k, v in prediction.timings.items()})
        timings["model_total"] = time.perf_counter() - started

        progress(0.4, f"{self.name}: recovering cameras")
        started = time.perf_counter()
        if prediction.image_size != (geometry.crop_height, geometry.crop_width):
            raise ReconstructionError(
                f"model input is {prediction.image_size} but the expected crop is "
                f"{(geometry.crop_height, geometry.crop_width)}: preprocessing changed"
            )
        poses, placed, intrinsics = self._cameras(prediction, keyframes, geometry)
        timings["cameras"] = time.perf_counter() - started

        cloud = prediction.colored_points(
            conf_percentile=config.conf_percentile, min_conf=config.min_confidence
        )
        if len(cloud.points) == 0:
            raise ReconstructionError(f"{self.name}: no pixel passed the confidence filter")
        reconstruction = Reconstruction(
            points=cloud.points.astype(np.float32),
            colors=cloud.colors,
            confidence=cloud.confidence.astype(np.float32),
            camera_poses=poses,
            intrinsics=intrinsics,
            frame_id="model",
            metric=False,
            backend=self.name,
        )
        if engine is not None and crop in engine.failures:
            reconstruction.notes.append(engine.failures[crop] + "; ran eager torch instead")
        progress(0.5, f"{self.name}: registering to the keyframe poses / depth")
        started = time.perf_counter()
        observations = self._depth_observations(prediction, keyframes, placed, poses, geometry)
        reconstruction, report = register_to_keyframes(reconstruction, keyframes, placed, observations)
        self.last_registration = report
        timings["registration"] = time.perf_counter() - started

        started = time.perf_counter()
        voxel = (
            config.voxel_size
            if reconstruction.metric
            else config.relative_voxel_size * median_scene_depth(reconstruction)
        )
        points, colors, confidence = voxel_fuse(
            reconstruction.points, reconstruction.colors, reconstruction.confidence, voxel
        )
        reconstruction.points, reconstruction.colors, reconstruction.confidence = points, colors, confidence
        timings["voxel"] = time.perf_counter() - started
        reconstruction.timings = timings
        progress(0.6, f"{self.name}: {len(points)} points; {report.summary()}")
        return reconstruction

    def _cameras(
        self, prediction: Any, keyframes: list[Keyframe], geometry: ViewGeometry
    ) -> tuple[np.ndarray, list[int], list[CameraIntrinsics]]:
        """Camera-to-view-0 poses of the views that could be placed, their keyframe indices, intrinsics.

        View 0 is the identity by construction (the global pointmaps are in its camera frame).
        """
        config = self.config
        known = config.use_known_intrinsics and all(k.intrinsics is not None for k in keyframes)
        poses, placed = [np.eye(4)], [0]
        for index in range(1, len(keyframes)):
            if known:
                camera = keyframes[index].intrinsics
                assert camera is not None
                pose = pose_from_known_intrinsics(
                    prediction.pts3d[index],
                    prediction.conf[index],
                    geometry.model_intrinsics(camera),
                    config.pnp_iterations,
                    config.pnp_reprojection_error,
                )
            else:
                pose = prediction.camera_to_world[index] if prediction.pose_valid[index] else None
            if pose is not None:
                poses.append(np.asarray(pose, dtype=np.float64))
                placed.append(index)
        intrinsics = []
        for index in placed:
            camera = keyframes[index].intrinsics
            if camera is None:
                # The model's focal for this view, else the shared one, else COLMAP's 1.2 x size prior.
                focal = prediction.focals[index]
                if not (np.isfinite(focal) and focal > 0):
                    focal = prediction.focal or 1.2 * max(geometry.crop_width, geometry.crop_height)
                camera = geometry.original_intrinsics(float(focal))
            intrinsics.append(camera)
        return np.stack(poses), placed, intrinsics

    def _depth_observations(
        self,
        prediction: Any,
        keyframes: list[Keyframe],
        placed: list[int],
        poses: np.ndarray,
        geometry: ViewGeometry,
    ) -> list[tuple[np.ndarray, np.ndarray] | None] | None:
        """Per keyframe: original-image pixels and the predicted depth there (model units), for the scale."""
        if not any(k.depth is not None for k in keyframes):
            return None
        stride = self.config.depth_pixel_stride
        height, width = prediction.image_size
        v, u = np.mgrid[0:height:stride, 0:width:stride]
        u_original, v_original = geometry.to_original(
            u.ravel().astype(np.float64), v.ravel().astype(np.float64)
        )
        pixels = np.stack([u_original, v_original], axis=1)
        observations: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(keyframes)
        for pose, index in zip(poses, placed, strict=True):
            if keyframes[index].depth is None:
                continue
            points = prediction.pts3d[index][v.ravel(), u.ravel()].astype(np.float64)
            conf = prediction.conf[index][v.ravel(), u.ravel()]
            depth = (points - pose[:3, 3]) @ pose[:3, 2]
            threshold = np.percentile(prediction.conf[index], self.config.conf_percentile)
            keep = (conf >= threshold) & np.isfinite(depth)
            observations[index] = (pixels[keep], depth[keep])
        return observations
