"""The keyframe database: every keyframe's features, cloud and place descriptor (closures and
relocalisation), and its colour and depth kept compressed (map rebuilds after a closure), within a
memory budget.

Place recognition is a cosine between 40x30 blurred thumbnails, computed as one matrix product: at
thousands of keyframes it is microseconds, where faiss adds nothing (docs/slam.md, measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from showroom_ros.slam.frames import SlamFrame

JPEG_QUALITY = 90


@dataclass
class KeyframeRecord:
    key: int
    frame: SlamFrame  # without its full-size gray and depth (see compact)
    colour_jpeg: bytes | None  # the colour image at the tracking resolution, for map rebuilds
    depth_png: bytes | None  # depth on the same grid, uint16 millimetres (0 = none)

    @property
    def nbytes(self) -> int:
        f = self.frame
        kept = f.keypoints.nbytes + f.descriptors.nbytes + f.points.nbytes + f.descriptor.nbytes
        return kept + 48 * f.cloud.size() + len(self.colour_jpeg or b"") + len(self.depth_png or b"")

    def images(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(rgb uint8, depth float32 metres with NaN) on the tracking grid, or None if not kept."""
        if self.colour_jpeg is None or self.depth_png is None:
            return None
        bgr = cv2.imdecode(np.frombuffer(self.colour_jpeg, np.uint8), cv2.IMREAD_COLOR)
        depth = cv2.imdecode(np.frombuffer(self.depth_png, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000
        depth[depth <= 0] = np.nan
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth


def encode_images(rgb: np.ndarray, depth: np.ndarray) -> tuple[bytes, bytes]:
    ok_c, colour = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    millimetres = np.where(np.isfinite(depth), np.clip(depth * 1000, 0, 65535), 0).astype(np.uint16)
    ok_d, depth_png = cv2.imencode(".png", millimetres)
    if not (ok_c and ok_d):
        raise ValueError("could not encode a keyframe's images")
    return colour.tobytes(), depth_png.tobytes()


def compact(frame: SlamFrame) -> SlamFrame:
    """The frame as a keyframe keeps it: no full-size gray or depth (kept compressed in the record)."""
    return SlamFrame(
        stamp_ns=frame.stamp_ns,
        gray=np.zeros((0, 0), np.uint8),
        depth=np.zeros((0, 0), np.float32),
        K=frame.K,
        keypoints=frame.keypoints,
        descriptors=frame.descriptors,
        points=frame.points,
        cloud=frame.cloud,
        tree=frame.tree,
        descriptor=frame.descriptor,
        valid_depth=frame.valid_depth,
    )


class KeyframeDatabase:
    """Keyframes by key, with place recognition over their descriptors."""

    def __init__(self, memory_budget_bytes: int) -> None:
        self.memory_budget_bytes = memory_budget_bytes
        self.records: dict[int, KeyframeRecord] = {}
        self._keys: list[int] = []
        self._descriptors = np.zeros((0, 0), np.float32)
        self.nbytes = 0
        self.images_dropped = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int) -> KeyframeRecord:
        return self.records[key]

    def add(self, record: KeyframeRecord) -> None:
        self.records[record.key] = record
        self._keys.append(record.key)
        row = record.frame.descriptor[None, :].astype(np.float32)
        self._descriptors = row if self._descriptors.size == 0 else np.vstack([self._descriptors, row])
        self.nbytes += record.nbytes
        # Over budget: the oldest keyframes' images go first (they still close loops and relocalise;
        # a rebuild then keeps their part of the map from the volume as it is).
        for key in self._keys:
            if self.nbytes <= self.memory_budget_bytes:
                break
            old = self.records[key]
            if old.colour_jpeg is not None and key != record.key:
                self.nbytes -= len(old.colour_jpeg) + len(old.depth_png or b"")
                old.colour_jpeg = old.depth_png = None
                self.images_dropped += 1

    def similar(self, descriptor: np.ndarray, count: int, exclude: set[int] | None = None) -> list[tuple[int, float]]:
        """The ``count`` keyframes whose place descriptor is nearest (cosine), best first."""
        if not self._keys:
            return []
        scores = self._descriptors @ descriptor.astype(np.float32)
        order = np.argsort(-scores)
        found = []
        for index in order:
            key = self._keys[int(index)]
            if exclude and key in exclude:
                continue
            found.append((key, float(scores[index])))
            if len(found) == count:
                break
        return found

    def keys(self) -> list[int]:
        return list(self._keys)
