"""Learned windows chained into one pose graph (showroom_ros/slam/windows.py, camera-only SLAM).

The maths on exact synthetic windows (each with its own arbitrary scale), and the plumbing on real
keyframes through the real learned backend with tiny random weights built here: random weights predict
meaningless geometry, so that part checks consistency (shared keyframes agree, every keyframe is placed,
the result lands in the map frame), not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from showroom_ros.geometry.similarity import umeyama
from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.windows import WindowChain, WindowChainError, overlap_scale


def _pose(translation: list[float], yaw: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(np.array([0.0, yaw, 0.0]))[0]
    pose[:3, 3] = translation
    return pose


TRUTH = [_pose([0.3 * i, 0.05 * np.sin(i), 0.1 * i], 0.1 * i) for i in range(11)]
STAMPS = [1000 + i for i in range(11)]


def _window(indices: list[int], scale: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Camera-to-window poses of TRUTH[indices], in the first camera's frame, at ``scale``."""
    rng = np.random.default_rng(seed)
    base = TRUTH[indices[0]]
    poses = np.stack([np.linalg.inv(base) @ TRUTH[i] for i in indices])
    poses[:, :3, 3] = poses[:, :3, 3] * scale + rng.normal(0, noise, (len(indices), 3))
    return poses


def _chain_error(chain: WindowChain, with_scale: bool = True) -> tuple[float, float]:
    """(max position error after the best similarity, that similarity's scale)."""
    placed = dict(chain.trajectory())
    a = np.array([placed[s][:3, 3] for s in STAMPS if s in placed])
    b = np.array([TRUTH[i][:3, 3] for i, s in enumerate(STAMPS) if s in placed])
    fit = umeyama(a, b, with_scale=with_scale)
    moved = fit.scale * a @ fit.rotation.T + fit.translation
    return float(np.abs(moved - b).max()), fit.scale


@pytest.mark.parametrize("overlap", [2, 3])
def test_windows_of_arbitrary_scale_chain_into_one_similar_trajectory(overlap: int) -> None:
    chain = WindowChain(SlamConfig())
    rng = np.random.default_rng(1)
    scales = []
    start = 0
    while start + overlap < len(TRUTH):
        indices = list(range(start, min(len(TRUTH), start + 5)))
        scale = float(rng.uniform(0.2, 5.0))
        placement = chain.add_window([STAMPS[i] for i in indices], _window(indices, scale), metric=False)
        scales.append((scale, placement.scale))
        start = indices[-1] - overlap + 1
    error, similarity_scale = _chain_error(chain)
    assert error < 1e-6, error  # exact windows: one similarity fits the whole chain
    # Each window's scale is undone relative to the first's: window scale * placement scale is constant.
    products = [window * placed for window, placed in scales]
    np.testing.assert_allclose(products, products[0], rtol=1e-6)
    assert similarity_scale == pytest.approx(1 / scales[0][0], rel=1e-6)  # the map has the first window's scale


def test_metric_windows_keep_their_translations_and_the_first_camera_is_level() -> None:
    chain = WindowChain(SlamConfig(camera_height=1.1))
    first = chain.add_window(STAMPS[:5], _window([0, 1, 2, 3, 4], 1.0), metric=True)
    chain.add_window(STAMPS[3:8], _window([3, 4, 5, 6, 7], 1.0), metric=True)
    error, scale = _chain_error(chain, with_scale=False)
    assert error < 1e-6 and scale == 1.0
    np.testing.assert_allclose(first.poses[STAMPS[0]][:3, 3], [0, 0, 1.1], atol=1e-9)


def test_noisy_overlaps_are_pulled_to_one_pose_per_keyframe_by_the_graph() -> None:
    chain = WindowChain(SlamConfig())
    for n, start in enumerate(range(0, 8, 2)):
        indices = list(range(start, start + 4))
        chain.add_window([STAMPS[i] for i in indices], _window(indices, 1.0, noise=0.01, seed=n), metric=True)
    error, _ = _chain_error(chain, with_scale=False)
    assert error < 0.05, error
    assert sum(e.kind == "window" for e in chain.graph.edges) == 4 * 3


