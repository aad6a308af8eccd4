"""KeyframeCollector: throttling, blur, colour/depth pairing by stamp, waiting for poses, bounds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from showroom_ros.capture.collector import CollectorConfig, KeyframeCollector
from showroom_ros.capture.keyframes import KeyframeBuffer, KeyframeSelectorConfig
from showroom_ros.geometry.camera import CameraIntrinsics

MS = 1_000_000


def _textured(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return cv2.resize(small, (640, 480), interpolation=cv2.INTER_NEAREST)


def _pose(x: float) -> np.ndarray:
    pose = np.eye(4)
    pose[0, 3] = x
    return pose


class Poses:
    """A pose source keyed by stamp, as the node's topic/TF lookups are."""

    def __init__(self):
        self.by_stamp: dict[int, np.ndarray] = {}

    def __call__(self, camera: int, stamp_ns: int, frame_id: str):
        return self.by_stamp.get(stamp_ns)


def _collector(poses=None, **config) -> KeyframeCollector:
    cfg = CollectorConfig(selector=KeyframeSelectorConfig(min_translation=0.15), **config)
    collector = KeyframeCollector(cfg, KeyframeBuffer(3), poses or (lambda *a: None))
    collector.set_intrinsics(0, CameraIntrinsics(525, 525, 320, 240, 640, 480))
    return collector


def test_throttle_decides_before_decoding():
    collector = _collector(evaluation_period_ns=200 * MS)
    assert collector.should_evaluate(0, 0)
    collector.add_image(0, 0, _textured(), "cam", now_ns=0)
    assert not collector.should_evaluate(0, 100 * MS)
    assert collector.should_evaluate(0, 200 * MS)


@pytest.mark.parametrize(("camera_hz", "jitter_ms"), [(5.0, 20.0), (5.0, 0.0), (30.0, 8.0), (15.0, 15.0), (4.0, 30.0)])
def test_throttle_takes_a_camera_at_the_rate_whole_and_a_faster_one_at_the_rate(camera_hz, jitter_ms):
    """200 ms period: a 5 Hz camera with jitter keeps every frame (a plain "200 ms since the last" test
    dropped about half); faster cameras average 5 Hz; slower ones keep every frame."""
    collector = _collector(evaluation_period_ns=200 * MS)
    rng = np.random.default_rng(int(camera_hz * 10 + jitter_ms))
    image = _textured()
    count, taken = 300, 0
    for i in range(count):
        now = int((i / camera_hz) * 1e9 + rng.uniform(-jitter_ms, jitter_ms) * MS) + 1000 * MS
        if collector.should_evaluate(0, now):
            collector.add_image(0, i, image, "cam", now_ns=now)
            taken += 1
    duration_s = count / camera_hz
    expected = min(count, duration_s * 5.0)
    assert abs(taken - expected) <= 0.03 * expected + 1, (taken, expected)


@pytest.mark.parametrize("sink_rejected", [False, True])
def test_a_blurred_frame_reaches_the_map_sink_only_when_asked(sink_rejected):
    """pose_source slam sets sink_rejected: tracking must see a covered lens to report it lost."""
    collector = _collector(sink_rejected=sink_rejected)
    sunk = []
    collector.map_sink = sunk.append
    outcome = collector.add_image(0, 1, np.zeros((480, 640, 3), np.uint8), "cam", now_ns=0)
    assert outcome.kind == "rejected" and "blur" in outcome.reason.lower()
    assert len(sunk) == int(sink_rejected) and len(collector.buffer) == 0
    assert collector.add_image(0, 2, _textured(), "cam", now_ns=300 * MS).kind == "accepted"
    assert len(sunk) == 1 + int(sink_rejected) and len(collector.buffer) == 1


def test_blurred_frame_is_rejected_and_sharp_frame_accepted():
    collector = _collector()
    blurred = cv2.GaussianBlur(_textured(), (0, 0), 8)
    outcome = collector.add_image(0, 1, blurred, "cam", now_ns=0)
    assert outcome.kind == "rejected" and "blur" in outcome.reason.lower()
    assert collector.add_image(0, 2, _textured(), "cam", now_ns=1).kind == "accepted"
    assert len(collector.buffer) == 1


