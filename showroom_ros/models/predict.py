"""One call from images to a posed, coloured Fast3R result: what the ROS node and the CLI use.

Image indices: the release draws random image-index embeddings at inference, so upstream's output changes
from run to run. ``predict_scene`` is deterministic by default (indices 0..N-1); pass ``image_idx_seed``
to get upstream's random draw, reproducibly (the same ids upstream draws after ``torch.manual_seed(seed)``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.models.dtypes import resolve_dtype
from showroom_ros.models.fast3r import Fast3R
from showroom_ros.models.postprocess import align_local_to_global, confident_mask, estimate_poses
from showroom_ros.models.preprocess import ImageInput, preprocess_images, view_colors


class ColoredPoints(NamedTuple):
    """A flat coloured cloud in view 0's camera frame (arbitrary, non-metric scale)."""

    points: np.ndarray  # (M, 3) float32
    colors: np.ndarray  # (M, 3) uint8
    confidence: np.ndarray  # (M,) float32, >= 1
    view_index: np.ndarray  # (M,) int32, which view each point came from


@dataclass
class Fast3RPrediction:
    """Everything one Fast3R run gives, as numpy, per view, at the model's input resolution (H, W).

    Frames: ``pts3d`` and ``pts3d_local_aligned`` are in view 0's camera frame (OpenCV: x right, y down,
    z forward); ``pts3d_local`` is in each view's own camera frame with its own scale. ``camera_to_world``
    maps each camera into view 0's frame (identity where PnP failed, see ``pose_valid``). The scale is
    arbitrary (the network was trained on normalised scenes), so nothing here is in metres.
    """

    image_size: tuple[int, int]  # (H, W)
    colors: np.ndarray  # (N, H, W, 3) uint8, the resized and cropped RGB
    pts3d: np.ndarray  # (N, H, W, 3) float32, global head
    conf: np.ndarray  # (N, H, W) float32
    camera_to_world: np.ndarray  # (N, 4, 4) float64
    pose_valid: np.ndarray  # (N,) bool
    focal: float | None  # pixels at (H, W), of the first posed view; None when no view could be posed
    focals: np.ndarray  # (N,) float64 per view, NaN where the view could not be posed
    image_ids: np.ndarray  # (N,) int64, the image-index embedding rows used
    pts3d_local: np.ndarray | None = None  # (N, H, W, 3) float32, local head, camera frames
    conf_local: np.ndarray | None = None  # (N, H, W) float32
    pts3d_local_aligned: np.ndarray | None = None  # (N, H, W, 3) float32, local head in view 0's frame
    conf_percentile: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return int(self.pts3d.shape[0])

    def intrinsics(self) -> list[CameraIntrinsics | None]:
        """Per-view pinhole intrinsics at (H, W) (principal point at the image centre, as upstream's PnP)."""
        height, width = self.image_size
        return [
            CameraIntrinsics(float(f), float(f), width / 2, height / 2, width, height)
            if ok and f > 0
            else None
            for f, ok in zip(self.focals, self.pose_valid, strict=True)
        ]

    def colored_points(
        self,
        conf_percentile: float | None = None,
        min_conf: float | None = None,
        source: str = "global",
        views: Sequence[int] | None = None,
    ) -> ColoredPoints:
        """Confidence-filtered coloured points in view 0's frame.

        ``conf_percentile`` (default: the one given to predict_scene) is applied per view: each view keeps
        its pixels at or above that percentile of its own confidence. ``source`` is ``global`` (global head)
        or ``local_aligned`` (local head moved into view 0's frame, often sharper per view).
        """
        if source == "global":
            pts, conf = self.pts3d, self.conf
        elif source == "local_aligned":
            if self.pts3d_local_aligned is None or self.conf_local is None:
                raise ValueError(
                    "this prediction has no aligned local pointmaps (model without a local head?)"
                )
            pts, conf = self.pts3d_local_aligned, self.conf
        else:
            raise ValueError(f"source must be 'global' or 'local_aligned', got {source!r}")
        percentile = self.conf_percentile if conf_percentile is None else conf_percentile
        chosen = range(self.num_views) if views is None else views
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for v in chosen:
            keep = confident_mask(conf[v], percentile, min_conf) & np.isfinite(pts[v]).all(axis=-1)
            parts.append(
                (pts[v][keep], self.colors[v][keep], conf[v][keep], np.full(int(keep.sum()), v, np.int32))
            )
        if not parts:
            empty = np.zeros((0, 3), np.float32)
            return ColoredPoints(
                empty, np.zeros((0, 3), np.uint8), np.zeros(0, np.float32), np.zeros(0, np.int32)
            )
        return ColoredPoints(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def predict_scene(
    model: Fast3R,
    images: Sequence[ImageInput],
    size: int = 512,
    dtype: torch.dtype | str | None = None,
    image_idx_seed: int | None = None,
    conf_percentile: float = 0.0,
    niter_pnp: int = 100,
    focal_method: str = "first_view_from_global_head",
    align_conf_percentile: float = 85.0,
) -> Fast3RPrediction:
    """Preprocess ``images`` (paths or uint8 RGB arrays), run Fast3R, estimate poses and focal.

    ``dtype`` None runs in the model's own precision (fp32, or bf16 for a model loaded with
    ``dtype=torch.bfloat16``, the fast path); bf16/fp16 on an fp32 model autocasts (weights re-cast per
    call). ``image_idx_seed`` None -> deterministic indices 0..N-1; an int -> upstream's random draw,
    seeded with it.
    ``align_conf_percentile`` is the demo's 85 for the local->global alignment.
    """
    if len(images) < 2:
        raise ValueError(f"Fast3R needs at least 2 images of the scene, got {len(images)}")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    views = preprocess_images(images, size=size)
    timings["preprocess"] = time.perf_counter() - start

    amp_dtype = None if dtype is None else resolve_dtype(dtype)
    ids = model.resolve_image_ids(1, len(views), image_idx_seed, sequential_image_ids=image_idx_seed is None)
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = model(views, image_ids=ids, autocast_dtype=amp_dtype)
        outputs = [{k: v.cpu() for k, v in view.items()} for view in outputs]
    timings["network"] = time.perf_counter() - start

    start = time.perf_counter()
    poses, focals = estimate_poses(outputs, niter_pnp=niter_pnp, focal_method=focal_method)
    timings["poses"] = time.perf_counter() - start
    valid = np.array([f is not None for f in focals[0]])
    focal = next((f for f in focals[0] if f is not None), None)

    aligned = None
    if "pts3d_local" in outputs[0]:
        start = time.perf_counter()
        aligned_views, _ = align_local_to_global(outputs, align_conf_percentile)
        aligned = np.stack([a[0].numpy() for a in aligned_views])
        timings["align"] = time.perf_counter() - start

    def stack(key: str) -> np.ndarray | None:
        if key not in outputs[0]:
            return None
        return np.stack([view[key][0].float().numpy() for view in outputs])

    pts3d, conf = stack("pts3d_in_other_view"), stack("conf")
    assert pts3d is not None and conf is not None
    return Fast3RPrediction(
        image_size=(int(pts3d.shape[1]), int(pts3d.shape[2])),
        colors=np.concatenate([view_colors(view) for view in views]),
        pts3d=pts3d,
        conf=conf,
        camera_to_world=np.stack(poses[0]).astype(np.float64),
        pose_valid=valid,
        focal=focal,
        focals=np.array([np.nan if f is None else f for f in focals[0]], dtype=np.float64),
        image_ids=ids[0].numpy().copy(),
        pts3d_local=stack("pts3d_local"),
        conf_local=stack("conf_local"),
        pts3d_local_aligned=aligned,
        conf_percentile=conf_percentile,
        timings=timings,
    )
