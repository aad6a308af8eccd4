"""Keyframe selection (blur, novelty by pose or image motion) and the bounded keyframe buffer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from showroom_ros.capture.keyframes import (
    Keyframe,
    KeyframeBuffer,
    KeyframeBufferFullError,
    KeyframeSelector,
    KeyframeSelectorConfig,
    SelectionDecision,
    image_motion,
    sharpness,
)
from showroom_ros.geometry.poses import pose_distance


def textured_image(seed: int = 0, height: int = 480, width: int = 640) -> np.ndarray:
    """A sharp image: random 8x8-pixel blocks, like a cluttered room at sensor resolution."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)


def pose_at(x: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    angle = np.deg2rad(yaw_deg)
    pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    pose[0, 3] = x
    return pose


def test_sharpness_drops_with_blur_and_blurred_frames_are_rejected() -> None:
    image = textured_image()
    blurred = cv2.GaussianBlur(image, (0, 0), 8.0)  # the random blocks are far more contrasted than a room
    assert sharpness(image) > 10 * sharpness(blurred)
    selector = KeyframeSelector(KeyframeSelectorConfig(blur_threshold=30.0))
    decision = selector.evaluate(blurred)
    assert isinstance(decision, SelectionDecision)
    assert not decision.accepted and "blur" in decision.reason
    assert decision.sharpness < 30.0
    sharp = selector.evaluate(image)
    assert sharp.accepted and sharp.motion is None and sharp.sharpness >= 30.0


def test_featureless_frame_is_rejected_as_blurred() -> None:
    decision = KeyframeSelector().evaluate(np.full((480, 640, 3), 128, np.uint8))
    assert not decision.accepted and decision.sharpness == 0.0


def test_no_motion_is_rejected_and_real_motion_accepted_without_poses() -> None:
    image = textured_image(1)
    reference = Keyframe(image=image)
    selector = KeyframeSelector(KeyframeSelectorConfig(min_image_motion=0.08))
    same = selector.evaluate(image.copy(), reference=reference)
    assert not same.accepted and same.motion is not None and same.motion < 1e-3
    assert "similar" in same.reason
    shifted = np.roll(image, 64, axis=1)  # a 10 % pan
    moved = selector.evaluate(shifted, reference=reference)
    assert moved.accepted and moved.motion is not None and moved.motion > 0.08


def test_image_motion_ignores_exposure_and_noise_but_not_content() -> None:
    image = textured_image(2)
    darker = np.clip(image.astype(np.float32) * 0.6 + 10, 0, 255).astype(np.uint8)
    noisy = np.clip(image + np.random.default_rng(3).normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    assert image_motion(image, darker) < 0.01
    assert image_motion(image, noisy) < 0.01
    assert image_motion(image, textured_image(4)) > 0.5
    # Symmetric enough, and works across sizes (a half-size copy is the same view).
    half = cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)
    assert image_motion(image, half) < 0.02


def test_pose_change_measures_translation_and_rotation() -> None:
    translation, rotation = pose_distance(pose_at(0.0, 0.0), pose_at(0.3, 25.0))
    assert translation == pytest.approx(0.3)
    assert rotation == pytest.approx(25.0)


def test_poses_decide_when_both_are_known() -> None:
    image = textured_image(5)
    config = KeyframeSelectorConfig(min_translation=0.15, min_rotation_deg=10.0)
    selector = KeyframeSelector(config)
    reference = Keyframe(image=image, pose=pose_at())
    # Same picture but the camera moved: poses win over image motion.
    moved = selector.evaluate(image, pose=pose_at(x=0.2), reference=reference)
    assert moved.accepted and moved.translation_m == pytest.approx(0.2)
    turned = selector.evaluate(image, pose=pose_at(yaw_deg=12.0), reference=reference)
    assert turned.accepted and turned.rotation_deg == pytest.approx(12.0)
    still = selector.evaluate(
        np.roll(image, 64, axis=1), pose=pose_at(x=0.05, yaw_deg=3.0), reference=reference
    )
    assert not still.accepted and "too close" in still.reason
    # Reference without a pose: falls back to image motion.
    unposed = Keyframe(image=image)
    fallback = selector.evaluate(image, pose=pose_at(x=1.0), reference=unposed)
    assert not fallback.accepted and fallback.translation_m is None


def test_selector_rejects_bad_pose_and_bad_image() -> None:
    selector = KeyframeSelector()
    reference = Keyframe(image=textured_image(), pose=np.eye(4))
    with pytest.raises(ValueError, match="4x4"):
        selector.evaluate(textured_image(1), pose=np.full((4, 4), np.nan), reference=reference)
    with pytest.raises(ValueError, match="image"):
        selector.evaluate(np.zeros((10, 10, 4), np.uint8))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="min_keyframes"):
        KeyframeSelectorConfig(min_keyframes=6, max_keyframes=5)
    with pytest.raises(ValueError, match="blur_threshold"):
        KeyframeSelectorConfig(blur_threshold=-1.0)
    default = KeyframeSelectorConfig()
    assert (default.min_keyframes, default.max_keyframes) == (3, 5)


def test_buffer_is_bounded_ordered_and_clearable() -> None:
    buffer = KeyframeBuffer(3)
    assert len(buffer) == 0 and buffer.last is None and not buffer.is_full
    frames = [Keyframe(image=textured_image(i, 32, 32), stamp_ns=i) for i in range(3)]
    for frame in frames:
        buffer.add(frame)
    assert buffer.is_full and len(buffer) == 3
    assert [k.stamp_ns for k in buffer] == [0, 1, 2]
    assert buffer.last is frames[-1]
    with pytest.raises(KeyframeBufferFullError, match="full"):
        buffer.add(Keyframe(image=textured_image(9, 32, 32)))
    assert len(buffer) == 3
    copy = buffer.keyframes
    copy.clear()
    assert len(buffer) == 3
    buffer.clear()
    assert len(buffer) == 0 and not buffer.is_full
    with pytest.raises(ValueError):
        KeyframeBuffer(0)
    with pytest.raises(TypeError):
        buffer.add("not a keyframe")  # type: ignore[arg-type]


def test_sample_keyframes_are_sharp_and_distinct(repo_root: Path) -> None:
    folder = repo_root / "data" / "redkitchen"
    images = [
        cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in sorted(folder.glob("*.color.jpg"))
    ]
    assert len(images) == 5
    selector = KeyframeSelector()
    reference = None
    for image in images:
        decision = selector.evaluate(image, reference=reference)
        assert decision.accepted, decision.reason
        reference = Keyframe(image=image)
        # The same real frame blurred by a shaky hand (Gaussian, sigma 4 px) is refused.
        assert not selector.evaluate(cv2.GaussianBlur(image, (0, 0), 4.0)).accepted
