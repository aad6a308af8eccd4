"""Distillation losses between Fast3R teacher and student outputs.

Two families, both configurable by weight:

* **dense** (per pixel): the student's pointmap must land on the teacher's. The error is the Euclidean
  distance between the two points divided by the teacher's mean point distance (per room for the global
  head, per view for the local head, whose scale is independent per view), averaged with the teacher's
  confidence as the weight. ``confidence`` adds an L1 loss between log confidences, so the student also
  learns *where* it should be trusted (the node filters points by confidence).
* **relation** (ShowRoom's): every room of the batch becomes one feature vector built from the predicted
  pointmaps (each view's map average-pooled to ``feature_pool`` cells, concatenated over views and heads;
  ``(1, 1)`` is ShowRoom's per-view mean point). RKD distance matches the normalised pairwise distances
  between rooms, RKD angle the angles of all room triplets, and the cosine loss the direction of each
  room's (L2-normalised) feature.

Definitions (N rooms, features f_i):

* RKD distance: d_ij = ||f_i - f_j|| over pairs i < j, divided by their mean; loss = mean over pairs of
  smooth-L1(d^S_ij - d^T_ij) with beta 1 (Huber, as in RKD).
* RKD angle: for every vertex j and ordered pair i != k (both != j),
  a_ijk = <unit(f_i - f_j), unit(f_k - f_j)>; loss = mean over those N(N-1)(N-2) triplets of
  smooth-L1(a^S - a^T).
* cosine: mean over rooms of 1 - cos(f^S_i, f^T_i).

Every dense term is a mean of per-room terms, so k half-batches with accumulated gradients equal one full
batch. The relation terms are defined *between* the rooms of one batch, so they change with the batch
composition: under DDP the trainer gathers all ranks' features first (the global batch), but gradient
accumulation splits the relations (documented in docs/distillation.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from showroom_ros.distillation.config import KNOWN_HEADS, KNOWN_LOSSES, RELATION_LOSSES

Outputs = Sequence[Mapping[str, torch.Tensor]]
#: Output keys of each Fast3R head: (pointmap, confidence).
HEAD_KEYS = {"global": ("pts3d_in_other_view", "conf"), "local": ("pts3d_local", "conf_local")}
_MIN_SCALE = 1e-6


def stack_head(outputs: Outputs, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One head's pointmaps (B, S, H, W, 3) and confidences (B, S, H, W) from the per-view output dicts."""
    pts_key, conf_key = HEAD_KEYS[head]
    if pts_key not in outputs[0]:
        raise ValueError(
            f"the model output has no {pts_key!r}: the {head} head is missing (with_local_head false?)"
        )
    pts = torch.stack([o[pts_key] for o in outputs], dim=1).float()
    conf = torch.stack([o[conf_key] for o in outputs], dim=1).float()
    return pts, conf


def _teacher_scale(teacher_pts: torch.Tensor, per_view: bool) -> torch.Tensor:
    """Mean distance of the teacher's points from the origin, broadcastable to (B, S, H, W)."""
    norms = teacher_pts.norm(dim=-1)  # (B, S, H, W)
    dims = (2, 3) if per_view else (1, 2, 3)
    return norms.mean(dim=dims, keepdim=True).clamp_min(_MIN_SCALE)


