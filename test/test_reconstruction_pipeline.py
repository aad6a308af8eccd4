"""Pipeline: backend choice (and the reason given), keyframe count, a real RGB-D run."""

from __future__ import annotations

import numpy as np
import pytest

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.reconstruction.pipeline import (
    PipelineConfig,
    ReconstructionError,
    ReconstructionPipeline,
    RGBDBackend,
    default_backends,
)


@pytest.fixture(scope="module")
def kitchen(repo_root):
    return load_frame_folder(repo_root / "data" / "redkitchen")


def _rgb_only(keyframes):
    return [Keyframe(image=k.image, intrinsics=k.intrinsics, pose=k.pose) for k in keyframes]


def test_auto_picks_rgbd_when_depth_is_present(kitchen):
    backend, reason = ReconstructionPipeline(PipelineConfig(), default_backends()).select_backend(kitchen)
    assert backend.name == "rgbd" and reason == "auto: rgbd"


def test_auto_explains_why_nothing_can_run(kitchen):
    pipeline = ReconstructionPipeline(PipelineConfig(), {"rgbd": RGBDBackend()})
    with pytest.raises(ReconstructionError, match=r"rgbd: keyframes \[0, 1, 2, 3, 4\] have no depth image"):
        pipeline.select_backend(_rgb_only(kitchen))


def test_requested_backend_must_exist_and_be_able_to_run(kitchen):
    with pytest.raises(ValueError, match="unknown backend 'nerf'"):
        ReconstructionPipeline(PipelineConfig(backend="nerf"), default_backends())
    pipeline = ReconstructionPipeline(PipelineConfig(backend="rgbd"), default_backends())
    with pytest.raises(ReconstructionError, match="backend 'rgbd' cannot run"):
        pipeline.run(_rgb_only(kitchen))


def test_too_few_keyframes_is_an_error(kitchen):
    pipeline = ReconstructionPipeline(PipelineConfig(min_keyframes=3), default_backends())
    with pytest.raises(ReconstructionError, match="need at least 3 keyframes, have 2"):
        pipeline.run(kitchen[:2])


def test_rgbd_run_on_the_sample_keyframes_is_metric_and_inside_the_room(kitchen):
    progress: list[tuple[float, str]] = []
    result = ReconstructionPipeline(PipelineConfig(build_mesh=False), default_backends()).run(
        kitchen, lambda fraction, stage: progress.append((fraction, stage))
    )
    assert result.backend == "rgbd" and result.metric and result.frame_id == "map"
    assert result.num_points > 50_000 and result.mesh is None
    assert progress[0] == (0.0, "auto: rgbd") and progress[-1] == (1.0, "done")
    np.testing.assert_allclose(
        result.camera_poses[:, :3, 3], np.stack([k.pose[:3, 3] for k in kitchen]), atol=1e-9
    )
    # Every point lies within max_depth of some camera, and in front of at least one.
    centres = result.camera_poses[:, :3, 3]
    distance = np.linalg.norm(result.points[:, None, :] - centres[None], axis=2).min(axis=1)
    assert distance.max() < 6.0 + 0.05
    assert "backend_total" in result.timings
