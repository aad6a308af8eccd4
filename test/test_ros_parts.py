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
def _keyframes(n: int) -> list[Keyframe]:
    import numpy as np

    return [Keyframe(np.zeros((4, 4, 3), np.uint8), stamp_ns=i + 1) for i in range(n)]


def test_busy_sees_map_jobs_and_a_queued_generation_does_not_overwrite_the_running_window():
    scheduler = Scheduler()
    window_started, release_window, release_map = threading.Event(), threading.Event(), threading.Event()

    def window(keyframes):
        window_started.set()
        release_window.wait(10)
        return len(keyframes)

    try:
        map_job = scheduler.submit_map(lambda: release_map.wait(10) or "done")
        assert scheduler.busy(), "a map job is work: busy() must say so"
        release_map.set()
        assert wait_for(map_job, 10, "") == (True, None)

        buffer = KeyframeBuffer(5)
        for keyframe in _keyframes(5):
            buffer.add(keyframe)
        job = scheduler.start_window(buffer, "test", window, continuous=False, max_pending=3, overlap=1)
        assert job is not None and window_started.wait(10)
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
        release_map.set()
        scheduler.shutdown()


def test_scheduler_under_many_submitting_threads(fast_switching):
    """Windows, generations and map jobs from six threads: one generation at a time, every job ends,
    the pending windows never exceed the bound, and busy() is True while anything is queued."""
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

    def submit_map():
        job = scheduler.submit_map(lambda: "m")
        if job is not None:
            assert scheduler.busy() or job.done()
            futures.append(job)

    try:
        errors = _hammer([submit_window, submit_window, submit_generation, submit_generation, submit_map, submit_map])
        assert not errors, errors[:1]
        for future in list(futures):
            future.result(timeout=30)
        assert not scheduler.busy() and scheduler.snapshot().queued == 0
        assert len(futures) > 50
    finally:
        scheduler.shutdown()


def test_quiesce_cancels_what_is_queued_and_waits_for_the_running_job():
    scheduler = Scheduler()
    started, release = threading.Event(), threading.Event()
    running = scheduler.submit_map(lambda: (started.set(), release.wait(10), "finished")[-1])
    queued = scheduler.submit_map(lambda: "never")
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    assert scheduler.quiesce(5.0)
    assert queued.cancelled() and running.result() == "finished"
    scheduler.shutdown()
    assert scheduler.submit_map(lambda: "after") is None  # closed: refused, not raised


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
