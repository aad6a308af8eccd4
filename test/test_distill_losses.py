"""Distillation losses: hand-computed RKD/cosine values, dense-loss properties, gradients and DDP scaling."""

from __future__ import annotations

import math

import pytest
import torch

from showroom_ros.distillation.losses import (
    DistillationLoss,
    confidence_loss,
    cosine_loss,
    dense_pointmap_loss,
    pointmap_error,
    pointmap_features,
    rkd_angle_loss,
    rkd_distance_loss,
    scale_aligned_error,
)


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# A 3-4-5 right triangle (teacher) and an isosceles right triangle (student), as room features.
TEACHER = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
STUDENT = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def test_rkd_distance_matches_hand_computation() -> None:
    # Teacher pair distances 3, 4, 5 (mean 4); student 1, 1, sqrt 2 (mean (2 + sqrt 2) / 3).
    t = [3 / 4, 4 / 4, 5 / 4]
    mean_s = (2 + math.sqrt(2)) / 3
    s = [1 / mean_s, 1 / mean_s, math.sqrt(2) / mean_s]
    expected = sum(_huber(a - b) for a, b in zip(s, t, strict=True)) / 3
    actual = rkd_distance_loss(STUDENT, TEACHER)
    assert actual.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.0052219, rel=1e-4)  # the number written out by hand


def test_rkd_angle_matches_hand_computation() -> None:
    # Cosines at the vertices (0, 1, 2): teacher 0, 3/5, 4/5; student 0, 1/sqrt2, 1/sqrt2. Each angle
    # appears twice (ordered pairs i != k), so 6 triplets.
    teacher_cos = [0.0, 0.6, 0.8]
    student_cos = [0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]
    expected = 2 * sum(_huber(s - t) for s, t in zip(student_cos, teacher_cos, strict=True)) / 6
    actual = rkd_angle_loss(STUDENT, TEACHER)
    assert actual.item() == pytest.approx(expected, rel=1e-6)


def test_rkd_losses_are_scale_invariant_and_zero_on_similar_sets() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(5, 12)
    # A rotated, scaled and translated copy keeps every distance ratio and angle.
    rotation, _ = torch.linalg.qr(torch.randn(12, 12))
    student = 3.7 * teacher @ rotation + 1.5
    assert rkd_distance_loss(student, teacher).item() < 1e-10
    assert rkd_angle_loss(student, teacher).item() < 1e-10
    assert rkd_distance_loss(torch.randn(5, 12), teacher).item() > 1e-3


def test_cosine_loss_hand_value_and_scale_invariance() -> None:
    s = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    t = torch.tensor([[1.0, 1.0], [5.0, 5.0]])
    expected = ((1 - math.cos(math.pi / 4)) + 0.0) / 2
    assert cosine_loss(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_relation_losses_reject_too_small_batches() -> None:
    with pytest.raises(ValueError, match="at least 2 rooms"):
        rkd_distance_loss(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 3 rooms"):
        rkd_angle_loss(torch.zeros(2, 3), torch.zeros(2, 3))


def test_relation_gradients_are_finite_with_duplicate_rooms() -> None:
    """Two identical rooms give zero-length differences; the backward pass must not produce NaNs."""
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0], [3.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 2.0], [3.0, 3.0]])
    (rkd_distance_loss(student, teacher) + rkd_angle_loss(student, teacher)).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0


