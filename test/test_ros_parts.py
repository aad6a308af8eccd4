"""The node's parts on their own: settings without a ROS graph, and the shared state hammered from threads.

The scheduler's races named in issue 19 (busy() blind to map jobs, a queued generation overwriting the
running job, one generation at a time) are driven here from several threads at once with a short switch
interval. (The error counts and the map note are locked too, but under CPython 3.11's GIL their unlocked
updates could not be torn in any run here, so no test claims to catch that.)
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from showroom_ros.capture.keyframes import Keyframe, KeyframeBuffer
from showroom_ros.ros.parameters import SHOWROOM_PARAMETERS
from showroom_ros.ros.scheduler import Scheduler, wait_for
from showroom_ros.ros.settings import SettingsError, node_settings


def _defaults(**overrides) -> dict:
    return {**{p.name: p.default for p in SHOWROOM_PARAMETERS}, **overrides}


@pytest.fixture
def fast_switching():
    """Threads switch every microsecond: interleavings a quiet run would take hours to meet."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _hammer(workers: list, seconds: float = 1.0) -> list[BaseException]:
    errors: list[BaseException] = []
    stop = threading.Event()

    def run(work) -> None:
        try:
            while not stop.is_set():
                work()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(work,)) for work in workers]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(10)
    return errors


# --- settings: free of rclpy ----------------------------------------------------------------------
def test_settings_import_no_rclpy():
    code = "import sys, showroom_ros.ros.settings; print('rclpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_settings_build_every_config_from_the_table():
    s = node_settings(_defaults(depth_topics=["/d"], depth_info_topics=[""], evaluation_rate_hz=4.0, sync_slop=0.02))
    assert s.topics.images == ["/camera/color/image_raw"] and s.topics.depth == ["/d"] and s.topics.depth_info == []
    assert s.collector.use_depth and not s.collector.separate_depth_camera
    assert s.collector.evaluation_period_ns == 250_000_000 and s.collector.sync_slop_ns == 20_000_000
    assert s.robot_map.volume.voxel_size == s["map_voxel_size"] and s.robot_map.frame_id == "map"
    assert s.backends.fast3r.model == s["model"] and s.pipeline.surface.depth == s["poisson_depth"]
    assert s.continuous  # poses from tf
    assert not node_settings(_defaults(pose_source="none")).continuous


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"image_topics": [""]}, "image_topics is empty"),
        ({"camera_info_topics": ["/a", "/b"]}, "camera_info_topics has 2 entries"),
        ({"pose_source": "topic", "pose_topics": [""]}, "pose_topics is empty"),
        ({"min_keyframes": 6, "max_keyframes": 5}, "min_keyframes must not exceed"),
    ],
)
def test_settings_refuse_what_does_not_fit_together(overrides, says):
    with pytest.raises(SettingsError, match=says):
        node_settings(_defaults(**overrides))


def test_settings_share_the_parameter_values():
    """Run-time parameter changes the node writes into its values are seen by every part."""
    values = _defaults()
    settings = node_settings(values)
    values["autosave"] = False
    assert settings["autosave"] is False


# --- the scheduler --------------------------------------------------------------------------------
def _keyframes(n: int, first_stamp: int = 0) -> list[Keyframe]:
    import numpy as np

    return [Keyframe(np.zeros((4, 4, 3), np.uint8), stamp_ns=first_stamp + i + 1) for i in range(n)]


def _full_buffer(n: int = 5, first_stamp: int = 0) -> KeyframeBuffer:
    buffer = KeyframeBuffer(n)
    for keyframe in _keyframes(n, first_stamp):
        buffer.add(keyframe)
    return buffer


def test_a_queued_generation_does_not_overwrite_the_running_window():
    scheduler = Scheduler()
    window_started, release_window = threading.Event(), threading.Event()

    def window(keyframes):
        window_started.set()
        release_window.wait(10)
        return len(keyframes)

    try:
        job = scheduler.start_window(_full_buffer(), "test", window, continuous=False, max_pending=3, overlap=1)
        assert job is not None and window_started.wait(10)
        assert scheduler.busy()
        generation, refusal = scheduler.submit_generation(lambda: "views")
        assert generation is not None and refusal == ""
        second, refusal = scheduler.submit_generation(lambda: "views")
        assert second is None and "already queued" in refusal
        state = scheduler.snapshot()
        assert state.state == "reconstructing" and state.queued == 2, state
        assert "queued behind" in state.message
        release_window.set()
        assert wait_for(job, 10, "") == (5, None) and wait_for(generation, 10, "") == ("views", None)
        assert not scheduler.busy()
    finally:
        release_window.set()
        scheduler.shutdown()


