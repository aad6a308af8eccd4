"""Request validation, the generation loop, generated keyframes ("3D generate") and the CLI core."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from showroom_ros.generation.cli import build_parser, main
from showroom_ros.generation.generate import (
    MAX_STEPS,
    MAX_VIEWS,
    GenerationRequest,
    generate_views,
    generated_views_to_keyframes,
    validate_request,
    yaw_schedule,
)
from showroom_ros.generation.inpainting import OpenCVInpainter
from showroom_ros.generation.view_synthesis import estimate_up_direction, render_novel_view, yawed_pose
from showroom_ros.io.datasets import load_frame_folder
from showroom_ros.io.export import save_npz
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.reconstruction.rgbd import fuse_rgbd


@pytest.fixture(scope="module")
def kitchen_keyframes(repo_root: Path):
    return load_frame_folder(repo_root / "data" / "redkitchen")


@pytest.fixture(scope="module")
def kitchen(kitchen_keyframes) -> Reconstruction:
    return fuse_rgbd(kitchen_keyframes)


def tiny_reconstruction() -> Reconstruction:
    points = np.zeros((4, 3), np.float32)
    return Reconstruction(
        points, np.zeros((4, 3), np.uint8), np.ones(4, np.float32), np.stack([np.eye(4)] * 3), []
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keyframe_index": 3}, "out of range"),
        ({"keyframe_index": -2}, "out of range"),
        ({"num_views": 0}, "number of views"),
        ({"num_views": 100}, "number of views"),
        ({"yaw_angles_deg": [10.0] * (MAX_VIEWS + 1)}, "at most"),
        ({"yaw_angles_deg": [120.0]}, "yaw angles"),
        ({"yaw_angles_deg": [math.nan]}, "yaw angles"),
        ({"max_yaw_deg": 0.0}, "max yaw"),
        ({"steps": 0}, "steps"),
        ({"steps": -5}, "steps"),
        ({"steps": MAX_STEPS + 1}, "steps"),
        ({"steps": 10**9}, "steps"),
        ({"guidance_scale": math.inf}, "guidance"),
        ({"guidance_scale": -1.0}, "guidance"),
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "   \n"}, "prompt is empty"),
        ({"prompt": "wall " * 1000}, "characters"),
        ({"negative_prompt": "x" * 5000}, "negative prompt"),
        ({"backend": "dall-e"}, "unknown inpainting backend"),
        ({"seed": -7}, "seed"),
    ],
)
def test_bad_requests_are_refused_clearly(change: dict, message: str) -> None:
    request = replace(GenerationRequest(), **change)
    with pytest.raises(ValueError, match=message):
        validate_request(request, tiny_reconstruction(), 3)


def test_missing_or_empty_reconstruction() -> None:
    with pytest.raises(ValueError, match="no reconstruction"):
        validate_request(GenerationRequest(), None, 3)
    empty = Reconstruction(
        np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32), np.eye(4)[None], []
    )
    with pytest.raises(ValueError, match="empty"):
        validate_request(GenerationRequest(), empty, 1)
    with pytest.raises(ValueError, match="out of range"):
        # Only 2 keyframes were given, whatever the reconstruction holds.
        validate_request(GenerationRequest(keyframe_index=2), tiny_reconstruction(), 2)
    validate_request(
        GenerationRequest(keyframe_index=2, yaw_angles_deg=[-90.0, 90.0]), tiny_reconstruction(), 3
    )
    validate_request(GenerationRequest(seed=-1, negative_prompt=""), tiny_reconstruction(), 3)


def test_yaw_schedule() -> None:
    assert yaw_schedule(2, 30.0, "left") == [15.0, 30.0]
    assert yaw_schedule(1, 30.0, "right") == [-30.0]
    assert yaw_schedule(4, 30.0, None) == [15.0, -15.0, 30.0, -30.0]
    assert yaw_schedule(3, 30.0, None) == [15.0, -15.0, 30.0]


def test_generate_views_on_the_kitchen_with_opencv(kitchen: Reconstruction, kitchen_keyframes) -> None:
    images = [k.image for k in kitchen_keyframes]
    up, why = estimate_up_direction(kitchen.camera_poses)
    assert "mean up" in why, "7-Scenes poses are y-down: the cameras' up is used, not map +z"
    request = GenerationRequest(keyframe_index=1, yaw_angles_deg=[25.0, -25.0], seed=4)
    validate_request(request, kitchen, len(kitchen_keyframes))
    reports: list[tuple[float, str]] = []
    views = generate_views(
        kitchen,
        images,
        request,
        OpenCVInpainter(),
        progress=lambda fraction, message: reports.append((fraction, message)),
    )
    assert [v.yaw_deg for v in views] == [25.0, -25.0]
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] == 0.05 and fractions[-1] == 1.0
    for view in views:
        assert view.source_keyframe == 1 and view.accepted and "not checked" in view.reason
        np.testing.assert_allclose(view.pose_c2w, yawed_pose(kitchen.camera_poses[1], view.yaw_deg, up))
        expected = render_novel_view(
            kitchen,
            view.pose_c2w,
            view.intrinsics,
            images[1],
            kitchen.camera_poses[1],
            kitchen_keyframes[1].intrinsics,
        )
        np.testing.assert_array_equal(view.mask, expected.hole_mask)
        np.testing.assert_array_equal(view.image[~view.mask], expected.image[~view.mask])
        assert 0.05 < view.hole_fraction < 0.75
        assert not np.any(np.all(view.image[view.mask] == 0, axis=1)), "every hole pixel was filled"
        assert np.isnan(view.depth[view.mask]).all() and np.isfinite(view.depth).mean() > 0.3
    assert views[0].seed == 4 and views[1].seed == 5
    # Turning left uncovers the left border, turning right the right border.
    assert views[0].mask[:, :40].mean() > views[0].mask[:, -40:].mean()
    assert views[1].mask[:, -40:].mean() > views[1].mask[:, :40].mean()


def test_discriminator_chooses_and_checks(kitchen: Reconstruction, shared_root: Path) -> None:
    pytest.importorskip("torch")
    from showroom_ros.generation.st_roomnet import RoomLayoutEstimator

    weights = shared_root / "fixtures" / "st_roomnet" / "tiny_stroomnet.h5"
    discriminator = RoomLayoutEstimator.from_h5(weights)
    # No photos: the keyframe views are rendered from the reconstruction for the layout network.
    request = GenerationRequest(keyframe_index=-1, num_views=1, max_yaw_deg=20.0)
    views = generate_views(kitchen, None, request, OpenCVInpainter(), discriminator)
    assert len(views) == 1
    view = views[0]
    assert view.layout is not None and view.layout.labels.shape == (400, 400)
    assert "layout" in view.reason
    assert abs(view.yaw_deg) == 20.0


def test_geometric_choice_without_discriminator(kitchen: Reconstruction, kitchen_keyframes) -> None:
    reports: list[str] = []
    request = GenerationRequest(keyframe_index=-1, num_views=2, max_yaw_deg=30.0)
    views = generate_views(
        kitchen,
        [k.image for k in kitchen_keyframes],
        request,
        OpenCVInpainter(),
        progress=lambda fraction, message: reports.append(message),
    )
    assert any("geometric choice" in message for message in reports)
    assert len({v.source_keyframe for v in views}) == 1
    yaws = [v.yaw_deg for v in views]
    assert yaws in ([15.0, 30.0], [-15.0, -30.0]), "both views turn towards the chosen side"
    assert views[1].hole_fraction <= 0.75


def test_generated_views_become_keyframes_and_fuse(kitchen: Reconstruction, kitchen_keyframes) -> None:
    """3D generate: accepted views join the keyframes with rendered depth; RGB-D fusion accepts them."""
    images = [k.image for k in kitchen_keyframes]
    request = GenerationRequest(keyframe_index=0, yaw_angles_deg=[30.0, -30.0])
    views = generate_views(kitchen, images, request, OpenCVInpainter())
    views[1].accepted = False
    keyframes = generated_views_to_keyframes(views, first_stamp_ns=10**9, frame_id="map")
    assert len(keyframes) == 1
    generated = keyframes[0]
    np.testing.assert_array_equal(generated.image, views[0].image)
    np.testing.assert_allclose(generated.pose, views[0].pose_c2w)
    assert generated.intrinsics == views[0].intrinsics and generated.depth_intrinsics is None
    assert np.isnan(generated.depth[views[0].mask]).all()
    assert np.isfinite(generated.depth[~views[0].mask]).mean() > 0.5
    assert generated.metadata["generated"] == "true" and generated.metadata["yaw_deg"] == "30"
    assert len(generated_views_to_keyframes(views, only_accepted=False)) == 2

    extended = fuse_rgbd(list(kitchen_keyframes) + keyframes)
    assert len(extended.camera_poses) == len(kitchen_keyframes) + 1
    # The generated pixels carry no depth, so no invented geometry appears: every fused point lies on the
    # surfaces the reconstruction already had (re-rendered splats only jitter them by up to a splat, ~2 cm).
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(kitchen.points).query(extended.points)
    assert np.percentile(distances, 99) < 0.02 and distances.max() < 0.05


def test_cli_writes_a_frame_folder(
    kitchen: Reconstruction, kitchen_keyframes, repo_root: Path, tmp_path: Path
) -> None:
    npz = save_npz(kitchen, tmp_path / "kitchen.npz")
    out = tmp_path / "views"
    argv = [
        str(npz),
        "-o",
        str(out),
        "--frames",
        str(repo_root / "data" / "redkitchen"),
        "--keyframe",
        "2",
        "--yaw",
        "20",
        "--yaw",
        "-20",
        "--backend",
        "opencv",
    ]
    assert main(argv) == 0
    index = json.loads((out / "views.json").read_text())
    assert "OpenCV" in index["inpainter"] and len(index["views"]) == 2
    assert index["frame_id"] == kitchen.frame_id and index["metric"] is True
    for record in index["views"]:
        image = cv2.imread(str(out / record["image"]))
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(out / record["depth"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (480, 640, 3) and mask.dtype == np.uint8 and depth.dtype == np.uint16
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        assert np.all(depth[mask > 0] == 0)
        assert record["source_keyframe"] == 2 and np.asarray(record["pose_c2w"]).shape == (4, 4)
    # The folder is a frame folder: it loads back as keyframes ("3D generate" from disk, showroom view).
    loaded = load_frame_folder(out)
    assert len(loaded) == 2
    for frame, record in zip(loaded, index["views"], strict=True):
        np.testing.assert_allclose(frame.pose, record["pose_c2w"], atol=1e-7)
        assert frame.intrinsics == kitchen.intrinsics[2]
        mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_UNCHANGED) > 0
        assert np.isnan(frame.depth[mask]).all() and np.isfinite(frame.depth[~mask]).mean() > 0.5

    # Defaults: photos from <name>_keyframes, views to <name>_generated, both beside the .npz.
    shutil.copytree(repo_root / "data" / "redkitchen", tmp_path / "kitchen_keyframes")
    assert main([str(tmp_path), "--keyframe", "0", "--yaw", "15", "--backend", "opencv"]) == 0
    assert (tmp_path / "kitchen_generated" / "view_00.png").is_file()

    assert main([str(npz), "-o", str(tmp_path / "bad"), "--keyframe", "9"]) == 2
    assert main([str(tmp_path / "nothing.npz")]) == 2
    # 2 frames for 5 cameras:
    assert main([str(npz), "--frames", str(tmp_path / "views"), "--backend", "opencv"]) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args([str(npz), "--backend", "dall-e"])


def test_package_exports_resolve() -> None:
    import showroom_ros.generation as generation

    for name in generation.__all__:
        assert getattr(generation, name) is not None, name
    with pytest.raises(AttributeError):
        _ = generation.no_such_thing