def test_colour_waits_for_matching_depth_then_pairs():
    collector = _collector(use_depth=True, sync_slop_ns=20 * MS, wait_timeout_ns=500 * MS)
    depth = np.full((480, 640), 2.0, np.float32)
    collector.add_depth(0, 1000 * MS - 100 * MS, depth, now_ns=0)  # too far from the colour stamp
    waiting = collector.add_image(0, 1000 * MS, _textured(), "cam", now_ns=0)
    assert waiting.kind == "waiting" and "depth" in waiting.reason
    outcomes = collector.add_depth(0, 1000 * MS + 5 * MS, depth, now_ns=10 * MS)
    assert [o.kind for o in outcomes] == ["accepted"]
    keyframe = collector.buffer.last
    assert keyframe.depth is depth and keyframe.stamp_ns == 1000 * MS


def test_a_colour_frame_before_its_own_depth_waits_for_it_instead_of_taking_the_previous_one():
    """At a cut between views, the depth 33 ms earlier belongs to the previous view: pairing it made a
    false surface in the map. Its own depth, arriving next, wins; without one, the nearest within
    sync_slop is taken once sync_slop (wall time) has passed."""
    collector = _collector(use_depth=True, sync_slop_ns=50 * MS, wait_timeout_ns=500 * MS)
    previous, own = np.full((480, 640), 1.0, np.float32), np.full((480, 640), 3.0, np.float32)
    collector.add_depth(0, 967 * MS, previous, now_ns=0)
    assert collector.add_image(0, 1000 * MS, _textured(1), "cam", now_ns=1 * MS).kind == "waiting"
    assert [o.kind for o in collector.add_depth(0, 1000 * MS, own, now_ns=10 * MS)] == ["accepted"]
    assert collector.buffer.last.depth is own

    lonely = _collector(use_depth=True, sync_slop_ns=50 * MS, wait_timeout_ns=500 * MS)
    lonely.add_depth(0, 967 * MS, previous, now_ns=0)
    assert lonely.add_image(0, 1000 * MS, _textured(1), "cam", now_ns=0).kind == "waiting"
    assert [o.kind for o in lonely.poll(now_ns=60 * MS)] == ["accepted"]  # waited sync_slop: the nearest
    assert lonely.buffer.last.depth is previous


def test_frame_without_depth_or_pose_expires_with_a_reason():
    poses = Poses()
    collector = _collector(poses, use_depth=True, require_pose=True, wait_timeout_ns=300 * MS)
    assert collector.add_image(0, 5, _textured(), "cam", now_ns=0).kind == "waiting"
    assert collector.poll(now_ns=100 * MS)[0].kind == "waiting"
    expired = collector.poll(now_ns=400 * MS)
    assert expired[0].kind == "rejected"
    assert "no depth image" in expired[0].reason and "camera pose" in expired[0].reason
    assert collector.poll(now_ns=500 * MS) == [] and len(collector.buffer) == 0


def test_motion_is_required_between_keyframes_and_buffer_is_bounded():
    poses = Poses()
    collector = _collector(poses, require_pose=True)
    stamps_and_x = [(1, 0.0), (2, 0.05), (3, 0.3), (4, 0.6), (5, 0.9)]
    kinds = []
    for stamp, x in stamps_and_x:
        poses.by_stamp[stamp] = _pose(x)
        kinds.append(collector.add_image(0, stamp, _textured(stamp), "cam", now_ns=stamp).kind)
    assert kinds == ["accepted", "rejected", "accepted", "accepted", "rejected"]
    assert collector.buffer.is_full
    assert [k.pose[0, 3] for k in collector.buffer] == [0.0, 0.3, 0.6]
    collector.clear()
    assert len(collector.buffer) == 0


