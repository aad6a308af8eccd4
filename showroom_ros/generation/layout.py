"""Which keyframe to extend and which way, and whether a generated view still looks like the room.

:func:`choose_extension` reproduces ShowRoom's ``process_images_with_pose`` (its "discriminator": the
ST-RoomNet layouts plus camera poses of three photos decide one photo and a side). The rules are
ShowRoom's, including its quirks; they are listed in ``docs/generation.md``. ShowRoom only handles
exactly three photos; the generalisation to other counts is ours and documented on the function.

:func:`check_layout_plausibility` is ours: a turn about the camera centre moves every surface by a
known homography, so the layout of a generated view must agree with the source keyframe's layout
moved by that homography wherever the source saw the room; a generated view whose walls, floor and
ceiling have moved elsewhere (or whose estimated homography folds through infinity) is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import cv2
import numpy as np

from showroom_ros.generation.st_roomnet import CEILING, FLOOR, FRONT_WALL, LEFT_WALL, RIGHT_WALL, RoomLayout
from showroom_ros.generation.view_synthesis import rotation_homography, same_centre
from showroom_ros.geometry.camera import CameraIntrinsics

# ShowRoom's constants (generate2d/discriminator/discriminator2d.py), for 400x400 label maps.
PIXEL_THRESHOLD = 5000
CENTER_THRESHOLD = 0.25

LEFT, RIGHT = "left", "right"
ALL_SURFACES = (FRONT_WALL, LEFT_WALL, RIGHT_WALL, FLOOR, CEILING)


@dataclass(frozen=True)
class ShowRoomRules:
    """The thresholds of ShowRoom's decision, and the sign convention of its side test.

    Defaults are those of ``SuA0409/ShowRoom`` ``generate2d/discriminator/discriminator2d.py`` as read
    in three stored versions of that file (commits 0d30e1d, 76a1a7e and an earlier function-style
    one): a non-frontal view is "near" a frontal one within 55 deg, "far" from 90 deg, and the side
    is ``left`` when the triple product is positive (ties and NaN: ``right``). The project's fixture
    README describes 70 deg and the opposite sign; ``ShowRoomRules(near_angle_deg=70.0,
    positive_side=RIGHT)`` reproduces that description.
    """

    near_angle_deg: float = 55.0
    far_angle_deg: float = 90.0
    overlap_angle_deg: float = 45.0  # <= this (or >= 180 - this) two frontal views overlap or face away
    same_direction_cosine: float = 0.8
    positive_side: str = LEFT

    def __post_init__(self) -> None:
        if self.positive_side not in (LEFT, RIGHT):
            raise ValueError(f"positive_side must be 'left' or 'right', got {self.positive_side!r}")


UPSTREAM_RULES = ShowRoomRules()


def label_counts(labels: np.ndarray) -> dict[int, int]:
    """Pixels per surface label (1..5); absent labels count 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.uint8).ravel(), minlength=256)
    return {label: int(counts[label]) for label in ALL_SURFACES}


def front_wall_centre(labels: np.ndarray) -> tuple[int, int] | None:
    """Centre (x, y) of the bounding box of the largest external contour of the front-wall mask."""
    mask = (np.asarray(labels) == FRONT_WALL).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    x, y, w, h = cv2.boundingRect(largest)
    return x + w // 2, y + h // 2


