"""Turns streams of colour, depth, intrinsics and poses into keyframes, without ROS.

A camera driver publishes at 30 Hz, but a keyframe is needed every few seconds. So frames are
throttled before they are even decoded, blurry frames are rejected first (cheapest test),
colour and depth are paired by stamp, and a frame whose CameraInfo, depth or pose has not
arrived yet waits a bounded time (``wait_timeout_ns``) instead of being dropped or queued forever:
drivers publish an image and its CameraInfo in either order, and this is the one place that waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from showroom_ros.capture.keyframes import Keyframe, KeyframeBuffer, KeyframeSelector, KeyframeSelectorConfig
from showroom_ros.capture.newest_wins import NewestWins
from showroom_ros.geometry.camera import CameraIntrinsics

PoseLookup = Callable[[int, int, str], np.ndarray | None]
"""(camera index, stamp in ns, the image's frame_id) -> camera-to-map pose, or None if unknown yet."""


@dataclass
class CollectorConfig:
    num_cameras: int = 1
    use_depth: bool = False
    separate_depth_camera: bool = False  # depth has its own CameraInfo: wait for it before using depth
    require_pose: bool = False
    require_intrinsics: bool = False  # a CameraInfo topic is configured: wait for it before using a frame
    evaluation_period_ns: int = 200_000_000  # consider at most 5 frames/s per camera
    sync_slop_ns: int = 50_000_000  # colour/depth stamps closer than this are a pair
    wait_timeout_ns: int = 1_000_000_000  # how long a frame may wait for its CameraInfo, depth or pose
    max_pending: int = 8  # frames waiting per camera; the oldest is rejected beyond this
    depth_history: int = 30
    sink_rejected: bool = False  # blurred frames still go to map_sink (SLAM must see a covered lens to say "lost")
    selector: KeyframeSelectorConfig = field(default_factory=KeyframeSelectorConfig)


@dataclass
class Outcome:
    """What happened to one frame: ``accepted``, ``rejected`` or ``waiting``."""

    kind: str
    camera: int
    stamp_ns: int
    reason: str = ""


@dataclass
class _Candidate:
    camera: int
    stamp_ns: int
    frame_id: str
    image: np.ndarray
    received_ns: int
    rejection: str = ""  # not for the window buffer (blurred), but still for map_sink (sink_rejected)


class KeyframeCollector:
    """Feeds a bounded :class:`KeyframeBuffer`; every method is O(1) in the stream length."""

    def __init__(
        self,
        config: CollectorConfig,
        buffer: KeyframeBuffer,
        pose_lookup: PoseLookup,
        map_sink: Callable[[Keyframe], None] | None = None,
    ) -> None:
        """``map_sink`` receives every complete frame (image, CameraInfo, depth, pose all there), before
        and whatever the keyframe selection decides: a robot map integrates frames the window buffer does
        not want (too close to a buffered keyframe, or the buffer full)."""
        if config.num_cameras < 1:
            raise ValueError("at least one camera is needed")
        self.config = config
        self.buffer = buffer
        self.selector = KeyframeSelector(config.selector)
        self._pose_lookup = pose_lookup
        self.map_sink = map_sink
        self._intrinsics: list[CameraIntrinsics | None] = [None] * config.num_cameras
        self._depth_intrinsics: list[CameraIntrinsics | None] = [None] * config.num_cameras
        self._depths: list[deque[tuple[int, np.ndarray | Callable[[], np.ndarray]]]] = [
            deque(maxlen=config.depth_history) for _ in range(config.num_cameras)
        ]
        self._pending: list[NewestWins[_Candidate]] = self._new_pending()
        self._last_evaluated_ns: list[int | None] = [None] * config.num_cameras
        self._due_ns: list[int | None] = [None] * config.num_cameras  # when the throttle's next frame is due
        self._dropped: list[Outcome] = []

    # --- inputs -------------------------------------------------------------------------
    def set_intrinsics(
        self, camera: int, intrinsics: CameraIntrinsics, depth: bool = False, now_ns: int | None = None
    ) -> list[Outcome]:
        """Store a camera's intrinsics; with ``now_ns``, complete the frames that waited for them."""
        self._check_camera(camera)
        (self._depth_intrinsics if depth else self._intrinsics)[camera] = intrinsics
        return [] if now_ns is None else self.poll(now_ns)

    def intrinsics(self, camera: int) -> CameraIntrinsics | None:
        return self._intrinsics[camera]

    def should_evaluate(self, camera: int, now_ns: int) -> bool:
        """Cheap throttle, called before a frame is decoded at all. It keeps a schedule (one frame per
        period on average) and takes a frame up to a quarter period early, so a camera that publishes at
        the evaluation rate with ordinary jitter has every frame taken, not about half of them."""
        self._check_camera(camera)
        last, due = self._last_evaluated_ns[camera], self._due_ns[camera]
        if last is None or due is None or now_ns < last:
            return True
        return now_ns >= due - self.config.evaluation_period_ns // 4

    def add_depth(
        self, camera: int, stamp_ns: int, depth_m: np.ndarray | Callable[[], np.ndarray], now_ns: int
    ) -> list[Outcome]:
        """Keep a depth image (metres) for pairing by stamp; or a callable that decodes it, called only
        when a colour frame pairs with it (a 30 Hz stream is then decoded at the evaluation rate)."""
        self._check_camera(camera)
        self._depths[camera].append((int(stamp_ns), depth_m))
        return self.poll(now_ns)

    def add_image(self, camera: int, stamp_ns: int, image: np.ndarray, frame_id: str, now_ns: int) -> Outcome:
        """Consider one decoded colour frame (call only when :meth:`should_evaluate` said so)."""
        self._check_camera(camera)
        self._last_evaluated_ns[camera] = now_ns
        period, due = self.config.evaluation_period_ns, self._due_ns[camera]
        # On schedule: the next frame is due one period after this one was (early frames do not drift it);
        # after a gap, one period from now.
        self._due_ns[camera] = due + period if due is not None and abs(now_ns - due) < period else now_ns + period
        if self.buffer.is_full and self.map_sink is None:  # with a map, the frame is still wanted there
            return Outcome("rejected", camera, stamp_ns, "keyframe buffer is full (waiting for reconstruction)")
        decision = self.selector.evaluate(image)
        if not decision.accepted and not (self.config.sink_rejected and self.map_sink is not None):
            return Outcome("rejected", camera, stamp_ns, decision.reason)
        rejection = "" if decision.accepted else decision.reason
        candidate = _Candidate(camera, int(stamp_ns), frame_id, image, now_ns, rejection)
        gave_way = self._pending[camera].put(candidate)
        if gave_way is not None:  # reported through the next poll's outcomes
            reason = f"too many frames waiting (max {self.config.max_pending})"
            self._dropped.append(Outcome("rejected", camera, gave_way.stamp_ns, reason))
        return self._try_complete(candidate, now_ns)

    def poll(self, now_ns: int) -> list[Outcome]:
        """Retry frames waiting for CameraInfo, depth or a pose; expire those that waited too long."""
        outcomes, self._dropped = self._dropped, []
        for queue in self._pending:
            outcomes.extend(self._try_complete(candidate, now_ns) for candidate in queue)
        return outcomes

    def pending(self) -> int:
        """How many frames wait for something."""
        return sum(len(queue) for queue in self._pending)

    def _new_pending(self) -> list[NewestWins[_Candidate]]:
        return [NewestWins(self.config.max_pending) for _ in range(self.config.num_cameras)]

    def clear(self) -> None:
        self.buffer.clear()
        self._pending = self._new_pending()
        self._dropped = []
        self._last_evaluated_ns = [None] * self.config.num_cameras
        self._due_ns = [None] * self.config.num_cameras

    # --- internals ----------------------------------------------------------------------
    def _check_camera(self, camera: int) -> None:
        if not 0 <= camera < self.config.num_cameras:
            raise ValueError(f"camera index {camera} out of range (0..{self.config.num_cameras - 1})")

    def _decoded(self, camera: int, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """Decode a lazily kept depth image once, replacing it in the history by its array."""
        depth = np.asarray(decode())
        history = self._depths[camera]
        for index, (stamp, kept) in enumerate(history):
            if kept is decode:
                history[index] = (stamp, depth)
                break
        return depth

    def _forget_depth(self, camera: int, kept: object) -> None:
        history = self._depths[camera]
        self._depths[camera] = type(history)((item for item in history if item[1] is not kept), history.maxlen)

    def _matching_depth(
        self, camera: int, stamp_ns: int, may_wait: bool = False
    ) -> np.ndarray | Callable[[], np.ndarray] | None:
        """The depth image nearest in stamp (within ``sync_slop``). With ``may_wait``, None while no depth
        at or after the colour stamp has arrived and the nearest is not exact: a colour frame that comes
        before its own depth would otherwise pair with the previous frame's depth (at a cut between views,
        another view's depth: a false surface in the map)."""
        best: tuple[int, np.ndarray | Callable[[], np.ndarray]] | None = None
        newest = None
        for depth_stamp, depth in self._depths[camera]:
            newest = depth_stamp if newest is None else max(newest, depth_stamp)
            gap = abs(depth_stamp - stamp_ns)
            if gap <= self.config.sync_slop_ns and (best is None or gap < best[0]):
                best = (gap, depth)
        if best is not None and best[0] > 0 and may_wait and (newest is None or newest < stamp_ns):
            return None  # its own depth may still come: wait (bounded by the caller)
        return None if best is None else best[1]

    def _try_complete(self, candidate: _Candidate, now_ns: int) -> Outcome:
        camera = candidate.camera
        missing: list[str] = []
        depth = None
        intrinsics = self._intrinsics[camera]
        if intrinsics is None and self.config.require_intrinsics:
            missing.append("CameraInfo")
        elif intrinsics is not None and (intrinsics.width, intrinsics.height) != (
            candidate.image.shape[1],
            candidate.image.shape[0],
        ):
            self._pending[camera].remove(candidate)
            return Outcome(
                "rejected",
                camera,
                candidate.stamp_ns,
                f"image is {candidate.image.shape[1]}x{candidate.image.shape[0]} but its CameraInfo says "
                f"{intrinsics.width}x{intrinsics.height}",
            )
        if self.config.use_depth:
            # Wait up to sync_slop (wall time) for a depth at or after the colour stamp before taking an older one.
            may_wait = now_ns - candidate.received_ns < self.config.sync_slop_ns
            depth = self._matching_depth(camera, candidate.stamp_ns, may_wait)
            while callable(depth):
                try:
                    depth = self._decoded(camera, depth)
                except Exception as error:  # the decoder validates the message: any failure is bad input
                    # That depth image is dropped (and reported at the next poll); the frame may pair with another.
                    self._forget_depth(camera, depth)
                    self._dropped.append(Outcome("rejected", camera, candidate.stamp_ns, f"bad depth image: {error}"))
                    depth = self._matching_depth(camera, candidate.stamp_ns, may_wait)
            if depth is None:
                missing.append(f"depth image within {self.config.sync_slop_ns / 1e6:.0f} ms of its stamp")
            if self.config.separate_depth_camera and self._depth_intrinsics[camera] is None:
                missing.append("depth CameraInfo")
        pose = self._pose_lookup(camera, candidate.stamp_ns, candidate.frame_id)
        if pose is None and self.config.require_pose:
            missing.append("camera pose at its stamp")
        if missing:
            if now_ns - candidate.received_ns > self.config.wait_timeout_ns:
                self._pending[camera].remove(candidate)
                return Outcome("rejected", camera, candidate.stamp_ns, "no " + " and no ".join(missing))
            return Outcome("waiting", camera, candidate.stamp_ns, "waiting for " + " and ".join(missing))
        self._pending[camera].remove(candidate)
        keyframe = Keyframe(
            image=candidate.image,
            stamp_ns=candidate.stamp_ns,
            intrinsics=self._intrinsics[camera],
            depth=depth,
            depth_intrinsics=self._depth_intrinsics[camera],
            pose=pose,
            camera_id=camera,
            frame_id=candidate.frame_id,
        )
        if self.map_sink is not None:
            self.map_sink(keyframe)  # the same object the buffer may take: the map fuses it once either way
        if candidate.rejection:
            return Outcome("rejected", camera, candidate.stamp_ns, candidate.rejection)
        if self.buffer.is_full:
            return Outcome("rejected", camera, candidate.stamp_ns, "keyframe buffer is full")
        # Against every buffered keyframe: a camera that comes back must not add the same view twice.
        decision = self.selector.evaluate(candidate.image, pose=pose, reference=self.buffer.keyframes)
        if not decision.accepted:
            return Outcome("rejected", camera, candidate.stamp_ns, decision.reason)
        self.buffer.add(keyframe)
        return Outcome("accepted", camera, candidate.stamp_ns, f"keyframe {len(self.buffer)}")