def test_a_full_window_queue_gives_way_to_the_newest_window():
    """Continuous mode: windows slower than the camera never stop keyframes from being taken; the oldest
    queued window (not the running one) gives way, and who is told gets its keyframes."""
    scheduler = Scheduler()
    release = threading.Event()
    superseded: list[list] = []
    try:
        futures = [
            scheduler.start_window(
                _full_buffer(3, 10 * i),
                "test",
                lambda k: (release.wait(10), k[-1].stamp_ns)[-1],
                continuous=True,
                max_pending=2,
                overlap=0,
                superseded=superseded.append,
            )
            for i in range(4)
        ]
        assert all(f is not None for f in futures)
        assert [k.stamp_ns for k in superseded[0]] == [11, 12, 13] and len(superseded) == 2
        assert scheduler.snapshot().superseded_windows == 2 and scheduler.snapshot().pending_windows == 2
        release.set()
        assert futures[0].result(10) == 3 and futures[3].result(10) == 33  # the running one and the newest
        assert futures[1].cancelled() and futures[2].cancelled()
    finally:
        release.set()
        scheduler.shutdown()


def test_scheduler_under_many_submitting_threads(fast_switching):
    """Windows and generations from five threads: one generation queued at a time, every job ends or gives
    way to a newer window, and the pending windows never exceed the bound."""
    scheduler = Scheduler()
    running = {"generation": 0}
    lock = threading.Lock()
    futures = []

    def generation():
        with lock:
            running["generation"] += 1
            assert running["generation"] == 1
        time.sleep(0.001)
        with lock:
            running["generation"] -= 1
        return "g"

    def submit_window():
        buffer = KeyframeBuffer(3)
        for keyframe in _keyframes(3):
            buffer.add(keyframe)
        job = scheduler.start_window(buffer, "hammer", lambda k: len(k), continuous=True, max_pending=4, overlap=1)
        assert scheduler.snapshot().pending_windows <= 4
        if job is not None:
            futures.append(job)

    generations: list = []

    def submit_generation():
        job, _ = scheduler.submit_generation(generation)
        if job is not None:
            with lock:
                generations.append(job)
                assert sum(not g.done() for g in generations) <= 1, "two generations queued at once"
            futures.append(job)


    try:
        errors = _hammer([submit_window, submit_window, submit_window, submit_generation, submit_generation])
        assert not errors, errors[:1]
        for future in list(futures):
            if not future.cancelled():  # a window that gave way to a newer one
                future.result(timeout=30)
        assert not scheduler.busy() and scheduler.snapshot().queued == 0
        assert len(futures) > 50
    finally:
        scheduler.shutdown()


def test_quiesce_cancels_what_is_queued_and_waits_for_the_running_job():
    scheduler = Scheduler()
    started, release = threading.Event(), threading.Event()
    running = scheduler.start_window(
        _full_buffer(), "t", lambda k: (started.set(), release.wait(10), "finished")[-1], True, 3, 0
    )
    queued, _ = scheduler.submit_generation(lambda: "never")
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    assert scheduler.quiesce(5.0)
    assert queued.cancelled() and running.result() == "finished"
    scheduler.shutdown()
    assert scheduler.submit_generation(lambda: "after") == (None, "the node is stopping")  # refused, not raised


def test_a_users_unnamed_save_survives_autosave_pruning(tmp_path):
    """~/save without a name used to default to 'reconstruction-<time>', the autosaves' prefix: the next
    autosave's pruning deleted it."""
    from showroom_ros.io.export import prune_saved
    from showroom_ros.io.file_names import RECONSTRUCTION_FILES, checked_name, timestamped_name
    from showroom_ros.ros.result_outputs import AUTOSAVE_PREFIX
    from showroom_ros.ros.services import SAVE_PREFIX

    users, _ = checked_name("", SAVE_PREFIX, tmp_path)
    names = [users] + [timestamped_name(AUTOSAVE_PREFIX.rstrip("-"), sequence=i) for i in range(3)]
    for name in names:
        (tmp_path / f"{name}{RECONSTRUCTION_FILES['npz']}").write_bytes(b"npz")
    pruned = prune_saved(tmp_path, AUTOSAVE_PREFIX, keep=1)
    assert len(pruned) == 2 and users not in pruned
    assert (tmp_path / f"{users}.npz").is_file()