def is_front_view(
    labels: np.ndarray, pixel_threshold: int = PIXEL_THRESHOLD, center_threshold: float = CENTER_THRESHOLD
) -> bool:
    """ShowRoom's frontal test: all five surfaces visible, and the front wall roughly centred."""
    counts = label_counts(labels)
    valid = {label for label, count in counts.items() if count >= pixel_threshold}
    if len(valid) < 5 or FRONT_WALL not in valid:
        return False
    centre = front_wall_centre(labels)
    if centre is None:
        return False
    height, width = np.asarray(labels).shape[:2]
    centred_x = abs(centre[0] - width // 2) < center_threshold * width
    centred_y = abs(centre[1] - height // 2) < center_threshold * height
    return bool(centred_x and centred_y)


def viewing_direction(pose_c2w: np.ndarray) -> np.ndarray:
    """Unit optical axis (camera +z) in the world."""
    axis = np.asarray(pose_c2w, dtype=np.float64)[:3, 2]
    return axis / max(float(np.linalg.norm(axis)), 1e-12)


def viewing_angle_deg(pose_a: np.ndarray, pose_b: np.ndarray) -> float:
    cosine = float(np.clip(viewing_direction(pose_a) @ viewing_direction(pose_b), -1.0, 1.0))
    return float(np.degrees(np.arccos(cosine)))


def relative_side(pose_a: np.ndarray, pose_b: np.ndarray, rules: ShowRoomRules = UPSTREAM_RULES) -> str:
    """ShowRoom's side of camera b relative to camera a, from the sign of (d_a x d_b) . baseline.

    Positive gives ``rules.positive_side``; zero and NaN (same position) give the other side. The
    triple product vanishes when both optical axes and the baseline are coplanar (level cameras at
    one height), so the answer then hangs on small height or tilt differences; it is reproduced as
    is. ShowRoom first left-multiplies all poses by a fixed rotation (its Fast3R viewer alignment);
    that matrix is a proper rotation (its rows satisfy right x up = forward), so it changes neither
    angles nor this sign, and it is not applied here.
    """
    position_a = np.asarray(pose_a, dtype=np.float64)[:3, 3]
    position_b = np.asarray(pose_b, dtype=np.float64)[:3, 3]
    baseline = position_b - position_a
    norm = float(np.linalg.norm(baseline))
    with np.errstate(invalid="ignore", divide="ignore"):
        baseline = baseline / norm
        score = float(np.cross(viewing_direction(pose_a), viewing_direction(pose_b)) @ baseline)
    return rules.positive_side if score > 0 else opposite(rules.positive_side)


def opposite(side: str) -> str:
    return LEFT if side == RIGHT else RIGHT


@dataclass
class ExtensionChoice:
    """Keyframe to extend (None: nothing to extend) and which way, with ShowRoom's reasoning."""

    keyframe_index: int | None
    direction: str | None
    reason: str


def compare_wall_areas(
    first: int,
    second: int,
    labels: Sequence[np.ndarray],
    angle_deg: float,
    side: str,
    rules: ShowRoomRules = UPSTREAM_RULES,
) -> ExtensionChoice:
    """ShowRoom's wall-area comparison of two frontal views (``side`` = side of ``second`` from ``first``).

    Extend the view whose outer wall shows more surface, towards that wall. Nearly overlapping or
    opposite views (angle <= 45 or >= 135 deg) extend the first one to the right (ShowRoom's log says
    "left" there, but its returned value is right).
    """
    if angle_deg <= rules.overlap_angle_deg or angle_deg >= 180.0 - rules.overlap_angle_deg:
        return ExtensionChoice(
            first,
            RIGHT,
            f"views {first} and {second} are {angle_deg:.0f} deg apart: extend {first} to the right",
        )
    counts_first, counts_second = label_counts(labels[first]), label_counts(labels[second])
    if side == RIGHT:
        outer_first, outer_second = counts_first[LEFT_WALL], counts_second[RIGHT_WALL]
        if outer_first > outer_second:
            return ExtensionChoice(
                first,
                LEFT,
                f"left wall of {first} ({outer_first} px) > right wall of {second} ({outer_second} px)",
            )
        return ExtensionChoice(
            second,
            RIGHT,
            f"right wall of {second} ({outer_second} px) >= left wall of {first} ({outer_first} px)",
        )
    outer_first, outer_second = counts_first[RIGHT_WALL], counts_second[LEFT_WALL]
    if outer_first > outer_second:
        return ExtensionChoice(
            first,
            RIGHT,
            f"right wall of {first} ({outer_first} px) > left wall of {second} ({outer_second} px)",
        )
    return ExtensionChoice(
        second, LEFT, f"left wall of {second} ({outer_second} px) >= right wall of {first} ({outer_first} px)"
    )


def _choose_among_three(
    indices: tuple[int, int, int],
    labels: Sequence[np.ndarray],
    poses: Sequence[np.ndarray],
    frontal: Sequence[bool],
    rules: ShowRoomRules,
) -> ExtensionChoice:
    """ShowRoom's ``process_images_with_pose`` on three views."""
    front = [i for i in indices if frontal[i]]
    other = [i for i in indices if not frontal[i]]
    if len(front) == 3:
        return ExtensionChoice(None, None, f"views {indices} are all frontal: nothing to extend")
    if len(front) == 0:
        return ExtensionChoice(None, None, f"none of views {indices} is frontal: nothing to extend")

    def side(a: int, b: int) -> str:
        return relative_side(poses[a], poses[b], rules)

    def walls(a: int, b: int) -> ExtensionChoice:
        return compare_wall_areas(a, b, labels, viewing_angle_deg(poses[a], poses[b]), side(a, b), rules)

    if len(front) == 2:
        z1, z2 = front
        nf = other[0]
        a1, a2 = viewing_angle_deg(poses[z1], poses[nf]), viewing_angle_deg(poses[z2], poses[nf])
        near, far = rules.near_angle_deg, rules.far_angle_deg
        if (a1 <= near and a2 <= near) or (a1 >= far and a2 >= far):
            return walls(z1, z2)
        if a1 <= near < a2:
            return ExtensionChoice(
                z2,
                side(z2, nf),
                f"view {z1} is close to non-frontal {nf} ({a1:.0f} deg), {z2} is not ({a2:.0f} deg)",
            )
        if a2 <= near < a1:
            return ExtensionChoice(
                z1,
                side(z1, nf),
                f"view {z2} is close to non-frontal {nf} ({a2:.0f} deg), {z1} is not ({a1:.0f} deg)",
            )
        return walls(z1, z2)
    f = front[0]
    n1, n2 = other
    if float(viewing_direction(poses[n1]) @ viewing_direction(poses[n2])) > rules.same_direction_cosine:
        towards = side(f, n1)
        return ExtensionChoice(
            f,
            opposite(towards),
            f"only {f} is frontal and {n1}, {n2} look the same way "
            f"({towards} of it): extend {f} away from them",
        )
    return ExtensionChoice(
        None, None, f"only {f} is frontal and {n1}, {n2} look different ways: nothing to extend"
    )


def choose_extension(
    labels: Sequence[np.ndarray], poses: Sequence[np.ndarray], rules: ShowRoomRules = UPSTREAM_RULES
) -> ExtensionChoice:
    """ShowRoom's decision for any number of keyframes (ST-RoomNet label maps and camera-to-map poses).

    * 3 keyframes: exactly ShowRoom's rules.
    * more than 3: ShowRoom's rules on every triple in index order; the first triple that decides to
      extend wins (ours: ShowRoom never sees more than three photos).
    * 2 keyframes: both frontal -> the wall-area comparison; one frontal -> extend it away from the
      other, as ShowRoom's one-frontal case does (ours).
    * 1 keyframe: frontal -> extend towards its larger side wall (ours).
    """
    if len(labels) != len(poses):
        raise ValueError(f"got {len(labels)} layouts but {len(poses)} poses")
    if len(labels) == 0:
        raise ValueError("no keyframes to choose from")
    frontal = [is_front_view(label_map) for label_map in labels]
    count = len(labels)
    if count == 1:
        if not frontal[0]:
            return ExtensionChoice(None, None, "the only view is not frontal: nothing to extend")
        counts = label_counts(labels[0])
        side = LEFT if counts[LEFT_WALL] > counts[RIGHT_WALL] else RIGHT
        return ExtensionChoice(0, side, f"the only view is frontal; its {side} wall is the larger")
    if count == 2:
        if all(frontal):
            return compare_wall_areas(
                0,
                1,
                labels,
                viewing_angle_deg(poses[0], poses[1]),
                relative_side(poses[0], poses[1], rules),
                rules,
            )
        if not any(frontal):
            return ExtensionChoice(None, None, "neither view is frontal: nothing to extend")
        f, n = (0, 1) if frontal[0] else (1, 0)
        side = relative_side(poses[f], poses[n], rules)
        return ExtensionChoice(
            f, opposite(side), f"only {f} is frontal; {n} is on its {side}: extend {f} away"
        )
    for triple in combinations(range(count), 3):
        choice = _choose_among_three(triple, labels, poses, frontal, rules)
        if count == 3:
            return choice
        if choice.keyframe_index is not None:
            choice.reason = f"views {triple}: {choice.reason}"
            return choice
    return ExtensionChoice(
        None, None, f"no triple of the {count} views leads to an extension ({sum(frontal)} of them frontal)"
    )


# --- plausibility of a generated view -------------------------------------------------------------


@dataclass
class PlausibilityResult:
    plausible: bool
    agreement: float | None  # fraction of comparable pixels whose label matches the expectation
    reason: str


def homography_folds(theta: np.ndarray) -> bool:
    """True when the layout homography's w changes sign in the image (the layout wraps through infinity)."""
    theta = np.asarray(theta, dtype=np.float64).reshape(8)
    corners = np.array([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    w = theta[6] * corners[:, 0] + theta[7] * corners[:, 1] + 1.0
    return bool(not np.all(np.isfinite(theta)) or not (np.all(w > 0) or np.all(w < 0)))


def expected_layout(
    source_layout: RoomLayout,
    source_pose: np.ndarray,
    source_intrinsics: CameraIntrinsics,
    target_pose: np.ndarray,
    target_intrinsics: CameraIntrinsics,
) -> np.ndarray | None:
    """The source keyframe's layout as the turned camera must see it (400x400, 0 = not seen by the source).

    Only defined for a camera turned about its own centre (then a homography; no depth needed).
    """
    if not same_centre(source_pose, target_pose):
        return None
    source_labels = source_layout.labels_at(source_intrinsics.width, source_intrinsics.height)
    homography = rotation_homography(source_pose, source_intrinsics, target_pose, target_intrinsics)
    warped = cv2.warpPerspective(
        source_labels,
        homography,
        (target_intrinsics.width, target_intrinsics.height),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return cv2.resize(warped, source_layout.labels.shape[::-1], interpolation=cv2.INTER_NEAREST)


def check_layout_plausibility(
    generated: RoomLayout,
    expected: np.ndarray | None = None,
    min_agreement: float = 0.6,
    min_comparable_fraction: float = 0.1,
    min_surfaces: int = 2,
    min_surface_fraction: float = 0.02,
) -> PlausibilityResult:
    """Accept a generated view when its ST-RoomNet layout is a sane room that fits what was known.

    Rejected when the homography folds (w changes sign in the image), when fewer than
    ``min_surfaces`` surfaces cover ``min_surface_fraction`` of the image each, or when, over the
    pixels the source keyframe saw (``expected`` > 0, at least ``min_comparable_fraction`` of them),
    fewer than ``min_agreement`` carry the expected label.
    """
    if homography_folds(generated.theta):
        return PlausibilityResult(False, None, "layout homography folds through infinity inside the image")
    counts = label_counts(generated.labels)
    total = generated.labels.size
    visible = [label for label, count in counts.items() if count >= min_surface_fraction * total]
    if len(visible) < min_surfaces:
        return PlausibilityResult(
            False,
            None,
            f"layout shows only {len(visible)} surface(s); a room view shows at least {min_surfaces}",
        )
    if expected is None:
        return PlausibilityResult(
            True, None, f"layout shows {len(visible)} surfaces (no expected layout to compare)"
        )
    if expected.shape != generated.labels.shape:
        raise ValueError(
            f"expected layout {expected.shape} and generated {generated.labels.shape} differ in size"
        )
    comparable = expected > 0
    if comparable.mean() < min_comparable_fraction:
        return PlausibilityResult(True, None, "too little of the view was seen before to compare layouts")
    agreement = float((generated.labels[comparable] == expected[comparable]).mean())
    if agreement < min_agreement:
        return PlausibilityResult(
            False,
            agreement,
            f"layout agrees with the known room on only {agreement:.0%} "
            f"of the known pixels (need {min_agreement:.0%})",
        )
    return PlausibilityResult(
        True, agreement, f"layout agrees with the known room on {agreement:.0%} of the known pixels"
    )