def test_every_complete_frame_reaches_the_map_sink_whatever_the_window_selection_says():
    """The robot map wants frames the window buffer refuses: too close to a buffered keyframe, or the
    buffer full. Blurred and incomplete frames never reach it."""
    poses, mapped = Poses(), []
    collector = _collector(poses, require_pose=True, use_depth=True, wait_timeout_ns=300 * MS)
    collector.map_sink = mapped.append
    depth = np.full((480, 640), 2.0, np.float32)
    stamps_and_x = [(1, 0.0), (2, 0.05), (3, 0.3), (4, 0.6), (5, 0.9), (6, 0.95)]
    kinds = []
    for stamp, x in stamps_and_x:
        poses.by_stamp[stamp] = _pose(x)
        collector.add_depth(0, stamp, depth, now_ns=stamp)
        kinds.append(collector.add_image(0, stamp, _textured(stamp), "cam", now_ns=stamp).kind)
    assert kinds == ["accepted", "rejected", "accepted", "accepted", "rejected", "rejected"]
    assert [k.stamp_ns for k in mapped] == [1, 2, 3, 4, 5, 6]
    assert mapped[0] is collector.buffer.keyframes[0]  # one object: fused once either way
    blurred = cv2.GaussianBlur(_textured(), (0, 0), 8)
    poses.by_stamp[7] = _pose(2.0)
    collector.add_depth(0, 7, depth, now_ns=7)
    collector.add_image(0, 7, blurred, "cam", now_ns=7)
    collector.add_image(0, 8, _textured(8), "cam", now_ns=8)  # no pose, no depth: waits, then expires
    collector.poll(now_ns=400 * MS)
    assert len(mapped) == 6


def test_camera_index_is_checked():
    collector = _collector()
    with pytest.raises(ValueError, match="camera index 3"):
        collector.should_evaluate(3, 0)


def test_a_view_already_in_the_buffer_is_not_added_twice():
    poses = Poses()
    collector = _collector(poses, require_pose=True)
    for stamp, x in [(1, 0.0), (2, 0.5), (3, 0.02)]:  # comes back next to the first keyframe
        poses.by_stamp[stamp] = _pose(x)
        outcome = collector.add_image(0, stamp, _textured(stamp), "cam", now_ns=stamp)
    assert outcome.kind == "rejected" and "too close" in outcome.reason
    assert len(collector.buffer) == 2


def test_depth_with_its_own_camera_waits_for_that_camera_info():
    collector = _collector(use_depth=True, separate_depth_camera=True, wait_timeout_ns=500 * MS)
    depth = np.full((480, 640), 2.0, np.float32)
    collector.add_depth(0, 10, depth, now_ns=0)
    waiting = collector.add_image(0, 10, _textured(), "cam", now_ns=0)
    assert waiting.kind == "waiting" and "depth CameraInfo" in waiting.reason
    depth_camera = CameraIntrinsics(585, 585, 320, 240, 640, 480)
    collector.set_intrinsics(0, depth_camera, depth=True)
    assert [o.kind for o in collector.poll(now_ns=10 * MS)] == ["accepted"]
    assert collector.buffer.last.depth_intrinsics == depth_camera


# --- frames wait for whatever they lack, in any arrival order (issue 14, defect 2) -------------------
ORDERS = [(a, b, c, d) for a in "IDPC" for b in "IDPC" for c in "IDPC" for d in "IDPC" if len({a, b, c, d}) == 4]


@pytest.mark.parametrize("order", ORDERS, ids=["".join(o) for o in ORDERS])
def test_every_arrival_order_of_info_image_depth_pose_gives_a_keyframe(order):
    """I=image, D=depth, P=pose, C=CameraInfo: the photo is kept whatever arrives last (within wait_timeout)."""
    poses = Poses()
    cfg = CollectorConfig(
        use_depth=True,
        require_pose=True,
        require_intrinsics=True,
        selector=KeyframeSelectorConfig(min_translation=0.15),
    )
    collector = KeyframeCollector(cfg, KeyframeBuffer(3), poses)
    depth = np.full((480, 640), 2.0, np.float32)
    outcomes = []
    for step, item in enumerate(order):
        now = step * 100 * MS
        if item == "I":
            outcomes.append(collector.add_image(0, 7, _textured(), "cam", now_ns=now))
        elif item == "D":
            outcomes.extend(collector.add_depth(0, 7, depth, now_ns=now))
        elif item == "P":
            poses.by_stamp[7] = _pose(0.0)
            outcomes.extend(collector.poll(now))
        else:
            outcomes.extend(collector.set_intrinsics(0, CameraIntrinsics(525, 525, 320, 240, 640, 480), now_ns=now))
    assert [o.kind for o in outcomes if o.kind != "waiting"] == ["accepted"], (order, outcomes)
    assert len(collector.buffer) == 1 and collector.pending() == 0