def _outputs(
    batch: int = 2, views: int = 3, h: int = 4, w: int = 6, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(views):
        out.append(
            {
                "pts3d_in_other_view": torch.randn(batch, h, w, 3, generator=g)
                + torch.tensor([0.0, 0.0, 3.0]),
                "conf": 1 + torch.rand(batch, h, w, generator=g) * 3,
                "pts3d_local": torch.randn(batch, h, w, 3, generator=g) + torch.tensor([0.0, 0.0, 2.0]),
                "conf_local": 1 + torch.rand(batch, h, w, generator=g) * 3,
            }
        )
    return out


def test_dense_loss_zero_on_identical_and_relative_to_scene_scale() -> None:
    teacher = _outputs()
    assert dense_pointmap_loss(teacher, teacher).item() == 0.0
    assert confidence_loss(teacher, teacher).item() == 0.0
    shifted = [{**o, "pts3d_in_other_view": o["pts3d_in_other_view"] + 0.1} for o in teacher]
    scaled_t = [{k: (v * 10 if k.startswith("pts") else v) for k, v in o.items()} for o in teacher]
    scaled_s = [{k: (v * 10 if k.startswith("pts") else v) for k, v in o.items()} for o in shifted]
    base = dense_pointmap_loss(shifted, teacher, ["global"]).item()
    assert base > 0
    # The same error in a 10x larger scene is the same relative error.
    assert dense_pointmap_loss(scaled_s, scaled_t, ["global"]).item() == pytest.approx(base, rel=1e-5)


def test_dense_loss_is_weighted_by_teacher_confidence() -> None:
    teacher = _outputs(batch=1, views=2)
    for o in teacher:
        o["conf"] = torch.ones_like(o["conf"])
        o["conf"][..., :3] = 9.0  # left half confident
    student = [dict(o) for o in teacher]
    for o in student:
        pts = o["pts3d_in_other_view"].clone()
        pts[..., 3:, :] += 1.0  # error only in the unconfident right half
        o["pts3d_in_other_view"] = pts
    weighted, unweighted, _ = pointmap_error(student, teacher, "global")
    # Weights 9 vs 1 over equal halves: the weighted mean is 1/10 of the error, the plain mean 1/2.
    assert weighted.item() == pytest.approx(unweighted.item() / 5, rel=1e-5)


def test_pointmap_features_shape_and_showroom_mean() -> None:
    out = _outputs(batch=2, views=3)
    feats = pointmap_features(out, ["global"], (1, 1))
    assert feats.shape == (2, 3 * 3)
    # (1, 1) pooling = ShowRoom's per-view mean point, concatenated over views.
    expected = torch.cat([o["pts3d_in_other_view"].mean(dim=(1, 2)) for o in out], dim=1)
    torch.testing.assert_close(feats, expected)
    assert pointmap_features(out, ["global", "local"], (2, 3)).shape == (2, 3 * 3 * 6 * 2)


def test_distillation_loss_weights_and_relation_scale() -> None:
    teacher, student = _outputs(batch=4, seed=0), _outputs(batch=4, seed=1)
    weights = {"dense": 1.0, "confidence": 0.5, "rkd_distance": 2.0, "rkd_angle": 3.0, "cosine": 0.25}
    loss = DistillationLoss(weights, ["global", "local"], ["global"], (1, 1))
    result = loss(student, teacher)
    assert set(result.terms) == set(weights)
    total = sum(weights[k] * v.item() for k, v in result.terms.items())
    assert result.total.item() == pytest.approx(total, rel=1e-6)
    scaled = loss(student, teacher, relation_scale=4.0)
    relation = 2.0 * result.terms["rkd_distance"].item() + 3.0 * result.terms["rkd_angle"].item()
    assert scaled.objective.item() == pytest.approx(total + 3 * relation, rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        DistillationLoss({"dense": 1.0, "kl": 1.0})


def test_scale_aligned_error_ignores_a_global_scale_but_not_shape() -> None:
    teacher = _outputs(batch=2, views=3)
    # Global head: one scale per room; local head: one scale per view.
    student = [
        {
            **o,
            "pts3d_in_other_view": 2.5 * o["pts3d_in_other_view"],
            "pts3d_local": (0.5 + v) * o["pts3d_local"],
        }
        for v, o in enumerate(teacher)
    ]
    for head in ("global", "local"):
        assert scale_aligned_error(student, teacher, head).max().item() < 1e-5
        assert pointmap_error(student, teacher, head)[0].min().item() > 0.3
    distorted = [
        {**o, "pts3d_in_other_view": o["pts3d_in_other_view"] * torch.tensor([1.0, 1.0, 1.3])}
        for o in teacher
    ]
    assert scale_aligned_error(distorted, teacher, "global").min().item() > 0.01