# --- the map's own thread -------------------------------------------------------------------------
@pytest.fixture
def map_node():
    from rclpy.node import Node
    from ros_harness import ros_init_for_tests

    ros_init_for_tests()
    node = Node(f"map_part_test_{id(object())}")
    yield node
    node.destroy_node()


def _mapping(node, tmp_path, **kwargs):
    from showroom_ros.mapping.point_map import MapConfig
    from showroom_ros.mapping.robot_map import RobotMapConfig
    from showroom_ros.mapping.volume import VolumeConfig
    from showroom_ros.ros.guard import CallbackGuard
    from showroom_ros.ros.map_outputs import MapOutputs
    from showroom_ros.ros.robot_mapping import RobotMapping

    outputs = MapOutputs(node, node.create_publisher, CallbackGuard(node.get_logger).wrap)
    config = RobotMapConfig(volume=VolumeConfig(voxel_size=0.04, depth_max=4.0))
    return RobotMapping(config, MapConfig(), outputs, tmp_path, True, node.get_logger, **kwargs)


def _kitchen_keyframes() -> list[Keyframe]:
    from pathlib import Path

    from showroom_ros.io.datasets import load_frame_folder

    return load_frame_folder(Path(__file__).resolve().parents[1] / "data" / "redkitchen")


def test_a_burst_faster_than_integration_stays_bounded_and_the_newest_wins(map_node, tmp_path):
    from dataclasses import replace

    mapping = _mapping(map_node, tmp_path, queue_size=4, publish_rate_hz=30.0)
    release = threading.Event()
    try:
        held = mapping.submit(lambda: release.wait(10))  # the map's thread is busy: keyframes queue up
        kitchen = _kitchen_keyframes()
        burst = [replace(kitchen[i % len(kitchen)], stamp_ns=1_000 + i) for i in range(50)]
        for keyframe in burst:
            mapping.offer(keyframe)
        state = mapping.snapshot()
        assert state.waiting == 4 and state.dropped == 46, state
        release.set()
        held.result(10)
        deadline = time.monotonic() + 60
        while not mapping.idle() and time.monotonic() < deadline:
            time.sleep(0.05)
        state = mapping.snapshot()
        assert state.integrated == 4 and state.waiting == 0 and state.dropped == 46
        assert state.stamp_ns == burst[-1].stamp_ns  # the newest frame is in the map, and the stamp says so
        mapping.offer(replace(kitchen[0], depth=None))  # no sensor depth: for the windows, not this path
        assert mapping.snapshot().waiting == 0
    finally:
        release.set()
        assert mapping.stop(5.0)


def test_map_outputs_carry_the_newest_integrated_frames_stamp(map_node, tmp_path):
    """A client can tell how old the map is: every map output's stamp is a camera frame's, not the clock's."""
    import rclpy
    from nav_msgs.msg import OccupancyGrid
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    from showroom_ros.ros.qos import LATCHED

    received: dict[str, list] = {"mesh": [], "grid": [], "cloud": []}
    name = map_node.get_fully_qualified_name()
    for key, msg_type, topic in (
        ("mesh", MarkerArray, "map_mesh"),
        ("grid", OccupancyGrid, "occupancy"),
        ("cloud", PointCloud2, "map"),
    ):
        map_node.create_subscription(msg_type, f"{name}/{topic}", received[key].append, LATCHED)
    mapping = _mapping(map_node, tmp_path, publish_rate_hz=30.0)
    try:
        kitchen = _kitchen_keyframes()
        stamps = [7_000_000_123 + i * 200_000_000 for i in range(len(kitchen))]
        from dataclasses import replace

        for keyframe, stamp in zip(kitchen, stamps, strict=True):
            mapping.offer(replace(keyframe, stamp_ns=stamp))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            mapping.idle() and mapping.snapshot().integrated == len(kitchen) and all(received.values())
        ):
            rclpy.spin_once(map_node, timeout_sec=0.05)
        assert all(received.values()), {k: len(v) for k, v in received.items()}
        newest = received["mesh"][-1].markers[0].header.stamp
        for messages in received.values():
            header = messages[-1].markers[0].header if hasattr(messages[-1], "markers") else messages[-1].header
            stamp_ns = header.stamp.sec * 10**9 + header.stamp.nanosec
            assert stamp_ns in stamps, f"{stamp_ns} is no camera frame's stamp"
        assert newest.sec * 10**9 + newest.nanosec == stamps[-1]
    finally:
        assert mapping.stop(5.0)
