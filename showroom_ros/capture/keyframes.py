"""Keyframes: the 3-5 views a reconstruction is built from, how they are chosen and buffered."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.geometry.poses import pose_distance


@dataclass
class Keyframe:
    """One camera view as the core sees it, whatever it came from (ROS topic, folder, bag).

    ``pose`` is camera-to-map (4x4, optical frame: x right, y down, z forward) when known.
    ``depth`` is float32 metres with NaN where invalid. When ``depth_intrinsics`` is None the
    depth image is registered to the colour image (scaled to its own size if they differ).
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    stamp_ns: int = 0
    intrinsics: CameraIntrinsics | None = None
    depth: np.ndarray | None = None  # (h, w) float32 metres, NaN = invalid
    depth_intrinsics: CameraIntrinsics | None = None
    pose: np.ndarray | None = None  # (4, 4) float64 camera-to-map
    camera_id: int = 0
    frame_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"keyframe image must be (H, W, 3) uint8 RGB, got {self.image.shape} {self.image.dtype}")
        if self.image.shape[0] == 0 or self.image.shape[1] == 0:
            raise ValueError("keyframe image is empty")
        if self.depth is not None and (self.depth.ndim != 2 or self.depth.dtype != np.float32):
            raise ValueError(f"depth must be (H, W) float32 metres, got {self.depth.shape} {self.depth.dtype}")
        if self.pose is not None:
            self.pose = np.asarray(self.pose, dtype=np.float64)
            if self.pose.shape != (4, 4) or not np.all(np.isfinite(self.pose)):
                raise ValueError("pose must be a finite 4x4 camera-to-map matrix")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


# --- keyframe selection -------------------------------------------------------------------------

SHARPNESS_THUMBNAIL_WIDTH = 320
"""Sharpness is measured at this width whatever the camera resolution, so one threshold fits all cameras."""

MOTION_THUMBNAIL_WIDTH = 80
"""Image motion compares thumbnails this wide: coarse enough to ignore noise, JPEG artefacts and exposure."""