def test_frame_without_camera_info_expires_after_wait_timeout_with_the_reason():
    cfg = CollectorConfig(require_intrinsics=True, wait_timeout_ns=500 * MS)
    collector = KeyframeCollector(cfg, KeyframeBuffer(3), lambda *a: None)
    assert collector.add_image(0, 1, _textured(), "cam", now_ns=0).kind == "waiting"
    assert collector.poll(400 * MS)[0].kind == "waiting"
    (late,) = collector.poll(501 * MS)
    assert late.kind == "rejected" and late.reason == "no CameraInfo"
    assert collector.pending() == 0


def test_several_photos_waiting_for_camera_info_are_all_kept():
    """Two photos before the first CameraInfo: both become keyframes (one pending slot lost the first)."""
    poses = Poses()
    selector = KeyframeSelectorConfig(min_translation=0.15)
    cfg = CollectorConfig(require_intrinsics=True, require_pose=True, selector=selector)
    collector = KeyframeCollector(cfg, KeyframeBuffer(3), poses)
    poses.by_stamp[1], poses.by_stamp[2] = _pose(0.0), _pose(1.0)
    assert collector.add_image(0, 1, _textured(1), "cam", now_ns=0).kind == "waiting"
    assert collector.add_image(0, 2, _textured(2), "cam", now_ns=10 * MS).kind == "waiting"
    outcomes = collector.set_intrinsics(0, CameraIntrinsics(525, 525, 320, 240, 640, 480), now_ns=20 * MS)
    assert [o.kind for o in outcomes] == ["accepted", "accepted"]


def test_image_size_not_matching_its_camera_info_is_rejected_with_both_sizes():
    collector = _collector()
    outcome = collector.add_image(0, 1, _textured()[:240, :320], "cam", now_ns=0)
    assert outcome.kind == "rejected" and "320x240" in outcome.reason and "640x480" in outcome.reason


def test_lazy_depth_is_decoded_only_when_a_frame_pairs_with_it_and_a_bad_one_is_skipped():
    collector = _collector(use_depth=True, sync_slop_ns=20 * MS)
    calls: list[int] = []

    def lazy(stamp_ms: int, fail: bool = False):
        def decode() -> np.ndarray:
            calls.append(stamp_ms)
            if fail:
                raise ValueError("16UC1 data has 7 bytes, expected 614400")
            return np.full((480, 640), 1.5, np.float32)

        return decode

    for stamp_ms in range(0, 300, 33):  # a 30 Hz depth stream: nothing decoded yet
        assert collector.add_depth(0, stamp_ms * MS, lazy(stamp_ms), now_ns=stamp_ms * MS) == []
    assert calls == []
    collector.add_depth(0, 400 * MS, lazy(400, fail=True), now_ns=400 * MS)
    collector.add_depth(0, 410 * MS, lazy(410), now_ns=410 * MS)
    outcome = collector.add_image(0, 402 * MS, _textured(), "cam", now_ns=420 * MS)
    # The nearest depth (400 ms) is malformed: dropped and reported; the frame pairs with the next one.
    assert outcome.kind == "accepted" and calls == [400, 410]
    assert np.allclose(collector.buffer.last.depth, 1.5)
    reported = collector.poll(430 * MS)
    assert [o.reason for o in reported] == ["bad depth image: 16UC1 data has 7 bytes, expected 614400"]
    # Decoded once: a second frame pairing with the same depth does not decode it again.
    collector.add_image(0, 411 * MS, _textured(1), "cam", now_ns=440 * MS)
    assert calls == [400, 410]