def test_a_window_that_shares_nothing_or_has_bad_poses_is_refused() -> None:
    chain = WindowChain(SlamConfig())
    chain.add_window(STAMPS[:3], _window([0, 1, 2], 1.0), metric=False)
    with pytest.raises(WindowChainError, match="shares no keyframe"):
        chain.add_window(STAMPS[5:8], _window([5, 6, 7], 1.0), metric=False)
    bad = _window([2, 3, 4], 1.0)
    bad[1, 0, 3] = np.nan
    with pytest.raises(WindowChainError, match="finite"):
        chain.add_window(STAMPS[2:5], bad, metric=False)
    with pytest.raises(WindowChainError, match="twice"):
        chain.add_window([STAMPS[2], STAMPS[2]], _window([2, 3], 1.0), metric=False)
    assert len(chain) == 3


def test_one_shared_keyframe_keeps_the_last_scale_and_says_so() -> None:
    chain = WindowChain(SlamConfig())
    chain.add_window(STAMPS[:4], _window([0, 1, 2, 3], 2.0), metric=False)
    chain.add_window(STAMPS[2:6], _window([2, 3, 4, 5], 4.0), metric=False)
    placement = chain.add_window(STAMPS[5:8], _window([5, 6, 7], 3.0), metric=False)
    assert placement.scale == pytest.approx(chain.scale) and placement.notes
    assert "scale is unknown" in placement.notes[0]
    assert overlap_scale([np.eye(4)], [np.eye(4)]) is None


# --- plumbing: the real learned backend (tiny random weights) -----------------------------------------------
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_teacher(shared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from showroom_ros.models import Fast3R, Fast3RConfig

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    Fast3R(Fast3RConfig.from_json_file(shared_root / "fixtures/fast3r/tiny_golden_config.json")).save_pretrained(root)
    return root


def test_learned_windows_of_real_frames_chain_through_their_shared_keyframes(tiny_teacher, repo_root) -> None:
    from showroom_ros.backends import LearnedBackend, LearnedConfig, ModelHolder
    from showroom_ros.io.datasets import load_frame_folder
    from showroom_ros.reconstruction.registration import transform_reconstruction

    config = LearnedConfig(model=str(tiny_teacher), device="cpu", dtype="fp32", input_size=64)
    holder = ModelHolder(config.model, config.device, config.dtype, student=False)
    holder.start_loading()
    assert holder.wait(60) == "ready", holder.reason
    backend = LearnedBackend("fast3r", holder, config)
    keyframes = load_frame_folder(repo_root / "data" / "redkitchen", with_depth=False, with_poses=False)
    for index, keyframe in enumerate(keyframes):
        keyframe.stamp_ns = 10**9 * (index + 1)
    assert len(keyframes) >= 5
    windows = [keyframes[0:3], keyframes[1:4], keyframes[2:5]]  # overlaps of 2
    chain = WindowChain(SlamConfig())
    for window in windows:
        result = backend.reconstruct(window, lambda fraction, stage: None)
        assert not result.metric and len(result.camera_poses) == len(window)
        before = dict(chain.trajectory())
        placement = chain.add_window([k.stamp_ns for k in window], result.camera_poses, result.metric)
        moved = transform_reconstruction(result, placement.map_from_window, "map", result.metric)
        assert moved.frame_id == "map" and np.all(np.isfinite(moved.points))
        shared = [i for i, k in enumerate(window) if k.stamp_ns in before]
        if not before:
            continue
        # Sim(3) through the overlap: the moved window puts its first shared keyframe where the chain had
        # it, and its two shared keyframes as far apart as the chain had them (the scale).
        first, second = (window[i].stamp_ns for i in shared[:2])
        np.testing.assert_allclose(moved.camera_poses[shared[0]][:3, 3], before[first][:3, 3], atol=1e-6)
        moved_gap = np.linalg.norm(moved.camera_poses[shared[1]][:3, 3] - moved.camera_poses[shared[0]][:3, 3])
        chain_gap = np.linalg.norm(before[second][:3, 3] - before[first][:3, 3])
        assert moved_gap == pytest.approx(chain_gap, rel=1e-6)
    assert len(chain) == 5 and chain.windows == 3
    trajectory = dict(chain.trajectory())
    assert set(trajectory) == {k.stamp_ns for k in keyframes[:5]}
    assert all(np.all(np.isfinite(pose)) for pose in trajectory.values())