@dataclass
class KeyframeSelectorConfig:
    """When a frame is worth keeping.

    ``blur_threshold`` is the minimum variance of the Laplacian of a 320-px-wide grayscale thumbnail.
    Measured on the bundled Kinect frames: sharp frames score 140-1200, a Gaussian blur of sigma
    1.5 px 40-200, sigma 3 px 11-52, a 21-px motion streak 20-560; 30 rejects clearly blurred frames.
    With poses known (this frame and the reference), a frame is new enough when the camera moved
    ``min_translation`` metres or turned ``min_rotation_deg`` degrees since the last keyframe.
    Without poses, :func:`image_motion` must reach ``min_image_motion`` (0.08 is roughly a sideways
    shift of 3 % of the image width). ``min_keyframes``/``max_keyframes`` bound a reconstruction.
    """

    blur_threshold: float = 30.0
    min_translation: float = 0.15
    min_rotation_deg: float = 10.0
    min_image_motion: float = 0.08
    min_keyframes: int = 3
    max_keyframes: int = 5

    def __post_init__(self) -> None:
        for name in ("blur_threshold", "min_translation", "min_rotation_deg", "min_image_motion"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 1 <= self.min_keyframes <= self.max_keyframes:
            raise ValueError(
                f"need 1 <= min_keyframes <= max_keyframes, got {self.min_keyframes} and {self.max_keyframes}"
            )


@dataclass
class SelectionDecision:
    """Why a frame was or was not kept; ``motion`` is the image-motion score when a reference was given.

    ``translation_m`` and ``rotation_deg`` are filled when both this frame and the reference have poses
    (and then they, not ``motion``, decided).
    """

    accepted: bool
    reason: str
    sharpness: float
    motion: float | None
    translation_m: float | None = None
    rotation_deg: float | None = None


def _gray_thumbnail(image: np.ndarray, width: int) -> np.ndarray:
    """Grayscale float32 thumbnail ``width`` pixels wide (never upscaled); INTER_AREA averages cheaply."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 3:
        pass
    elif array.ndim != 2:
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) grayscale, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError("image is empty")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"image must be numeric, got {array.dtype}")
        array = np.clip(np.nan_to_num(array.astype(np.float32)), 0, 255).astype(np.uint8)
    height, full_width = array.shape[:2]
    if full_width > width:
        size = (width, max(1, round(height * width / full_width)))
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)
    return array.astype(np.float32)


def _sharpness_of_thumbnail(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def _motion_signature(gray: np.ndarray) -> np.ndarray:
    """Blurred, zero-mean, unit-variance small thumbnail: what :func:`image_motion` correlates."""
    small = _gray_thumbnail(gray, MOTION_THUMBNAIL_WIDTH)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    small -= small.mean()
    std = float(small.std())
    return small / std if std > 1e-6 else small


def _motion_between(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    if sig_a.shape != sig_b.shape:
        sig_b = cv2.resize(sig_b, (sig_a.shape[1], sig_a.shape[0]), interpolation=cv2.INTER_AREA)
    correlation = float((sig_a * sig_b).mean())
    return float(np.clip(1.0 - correlation, 0.0, 1.0))


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of a 320-px-wide grayscale thumbnail: low means blurred or featureless."""
    return _sharpness_of_thumbnail(_gray_thumbnail(image, SHARPNESS_THUMBNAIL_WIDTH))


def image_motion(a: np.ndarray, b: np.ndarray) -> float:
    """How different two views look, 0 (same) .. 1 (unrelated): one minus the normalised cross-correlation.

    Both images are reduced to blurred 80-px grayscale thumbnails with zero mean and unit variance,
    so exposure changes and sensor noise barely count (< 1e-4) while any camera motion does: a
    sideways shift of 3 % of the width scores about 0.09, successive 7-Scenes frames 1.7 s apart 0.2-1.
    Images of different sizes are compared at the thumbnail size of ``a``.
    """
    return _motion_between(
        _motion_signature(_gray_thumbnail(a, SHARPNESS_THUMBNAIL_WIDTH)),
        _motion_signature(_gray_thumbnail(b, SHARPNESS_THUMBNAIL_WIDTH)),
    )


class KeyframeSelector:
    """Decides cheaply (about 0.5 ms for a 640x480 frame) whether a frame should become a keyframe.

    The tests run cheapest first: sharpness, then novelty against every reference keyframe (the
    buffer: a camera that comes back must not add the same view twice) by pose when both poses are
    known, else by image motion. The frame's thumbnail is made once; each reference's signature is
    cached, so a stream pays for one thumbnail per frame whatever the buffer holds.
    """

    def __init__(self, config: KeyframeSelectorConfig | None = None) -> None:
        self.config = config or KeyframeSelectorConfig()
        self._signatures: dict[int, tuple[Keyframe, np.ndarray]] = {}

    def _reference_signature(self, reference: Keyframe) -> np.ndarray:
        cached = self._signatures.get(id(reference))
        if cached is None or cached[0] is not reference:
            cached = (reference, _motion_signature(_gray_thumbnail(reference.image, SHARPNESS_THUMBNAIL_WIDTH)))
            self._signatures[id(reference)] = cached
        return cached[1]

    def evaluate(
        self,
        image_rgb: np.ndarray,
        pose: np.ndarray | None = None,
        reference: Keyframe | Sequence[Keyframe] | None = None,
    ) -> SelectionDecision:
        """Accept or reject one frame against one reference keyframe or several (None: the first one).

        With several, the frame must be new with respect to each; the decision reports the closest.
        """
        config = self.config
        gray = _gray_thumbnail(image_rgb, SHARPNESS_THUMBNAIL_WIDTH)
        score = _sharpness_of_thumbnail(gray)
        if score < config.blur_threshold:
            return SelectionDecision(
                False, f"too blurred (sharpness {score:.1f} < {config.blur_threshold:g})", score, None
            )
        references = [reference] if isinstance(reference, Keyframe) else list(reference or [])
        if not references:
            return SelectionDecision(True, "sharp enough; first keyframe", score, None)
        if pose is not None:
            pose = np.asarray(pose, dtype=np.float64)
            if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
                raise ValueError("pose must be a finite 4x4 camera-to-map matrix")
        # Forget signatures of keyframes no longer referenced (the buffer was cleared or moved on).
        live = {id(r) for r in references}
        self._signatures = {key: value for key, value in self._signatures.items() if key in live}
        signature = _motion_signature(gray)
        decisions = [self._against(score, signature, pose, r) for r in references]
        rejected = [d for d in decisions if not d.accepted]
        if rejected:
            return rejected[0]
        return min(decisions, key=lambda d: d.translation_m if d.translation_m is not None else d.motion)

    def _against(
        self, score: float, signature: np.ndarray, pose: np.ndarray | None, reference: Keyframe
    ) -> SelectionDecision:
        config = self.config
        motion = _motion_between(signature, self._reference_signature(reference))
        if pose is not None and reference.pose is not None:
            translation, rotation = pose_distance(reference.pose, pose)
            moved = translation >= config.min_translation or rotation >= config.min_rotation_deg
            summary = (
                f"moved {translation:.3f} m / turned {rotation:.1f} deg since a buffered keyframe "
                f"(need {config.min_translation:g} m or {config.min_rotation_deg:g} deg)"
            )
            reason = ("new viewpoint: " if moved else "too close to a buffered keyframe: ") + summary
            return SelectionDecision(moved, reason, score, motion, translation, rotation)
        moved = motion >= config.min_image_motion
        summary = f"image motion {motion:.3f} since a buffered keyframe (need {config.min_image_motion:g})"
        reason = ("new view: " if moved else "too similar to a buffered keyframe: ") + summary
        return SelectionDecision(moved, reason, score, motion)


# --- keyframe buffer ----------------------------------------------------------------------------


class KeyframeBufferFullError(RuntimeError):
    """Raised by :meth:`KeyframeBuffer.add` on a full buffer: reconstruct or clear it first."""


class KeyframeBuffer:
    """A bounded, ordered list of keyframes.

    It never drops a keyframe silently: when full, :meth:`add` raises :class:`KeyframeBufferFullError`
    and the caller decides (reconstruct then :meth:`clear`, or reject the frame; check :attr:`is_full`).
    Not thread-safe: the node guards it with its own lock.
    """

    def __init__(self, max_keyframes: int = 5) -> None:
        if int(max_keyframes) < 1:
            raise ValueError(f"max_keyframes must be >= 1, got {max_keyframes}")
        self.max_keyframes = int(max_keyframes)
        self._keyframes: list[Keyframe] = []

    def add(self, keyframe: Keyframe) -> None:
        if not isinstance(keyframe, Keyframe):
            raise TypeError(f"expected a Keyframe, got {type(keyframe).__name__}")
        if self.is_full:
            raise KeyframeBufferFullError(
                f"keyframe buffer is full ({self.max_keyframes} keyframes): reconstruct or clear it first"
            )
        self._keyframes.append(keyframe)

    def clear(self) -> None:
        self._keyframes.clear()

    def __len__(self) -> int:
        return len(self._keyframes)

    def __iter__(self) -> Iterator[Keyframe]:
        return iter(list(self._keyframes))

    @property
    def keyframes(self) -> list[Keyframe]:
        """A copy: changing it does not change the buffer."""
        return list(self._keyframes)

    @property
    def is_full(self) -> bool:
        return len(self._keyframes) >= self.max_keyframes

    @property
    def last(self) -> Keyframe | None:
        return self._keyframes[-1] if self._keyframes else None
