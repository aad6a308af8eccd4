"""Focal, PnP poses and local->global alignment against upstream's results (``pose_synthetic.pt``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from showroom_ros.geometry.similarity import Similarity
from showroom_ros.models import align_local_to_global, estimate_focal, estimate_poses
from showroom_ros.models.postprocess import solve_pose_pnp


@pytest.fixture(scope="module")
def synthetic(shared_root: Path) -> dict[str, Any]:
    return torch.load(shared_root / "fixtures/fast3r/pose_synthetic.pt", weights_only=True)


@pytest.fixture(scope="module")
def golden(shared_root: Path) -> dict[str, Any]:
    return torch.load(shared_root / "fixtures/fast3r/tiny_golden.pt", weights_only=True)


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def test_focal_from_view0_global_pointmap(synthetic: dict[str, Any]) -> None:
    view0 = synthetic["inputs"]["preds"][0]
    focal = estimate_focal(view0["pts3d_in_other_view"][0], view0["conf"][0])
    expected = synthetic["expected"]["focal_first_view_global"]
    assert focal == pytest.approx(expected, rel=1e-5)
    assert focal == pytest.approx(synthetic["ground_truth"]["focal"], rel=1e-3)


def test_poses_match_upstream_and_ground_truth(synthetic: dict[str, Any]) -> None:
    poses, focals = estimate_poses(synthetic["inputs"]["preds"], niter_pnp=100)
    assert len(poses) == 1 and len(poses[0]) == 4
    expected = synthetic["expected"]["poses_c2w"].numpy()
    truth = synthetic["ground_truth"]["c2w"].numpy()
    for view, pose in enumerate(poses[0]):
        assert pose.shape == (4, 4) and pose.dtype == np.float32
        np.testing.assert_allclose(pose, expected[view], atol=5e-3)
        assert rotation_angle_deg(pose, expected[view]) < 0.3
        assert np.linalg.norm(pose[:3, 3] - expected[view][:3, 3]) < 0.02
        assert rotation_angle_deg(pose, truth[view]) < 0.3
        assert np.linalg.norm(pose[:3, 3] - truth[view][:3, 3]) < 0.02
    np.testing.assert_allclose(
        np.array(focals[0], dtype=np.float64), synthetic["expected"]["focals"].numpy(), rtol=1e-5
    )


def test_individual_focal_search(synthetic: dict[str, Any]) -> None:
    """Per view, the candidate focal (100 in [S/2, 3S]) with most RANSAC inliers, first maximum wins.

    Inlier counting is coarse on a 64x48 image at 5 px, so accuracy is checked at a 0.5 px threshold.
    """
    preds = synthetic["inputs"]["preds"][:2]
    candidates = np.geomspace(32, 192, 100)
    _, focals = estimate_poses(preds, focal_method="individual")
    for view in range(2):
        pts = preds[view]["pts3d_in_other_view"][0].numpy()
        conf = preds[view]["conf"][0].numpy()
        inliers = [solve_pose_pnp(pts, conf, float(f))[1] for f in candidates]
        assert focals[0][view] == pytest.approx(candidates[int(np.argmax(inliers))])
    poses, focals = estimate_poses(preds, focal_method="individual", reprojection_error=0.5)
    truth = synthetic["ground_truth"]["c2w"].numpy()
    for view in range(2):
        assert focals[0][view] == pytest.approx(60.0, rel=0.05)
        assert rotation_angle_deg(poses[0][view], truth[view]) < 1.0


def test_local_to_global_alignment(synthetic: dict[str, Any]) -> None:
    aligned, fits = align_local_to_global(synthetic["inputs"]["preds"], min_conf_thr_percentile=85)
    expected = synthetic["expected"]
    for view in range(4):
        torch.testing.assert_close(
            aligned[view], expected["pts3d_local_aligned_to_global"][view], rtol=1e-4, atol=1e-5
        )
        fit, want = fits[view][0], expected["align_similarity"][view]
        assert fit.scale == pytest.approx(float(want["s"]), rel=1e-4)
        assert fit.scale == pytest.approx(1 / synthetic["ground_truth"]["local_scale"][view], rel=1e-3)
        np.testing.assert_allclose(fit.rotation, want["R"].numpy(), atol=1e-5)
        np.testing.assert_allclose(fit.translation, want["t"].numpy(), atol=1e-5)


def test_random_weights_take_upstreams_failure_path(golden: dict[str, Any]) -> None:
    """With random weights the view-0 focal clamps to 0: identity poses and no focal, as upstream."""
    outputs = golden["outputs"]
    assert estimate_focal(outputs[0]["pts3d_in_other_view"][0], outputs[0]["conf"][0]) == 0.0
    poses, focals = estimate_poses(outputs)
    expected = golden["pose_estimation"]
    for view in range(3):
        np.testing.assert_array_equal(poses[0][view], expected["poses_c2w"][view].numpy())
        assert focals[0][view] is None and np.isnan(expected["focals"][view].item())
    aligned, _ = align_local_to_global(
        outputs, min_conf_thr_percentile=expected["align_min_conf_thr_percentile"]
    )
    for view in range(3):
        torch.testing.assert_close(
            aligned[view], expected["pts3d_local_aligned_to_global"][view], rtol=1e-4, atol=1e-5
        )


def _view(local: np.ndarray, glob: np.ndarray, conf: np.ndarray) -> dict[str, torch.Tensor]:
    """One view of a batch of one, as the model returns it (float32 tensors)."""
    return {
        "pts3d_local": torch.from_numpy(local[None].astype(np.float32)),
        "pts3d_in_other_view": torch.from_numpy(glob[None].astype(np.float32)),
        "conf": torch.from_numpy(conf[None].astype(np.float32)),
    }


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(-1.0, 1.0).map(lambda e: 10.0**e),
    shape=st.sampled_from(["cloud", "line", "point"]),
)
def test_alignment_fits_what_fixes_a_similarity_and_keeps_the_local_frame_otherwise(
    seed: int, scale: float, shape: str
) -> None:
    """A cloud or a line of confident pixels is moved onto the global map; a single point cannot fix a
    similarity, so that view stays in its own frame (identity) instead of collapsing or failing."""
    rng = np.random.default_rng(seed)
    truth = Similarity(
        scale=scale, rotation=Rotation.random(random_state=rng).as_matrix(), translation=rng.uniform(-1, 1, 3)
    )
    height, width = 6, 8
    if shape == "cloud":
        local = rng.normal(size=(height, width, 3)) + np.array([0.0, 0.0, 4.0])
    elif shape == "line":
        local = np.outer(rng.uniform(1, 5, height * width), rng.normal(size=3)).reshape(height, width, 3)
    else:
        local = np.broadcast_to(rng.normal(size=3), (height, width, 3)).copy()
    glob = truth.transform_points(local.reshape(-1, 3)).reshape(height, width, 3)
    aligned, fits = align_local_to_global([_view(local, glob, rng.uniform(1, 5, (height, width)))])
    expected = local if shape == "point" else glob
    np.testing.assert_allclose(aligned[0][0].numpy(), expected, rtol=1e-4, atol=1e-4 * (1 + np.abs(glob).max()))
    if shape == "point":
        np.testing.assert_array_equal(fits[0][0].matrix, np.eye(4))
    else:
        assert fits[0][0].scale == pytest.approx(scale, rel=1e-4)


def test_too_few_confident_pixels_fail_cleanly(synthetic: dict[str, Any]) -> None:
    view = {k: v.clone() for k, v in synthetic["inputs"]["preds"][1].items()}
    view["conf"][:] = 1.0  # PnP uses conf > 1 only: nothing left
    poses, focals = estimate_poses([synthetic["inputs"]["preds"][0], view])
    np.testing.assert_array_equal(poses[0][1], np.eye(4, dtype=np.float32))
    assert focals[0][1] is None and focals[0][0] is not None
    with pytest.raises(ValueError, match="unknown focal_method"):
        estimate_poses([view], focal_method="median")