def pointmap_error(
    student: Outputs, teacher: Outputs, head: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-room errors (B,) of one head: confidence-weighted, unweighted, and mean |log conf difference|.

    Errors are relative to the teacher's scale (see the module docstring): 0.05 means the student's points
    are off by 5% of the scene's mean distance from the camera.
    """
    s_pts, s_conf = stack_head(student, head)
    t_pts, t_conf = stack_head(teacher, head)
    if s_pts.shape != t_pts.shape:
        raise ValueError(
            f"student and teacher {head} pointmaps differ in shape: {s_pts.shape} vs {t_pts.shape}"
        )
    t_pts, t_conf = t_pts.detach(), t_conf.detach()
    scale = _teacher_scale(t_pts, per_view=head == "local")
    error = (s_pts - t_pts).norm(dim=-1) / scale  # (B, S, H, W)
    weight = t_conf
    dims = (1, 2, 3)
    weighted = (weight * error).sum(dim=dims) / weight.sum(dim=dims)
    unweighted = error.mean(dim=dims)
    conf_error = (s_conf.clamp_min(1.0).log() - t_conf.clamp_min(1.0).log()).abs().mean(dim=dims)
    return weighted, unweighted, conf_error


def scale_aligned_error(student: Outputs, teacher: Outputs, head: str) -> torch.Tensor:
    """Per-room confidence-weighted relative error (B,) after the best scale fit of student to teacher.

    Fast3R's pointmaps have an arbitrary overall scale (a metric system rescales them anyway), so this
    error matters as much as the raw one; it also judges scale-blind losses (RKD, cosine) fairly. The scale is
    s = sum(w <S, T>) / sum(w |S|^2) per room (global head) or per view (local head), w = teacher confidence.
    """
    s_pts, _ = stack_head(student, head)
    t_pts, t_conf = stack_head(teacher, head)
    t_pts, weight = t_pts.detach(), t_conf.detach()
    dims = (2, 3) if head == "local" else (1, 2, 3)
    numerator = (weight * (s_pts * t_pts).sum(dim=-1)).sum(dim=dims, keepdim=True)
    denominator = (weight * s_pts.pow(2).sum(dim=-1)).sum(dim=dims, keepdim=True).clamp_min(1e-12)
    scale = (numerator / denominator).unsqueeze(-1)
    error = (scale * s_pts - t_pts).norm(dim=-1) / _teacher_scale(t_pts, per_view=head == "local")
    return (weight * error).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3))


def dense_pointmap_loss(
    student: Outputs, teacher: Outputs, heads: Sequence[str] = KNOWN_HEADS
) -> torch.Tensor:
    """Confidence-weighted relative pointmap error, averaged over rooms and heads."""
    return torch.stack([pointmap_error(student, teacher, h)[0].mean() for h in heads]).mean()


def confidence_loss(student: Outputs, teacher: Outputs, heads: Sequence[str] = KNOWN_HEADS) -> torch.Tensor:
    """L1 between log confidences (confidence is >= 1, so the log is >= 0), averaged over rooms and heads."""
    return torch.stack([pointmap_error(student, teacher, h)[2].mean() for h in heads]).mean()


def pointmap_features(
    outputs: Outputs, heads: Sequence[str] = ("global",), pool: tuple[int, int] = (1, 1)
) -> torch.Tensor:
    """One feature vector per room (B, S * len(heads) * 3 * rows * cols) from the predicted pointmaps."""
    parts = []
    for head in heads:
        pts, _ = stack_head(outputs, head)  # (B, S, H, W, 3)
        batch, views, height, width, _ = pts.shape
        maps = pts.permute(0, 1, 4, 2, 3).reshape(batch * views, 3, height, width)
        pooled = F.adaptive_avg_pool2d(maps, pool)  # (B*S, 3, rows, cols)
        parts.append(pooled.reshape(batch, -1))
    return torch.cat(parts, dim=1)


def _pair_distances(features: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.triu_indices(features.shape[0], features.shape[0], offset=1, device=features.device)
    diff = features[rows] - features[cols]
    return diff.pow(2).sum(dim=1).clamp_min(1e-12).sqrt()


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD distance loss between (N, F) feature sets (N >= 2); see the module docstring."""
    if student.shape[0] < 2:
        raise ValueError(f"RKD distance needs at least 2 rooms in the batch, got {student.shape[0]}")
    with torch.no_grad():
        t_dist = _pair_distances(teacher.float())
        t_dist = t_dist / t_dist.mean().clamp_min(1e-12)
    s_dist = _pair_distances(student.float())
    s_dist = s_dist / s_dist.mean().clamp_min(1e-12)
    return F.smooth_l1_loss(s_dist, t_dist, beta=1.0)


def _triplet_angles(features: torch.Tensor) -> torch.Tensor:
    """Cosines a[j, i, k] of the angle at vertex j between rooms i and k, for the valid triplets only."""
    n = features.shape[0]
    eye = torch.eye(n, device=features.device, dtype=features.dtype)
    # diff[j, i] = f_i - f_j. The diagonal (i == j) is zero; shift it so normalising it has a finite
    # gradient: those entries are masked out below and must not inject NaNs into the backward pass.
    diff = features.unsqueeze(0) - features.unsqueeze(1) + eye.unsqueeze(-1)
    unit = F.normalize(diff, p=2, dim=2)
    angles = torch.bmm(unit, unit.transpose(1, 2))  # (j, i, k)
    index = torch.arange(n, device=features.device)
    j, i, k = torch.meshgrid(index, index, index, indexing="ij")
    valid = (i != j) & (k != j) & (i != k)
    return angles[valid]


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle loss between (N, F) feature sets (N >= 3); see the module docstring."""
    if student.shape[0] < 3:
        raise ValueError(f"RKD angle needs at least 3 rooms in the batch, got {student.shape[0]}")
    with torch.no_grad():
        t_angles = _triplet_angles(teacher.float())
    s_angles = _triplet_angles(student.float())
    return F.smooth_l1_loss(s_angles, t_angles, beta=1.0)


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over rooms of 1 - cos(student feature, teacher feature) (features L2-normalised)."""
    s = F.normalize(student.float(), p=2, dim=1)
    t = F.normalize(teacher.float().detach(), p=2, dim=1)
    return (1.0 - (s * t).sum(dim=1)).mean()


@dataclass
class LossResult:
    """``objective`` is what to backpropagate; ``terms`` are the unweighted values (for logs)."""

    objective: torch.Tensor
    total: torch.Tensor
    terms: dict[str, torch.Tensor]


GatherFn = Callable[[torch.Tensor], torch.Tensor]


class DistillationLoss:
    """Weighted sum of the configured terms (names in :data:`KNOWN_LOSSES`, weight 0 = off)."""

    def __init__(
        self,
        weights: Mapping[str, float],
        dense_heads: Sequence[str] = KNOWN_HEADS,
        feature_heads: Sequence[str] = ("global",),
        feature_pool: tuple[int, int] = (1, 1),
    ) -> None:
        unknown = sorted(set(weights) - set(KNOWN_LOSSES))
        if unknown:
            raise ValueError(f"unknown loss {unknown}; known losses: {list(KNOWN_LOSSES)}")
        self.weights = {name: float(w) for name, w in weights.items() if float(w) != 0.0}
        if not self.weights:
            raise ValueError("every loss weight is 0; enable at least one loss")
        self.dense_heads = tuple(dense_heads)
        self.feature_heads = tuple(feature_heads)
        self.feature_pool = (int(feature_pool[0]), int(feature_pool[1]))

    @property
    def uses_features(self) -> bool:
        return any(name in self.weights for name in ("rkd_distance", "rkd_angle", "cosine"))

    def __call__(
        self,
        student: Outputs,
        teacher: Outputs,
        gather: GatherFn | None = None,
        relation_scale: float = 1.0,
    ) -> LossResult:
        """Compute every active term.

        ``gather`` (DDP) maps this rank's (B, F) features to the global batch's, keeping the gradient for
        the local rows; the relation terms are then the same on every rank, and ``relation_scale`` (the
        world size) compensates DDP's gradient averaging so their gradient equals the single-process one.
        """
        terms: dict[str, torch.Tensor] = {}
        if "dense" in self.weights or "confidence" in self.weights:
            per_head = [pointmap_error(student, teacher, h) for h in self.dense_heads]
            if "dense" in self.weights:
                terms["dense"] = torch.stack([w.mean() for w, _, _ in per_head]).mean()
            if "confidence" in self.weights:
                terms["confidence"] = torch.stack([c.mean() for _, _, c in per_head]).mean()
        if self.uses_features:
            s_feat = pointmap_features(student, self.feature_heads, self.feature_pool)
            with torch.no_grad():
                t_feat = pointmap_features(teacher, self.feature_heads, self.feature_pool)
            if "cosine" in self.weights:
                terms["cosine"] = cosine_loss(s_feat, t_feat)
            if any(name in self.weights for name in RELATION_LOSSES):
                if gather is not None:
                    s_feat, t_feat = gather(s_feat), gather(t_feat)
                if "rkd_distance" in self.weights:
                    terms["rkd_distance"] = rkd_distance_loss(s_feat, t_feat)
                if "rkd_angle" in self.weights:
                    terms["rkd_angle"] = rkd_angle_loss(s_feat, t_feat)
        total = sum(self.weights[name] * value for name, value in terms.items())
        objective = sum(
            self.weights[name] * value * (relation_scale if name in RELATION_LOSSES else 1.0)
            for name, value in terms.items()
        )
        assert isinstance(total, torch.Tensor) and isinstance(objective, torch.Tensor)
        return LossResult(objective=objective, total=total, terms=terms)
