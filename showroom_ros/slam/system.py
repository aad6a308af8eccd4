"""RGB-D SLAM: track each frame against its reference keyframe, add keyframes to the pose graph, close
loops, relocalise when lost. One call per frame (:meth:`RgbdSlam.track`), no threads of its own: the
node runs it on its tracking thread, the benchmark and the CLI in a loop.

States (``TrackState``):
  initialising  no keyframe yet (the first frame with texture and depth starts the map);
  tracking      the frame was placed against the reference keyframe;
  lost          it could not be (covered lens, too fast, a blank wall, another place): the frame gets no
                pose, so nothing is integrated and the map is never corrupted;
  relocalised   a lost camera was found again in the keyframe database, in the same map frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.frames import FrameBuilder, FrameError, SlamFrame
from showroom_ros.slam.gravity import initial_pose
from showroom_ros.slam.keyframes import KeyframeDatabase, KeyframeRecord, compact, encode_images
from showroom_ros.slam.pose_graph import PoseGraph
from showroom_ros.slam.registration import Registration, register

TRACK_STATES = ("initialising", "tracking", "lost", "relocalised")
MIN_FEATURES = 100  # fewer ORB keypoints: a covered lens or a blank wall
GEOMETRY_ONLY_KEYFRAME_FITNESS = 0.8
RECENT_LOSS_NS = 1_000_000_000  # lost for less than this: first try to go on from the last pose


def _angle_deg(T: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(T[:3, :3]) - 1) / 2, -1.0, 1.0))))


@dataclass
class TrackResult:
    """What one frame did: its pose (None unless tracked), and what changed in the graph."""

    state: str
    pose: np.ndarray | None
    reason: str = ""
    new_keyframe: int | None = None
    closures: list[tuple[int, int]] = field(default_factory=list)
    optimised: bool = False  # keyframe poses moved: the trajectory (and maybe the map) changed
    tracking_ms: float = 0.0


@dataclass
class SlamCounters:
    frames: int = 0
    tracked: int = 0
    lost_frames: int = 0
    relocalisations: int = 0
    closures_accepted: int = 0
    closures_rejected: int = 0
    last_optimisation_ms: float = 0.0


class RgbdSlam:
    """Poses of one RGB-D camera in a gravity-aligned map frame (z up)."""

    def __init__(self, config: SlamConfig | None = None) -> None:
        self.config = config or SlamConfig()
        self.builder = FrameBuilder(self.config)
        self.graph = PoseGraph(self.config)
        self.database = KeyframeDatabase(int(self.config.keyframe_memory_mb * 2**20))
        self.counters = SlamCounters()
        self.state = "initialising"
        self.reason = ""
        self.localization_only = False
        self.keyframe_stamps: dict[int, int] = {}
        self.mapped_poses: dict[int, np.ndarray] = {}  # each keyframe's pose when the map last took it
        self._reference: int | None = None
        self._last_pose: np.ndarray | None = None
        self._last_stamp: int | None = None
        self._velocity = np.eye(4)  # last frame-to-frame motion, in the camera frame
        self._next_key = 0

    # --- the one call per frame ------------------------------------------------------------------
    def track(
        self,
        stamp_ns: int,
        image: np.ndarray,
        depth_m: np.ndarray,
        intrinsics: CameraIntrinsics,
        depth_intrinsics: CameraIntrinsics | None = None,
    ) -> TrackResult:
        start = time.perf_counter()
        self.counters.frames += 1
        try:
            frame = self.builder.build(stamp_ns, image, depth_m, intrinsics, depth_intrinsics)
            result = self._track(frame, image)
        except FrameError as error:
            result = self._lose(f"unusable frame: {error}")
        result.tracking_ms = (time.perf_counter() - start) * 1e3
        if result.pose is not None:
            self.counters.tracked += 1
        return result

    def _usable(self, frame: SlamFrame) -> str:
        if frame.valid_depth < self.config.min_valid_depth:
            return f"only {frame.valid_depth:.0%} of the image has depth (a covered lens or too close)"
        if len(frame.keypoints) < MIN_FEATURES:
            return f"{len(frame.keypoints)} features (a covered lens, darkness or a blank wall)"
        return ""

    def _track(self, frame: SlamFrame, image: np.ndarray) -> TrackResult:
        problem = self._usable(frame)
        if problem:
            return self._lose(problem)
        if self._reference is None and len(self.graph) == 0:
            pose = initial_pose(frame, self.config)
            key = self._add_keyframe(frame, image, pose)
            self.graph.optimise()
            self.state = "tracking"
            self._accept(frame, pose, key)
            return TrackResult("tracking", pose, new_keyframe=key)
        if self.state in ("lost", "initialising") or self._reference is None:
            return self._relocalise(frame, image)
        reference = self.database[self._reference].frame
        reference_pose = self.graph.pose(self._reference)
        prior = np.linalg.inv(reference_pose) @ self._last_pose @ self._velocity
        registration = register(frame, reference, self.config, prior_T_target_source=prior, geometry_only=True)
        if not registration.accepted:
            return self._lose(f"tracking failed: {registration.reason}")
        pose = reference_pose @ registration.T_target_source
        too_fast = self._too_fast(frame.stamp_ns, pose)
        if too_fast:
            return self._lose(too_fast)
        self.state = "tracking"
        result = TrackResult("tracking", pose)
        if self._wants_keyframe(registration):
            self._new_keyframe(frame, image, pose, registration, result)
        self._accept(frame, result.pose, None)
        return result

    # --- pieces ------------------------------------------------------------------------------------
    def _too_fast(self, stamp_ns: int, pose: np.ndarray) -> str:
        if self._last_pose is None or self._last_stamp is None:
            return ""
        dt = max((stamp_ns - self._last_stamp) / 1e9, 1e-3)
        step = np.linalg.inv(self._last_pose) @ pose
        speed = float(np.linalg.norm(step[:3, 3])) / dt
        turn = _angle_deg(step) / dt
        if speed > self.config.max_speed or turn > self.config.max_angular_speed_deg:
            return f"moved too fast ({speed:.2f} m/s, {turn:.0f} deg/s)"
        return ""

    def _wants_keyframe(self, registration: Registration) -> bool:
        c = self.config
        T = registration.T_target_source
        # Tracked by depth alone (too few feature matches): a new reference sooner, before the overlap
        # with the old one falls below what depth alone may track.
        geometry_only = registration.pnp_inliers < c.min_pnp_inliers
        return (
            float(np.linalg.norm(T[:3, 3])) > c.keyframe_translation
            or _angle_deg(T) > c.keyframe_rotation_deg
            or registration.fitness < (GEOMETRY_ONLY_KEYFRAME_FITNESS if geometry_only else c.keyframe_min_fitness)
        )

    def _accept(self, frame: SlamFrame, pose: np.ndarray, key: int | None) -> None:
        if self._last_pose is not None and self._last_stamp is not None and frame.stamp_ns > self._last_stamp:
            self._velocity = np.linalg.inv(self._last_pose) @ pose
        self._last_pose = pose
        self._last_stamp = frame.stamp_ns
        if key is not None:
            self._reference = key

    def _lose(self, reason: str) -> TrackResult:
        if self.state != "initialising":
            self.state = "lost"
        self.reason = reason
        self.counters.lost_frames += 1
        self._velocity = np.eye(4)
        return TrackResult(self.state, None, reason)

    def _add_keyframe(self, frame: SlamFrame, image: np.ndarray, pose: np.ndarray) -> int:
        key = self._next_key
        self._next_key += 1
        rgb = image if image.shape[:2] == frame.depth.shape else _resized(image, frame.depth.shape)
        colour, depth = encode_images(rgb, frame.depth)
        self.database.add(KeyframeRecord(key, compact(frame), colour, depth))
        self.keyframe_stamps[key] = frame.stamp_ns
        self.mapped_poses[key] = pose.copy()
        self.graph.add_node(key, pose)
        return key

    def _new_keyframe(
        self, frame: SlamFrame, image: np.ndarray, pose: np.ndarray, registration: Registration, result: TrackResult
    ) -> None:
        if self.localization_only:
            self._switch_reference(pose)
            return
        reference = self._reference
        assert reference is not None
        key = self._add_keyframe(frame, image, pose)
        self.graph.add_edge(reference, key, registration.T_target_source, "odometry")
        stored = self.database[key].frame
        recent = [k for k in reversed(self.database.keys()) if k not in (key, reference)][: self.config.local_edges]
        for other in recent:
            self._try_edge(stored, key, other, "local")
        closures = self._close_loops(stored, key, pose)
        self.graph.optimise(extra_iterations=2 if closures else 0)
        self.counters.last_optimisation_ms = self.graph.last_optimisation_ms
        result.new_keyframe = key
        result.closures = closures
        result.optimised = True
        result.pose = self.graph.pose(key)
        self._reference = key

    def _switch_reference(self, pose: np.ndarray) -> None:
        """Localization only: the nearest keyframe of the loaded map becomes the reference."""
        poses = self.graph.poses()
        nearest = min(poses, key=lambda k: float(np.linalg.norm(poses[k][:3, 3] - pose[:3, 3])))
        self._reference = nearest

    def _try_edge(self, frame: SlamFrame, key: int, other: int, kind: str) -> Registration | None:
        prior = np.linalg.inv(self.graph.pose(other)) @ self.graph.pose(key)
        c = self.config
        verified = register(
            frame,
            self.database[other].frame,
            c,
            prior_T_target_source=prior,
            min_inliers=c.closure_min_inliers if kind == "closure" else c.min_pnp_inliers,
            min_fitness=c.closure_min_fitness if kind == "closure" else c.min_fitness,
            max_rmse=c.closure_max_rmse,
        )
        if not verified.accepted:
            return None
        self.graph.add_edge(other, key, verified.T_target_source, kind)
        return verified

    def closure_candidates(self, frame: SlamFrame, key: int, pose: np.ndarray) -> list[int]:
        """Old keyframes near the current estimate (proximity), then the most similar views (appearance)."""
        c = self.config
        keys = self.database.keys()
        recent = set(keys[-(c.recent_excluded + 1) :])
        near = []
        for other in keys:
            if other in recent:
                continue
            other_pose = self.graph.pose(other)
            distance = float(np.linalg.norm(other_pose[:3, 3] - pose[:3, 3]))
            if distance < c.proximity_radius and _angle_deg(np.linalg.inv(other_pose) @ pose) < c.proximity_angle_deg:
                near.append((distance, other))
        candidates = [other for _, other in sorted(near)[: c.proximity_candidates]]
        for other, score in self.database.similar(frame.descriptor, c.appearance_candidates, exclude=recent):
            if score >= c.min_appearance_score and other not in candidates:
                candidates.append(other)
        return candidates

    def _close_loops(self, frame: SlamFrame, key: int, pose: np.ndarray) -> list[tuple[int, int]]:
        closures = []
        for other in self.closure_candidates(frame, key, pose):
            if self._try_edge(frame, key, other, "closure") is None:
                self.counters.closures_rejected += 1
            else:
                self.counters.closures_accepted += 1
                closures.append((other, key))
        return closures

    def _relocalise(self, frame: SlamFrame, image: np.ndarray) -> TrackResult:
        """Lost moments ago: the last reference from the last pose, as tracking would (a low-texture
        stretch that broke tracking for a frame). Then the last reference and the most similar keyframes
        without a prior, each verified as a closure."""
        c = self.config
        recent = (
            self._reference is not None
            and self._last_pose is not None
            and self._last_stamp is not None
            and 0 < frame.stamp_ns - self._last_stamp <= RECENT_LOSS_NS
        )
        if recent:
            reference_pose = self.graph.pose(self._reference)
            prior = np.linalg.inv(reference_pose) @ self._last_pose
            verified = register(
                frame, self.database[self._reference].frame, c, prior_T_target_source=prior, geometry_only=True
            )
            pose = reference_pose @ verified.T_target_source
            if verified.accepted and not self._too_fast(frame.stamp_ns, pose):
                return self._found(frame, pose, self._reference)
        candidates = [] if self._reference is None else [self._reference]
        for other, _score in self.database.similar(frame.descriptor, 4):
            if other not in candidates:
                candidates.append(other)
        for other in candidates:
            verified = register(
                frame,
                self.database[other].frame,
                c,
                min_inliers=c.closure_min_inliers,
                min_fitness=c.closure_min_fitness,
                max_rmse=c.closure_max_rmse,
            )
            if verified.accepted:
                return self._found(frame, self.graph.pose(other) @ verified.T_target_source, other)
        cause = self.reason or "not relocalised"
        result = self._lose(cause)
        result.reason = f"not relocalised ({len(candidates)} keyframes tried); {cause}"
        return result

    def _found(self, frame: SlamFrame, pose: np.ndarray, keyframe: int) -> TrackResult:
        self.state = "relocalised"
        self.reason = f"relocalised against keyframe {keyframe}"
        self.counters.relocalisations += 1
        self._reference = keyframe
        self._last_pose = None
        self._accept(frame, pose, None)
        return TrackResult("relocalised", pose, self.reason)

    def await_relocalisation(self, reason: str) -> None:
        """A loaded map: the next frames must relocalise in it before any is tracked."""
        self.state, self.reason = "lost", reason
        self._reference, self._last_pose, self._last_stamp = None, None, None
        self._next_key = max(self.database.keys(), default=-1) + 1

    # --- what the node reads -------------------------------------------------------------------------
    def trajectory(self) -> list[tuple[int, np.ndarray]]:
        """(stamp, camera-to-map pose) of every keyframe, in order."""
        poses = self.graph.poses()
        return [(self.keyframe_stamps[k], poses[k]) for k in sorted(poses)]


def _resized(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
