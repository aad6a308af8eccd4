"""The one similarity transform and its Umeyama fit (``geometry/similarity.py``), over generated transforms.

Transforms are drawn over 4 decades of scale, any rotation, reflections included where the algebra must
hold for them; point sets are drawn anisotropic (not only round clouds). The fit is checked against the
exact answer on noise-free data and against scipy's Kabsch solver (``Rotation.align_vectors``) on any data,
mirrored or noisy; degenerate inputs must be refused with a reason, never fitted silently.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from showroom_ros.geometry.similarity import (
    DegenerateGeometryError,
    Similarity,
    spread_profile,
    trajectory_alignment,
    umeyama,
)

SEEDS = st.integers(0, 2**32 - 1)
SCALES = st.floats(-2.0, 2.0).map(lambda exponent: 10.0**exponent)
MIRROR = np.diag([1.0, 1.0, -1.0])


@st.composite
def similarities(draw: st.DrawFn, reflections: bool = False) -> Similarity:
    """Any scale in [0.01, 100], any rotation (or, with ``reflections``, any orthogonal matrix), |t| <= 100."""
    rotation = Rotation.random(random_state=draw(SEEDS)).as_matrix()
    if reflections and draw(st.booleans()):
        rotation = rotation @ MIRROR
    translation = np.array(draw(st.lists(st.floats(-100, 100), min_size=3, max_size=3)))
    return Similarity(scale=draw(SCALES), rotation=rotation, translation=translation)


@st.composite
def point_sets(draw: st.DrawFn, min_size: int = 3) -> np.ndarray:
    """``min_size`` to 60 points along 3 axes of random lengths (ratios down to 1:20), randomly oriented."""
    rng = np.random.default_rng(draw(SEEDS))
    count = draw(st.integers(min_size, 60))
    axes = np.array(draw(st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3))) * draw(SCALES)
    points = rng.normal(size=(count, 3)) * axes @ Rotation.random(random_state=rng).as_matrix().T
    if min_size >= 3:  # sets meant for a fit: a handful of points can still fall nearly on a plane
        profile = spread_profile(points)
        assume(profile[2] > 1e-3 * profile[0])
    return points + rng.uniform(-10, 10, 3)


def _close(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * max(scale, 1.0))


# --- the class ---------------------------------------------------------------------------------------


@given(points=point_sets(), scale=SCALES)
def test_fields_are_keyword_only_and_default_to_the_identity(points: np.ndarray, scale: float) -> None:
    with pytest.raises(TypeError):
        Similarity(scale, np.eye(3), np.zeros(3))  # type: ignore[misc]
    _close(Similarity().transform_points(points), points)
    _close(Similarity(scale=scale).transform_points(points), scale * points, scale)
    np.testing.assert_array_equal(Similarity().matrix, np.eye(4))


@given(
    bad_scale=st.one_of(st.floats(max_value=0.0), st.sampled_from([np.nan, np.inf, -np.inf])),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4)).filter(lambda s: s != (3, 3)),
    index=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    poison=st.sampled_from([np.nan, np.inf, -np.inf]),
    poison_translation=st.booleans(),
)
def test_invalid_similarities_are_refused(
    bad_scale: float, shape: tuple[int, int], index: tuple[int, int], poison: float, poison_translation: bool
) -> None:
    with pytest.raises(ValueError, match="positive finite"):
        Similarity(scale=bad_scale)
    with pytest.raises(ValueError, match="3x3 rotation"):
        Similarity(rotation=np.eye(*shape))
    with pytest.raises(ValueError, match="3-vector"):
        Similarity(translation=np.zeros(shape[0] + 3))
    rotation, translation = np.eye(3), np.zeros(3)
    if poison_translation:
        translation[index[0]] = poison
    else:
        rotation[index] = poison
    with pytest.raises(ValueError, match="finite"):
        Similarity(rotation=rotation, translation=translation)


@settings(max_examples=200)
@given(a=similarities(reflections=True), b=similarities(reflections=True), points=point_sets(min_size=1))
def test_compose_inverse_matrix_and_poses_agree_for_every_similarity(
    a: Similarity, b: Similarity, points: np.ndarray
) -> None:
    size = float(np.abs(points).max()) * max(a.scale, 1.0) * max(b.scale, 1.0) + 100.0 * (1 + a.scale)
    composed = a.compose(b)
    np.testing.assert_allclose(
        composed.transform_points(points), a.transform_points(b.transform_points(points)), atol=1e-9 * size
    )
    np.testing.assert_allclose(a.inverse().transform_points(a.transform_points(points)), points, atol=1e-9 * size)
    np.testing.assert_allclose(a.inverse().compose(a).matrix, np.eye(4), atol=1e-9 * size)
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ a.matrix.T
    np.testing.assert_allclose(homogeneous[:, :3], a.transform_points(points), atol=1e-9 * size)
    # Poses stay rigid: the rotation turns the camera, the scale moves only its centre.
    poses = np.repeat(np.eye(4)[None], len(points), axis=0)
    poses[:, :3, :3] = b.rotation
    poses[:, :3, 3] = points
    moved = a.transform_poses(poses)
    np.testing.assert_allclose(moved[:, :3, :3], a.rotation @ b.rotation @ np.eye(3)[None].repeat(len(points), 0))
    np.testing.assert_allclose(moved[:, :3, 3], a.transform_points(points), atol=1e-9 * size)
    np.testing.assert_array_equal(moved[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (len(points), 1)))


@given(similarity=similarities(), points=point_sets(min_size=1))
def test_from_rigid_scales_first_then_moves(similarity: Similarity, points: np.ndarray) -> None:
    rigid = np.eye(4)
    rigid[:3, :3], rigid[:3, 3] = similarity.rotation, similarity.translation
    built = Similarity.from_rigid(rigid, scale=similarity.scale)
    expected = (similarity.scale * points) @ similarity.rotation.T + similarity.translation
    np.testing.assert_allclose(built.transform_points(points), expected, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="4x4"):
        Similarity.from_rigid(rigid[:3])


@given(similarity=similarities())
def test_a_similarity_cannot_change_after_it_was_checked(similarity: Similarity) -> None:
    source_rotation = np.eye(3)
    built = Similarity(rotation=source_rotation)
    source_rotation[0, 0] = np.nan  # the caller's array is copied, not kept
    assert np.isfinite(built.rotation).all()
    with pytest.raises(ValueError, match="read-only"):
        similarity.rotation[0, 0] = 2.0
    with pytest.raises(ValueError, match="read-only"):
        similarity.translation[0] = 2.0
    with pytest.raises(AttributeError):
        similarity.scale = 2.0  # type: ignore[misc]


# --- the fit -----------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(truth=similarities(), source=point_sets())
def test_umeyama_recovers_every_proper_similarity_exactly(truth: Similarity, source: np.ndarray) -> None:
    target = truth.transform_points(source)
    estimate = umeyama(source, target)
    assert estimate.scale == pytest.approx(truth.scale, rel=1e-7)
    np.testing.assert_allclose(estimate.rotation, truth.rotation, atol=1e-7)
    np.testing.assert_allclose(estimate.transform_points(source), target, atol=1e-7 * float(np.abs(target).max()))
    rigid = umeyama(source, target / truth.scale, with_scale=False)
    assert rigid.scale == 1.0
    np.testing.assert_allclose(rigid.rotation, truth.rotation, atol=1e-7)


@settings(max_examples=200)
@given(
    transform=similarities(reflections=True),
    source=point_sets(),
    noise=st.floats(0.0, 0.5),
    seed=SEEDS,
)
def test_umeyama_is_the_least_squares_optimum_on_any_data(
    transform: Similarity, source: np.ndarray, noise: float, seed: int
) -> None:
    """Mirrored or noisy data: the best proper rotation (scipy's Kabsch), then the best scale and shift."""
    target = transform.transform_points(source)
    spread = spread_profile(target)
    target = target + np.random.default_rng(seed).normal(scale=noise * spread[0], size=target.shape)
    source_centred, target_centred = source - source.mean(0), target - target.mean(0)
    singular = np.linalg.svd(target_centred.T @ source_centred, compute_uv=False)
    assume(singular[1] - singular[2] > 1e-6 * singular[0])  # otherwise the optimum rotation is not unique
    estimate = umeyama(source, target, min_planarity=0.0)
    kabsch = Rotation.align_vectors(target_centred, source_centred)[0].as_matrix()
    assert np.linalg.det(estimate.rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(estimate.rotation, kabsch, atol=1e-6)
    rotated = source_centred @ kabsch.T
    best_scale = float((rotated * target_centred).sum() / (source_centred**2).sum())
    assert estimate.scale == pytest.approx(best_scale, rel=1e-6)
    np.testing.assert_allclose(estimate.transform_points(source).mean(0), target.mean(0), atol=1e-6 * spread[0] + 1e-9)


@given(
    source=point_sets(),
    count=st.integers(0, 2),
    which=st.sampled_from(["source", "target"]),
    direction=st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(lambda d: np.linalg.norm(d) > 0.1),
    truth=similarities(),
)
def test_umeyama_refuses_degenerate_point_sets(
    source: np.ndarray, count: int, which: str, direction: list[float], truth: Similarity
) -> None:
    target = truth.transform_points(source)
    with pytest.raises(DegenerateGeometryError, match="at least 3"):
        umeyama(source[:count], target[:count])

    def spoil(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (points, target) if which == "source" else (source, points)

    coincident = np.repeat(source[:1], len(source), axis=0)
    with pytest.raises(DegenerateGeometryError, match=f"{which} points all coincide"):
        umeyama(*spoil(coincident))
    steps = np.linspace(-1.0, 1.0, len(source))[:, None] * spread_profile(source)[0]
    line = source[0] + steps * np.asarray(direction)
    with pytest.raises(DegenerateGeometryError, match=f"{which} points are collinear"):
        umeyama(*spoil(line))
    # Where only the points themselves move, a line is fine: min_planarity=0 fits it exactly.
    fitted = umeyama(line, truth.transform_points(line), min_planarity=0.0)
    np.testing.assert_allclose(
        fitted.transform_points(line), truth.transform_points(line), atol=1e-7 * (np.abs(truth.matrix).max() + 10)
    )


@given(
    source=point_sets(), index=st.tuples(st.integers(0, 2), st.integers(0, 2)), poison=st.sampled_from([np.nan, np.inf])
)
def test_umeyama_refuses_non_finite_or_mismatched_input(
    source: np.ndarray, index: tuple[int, int], poison: float
) -> None:
    target = source.copy()
    target[index] = poison
    with pytest.raises(ValueError, match="finite") as refused:
        umeyama(source, target)
    assert not isinstance(refused.value, DegenerateGeometryError)  # bad data, not bad geometry
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        umeyama(source[:, :2], source[:, :2])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        umeyama(source, source[:-1])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.2, 5.0))
def test_trajectory_alignment_recovers_a_moved_trajectory_and_only_sim3_a_rescaled_one(seed: int, scale: float) -> None:
    """A trajectory moved by an SE(3) aligns to 0 ATE; rescaled too, only the Sim(3) alignment does, with
    that scale in its rotation block. Stamps only one side has are ignored; fewer than 3 shared: NaN."""
    rng = np.random.default_rng(seed)
    truth = {}
    for stamp in range(12):
        pose = np.eye(4)
        pose[:3, :3] = Rotation.random(random_state=seed + stamp).as_matrix()
        pose[:3, 3] = rng.normal(size=3)
        truth[stamp] = pose
    moved = np.eye(4)
    moved[:3, :3] = Rotation.random(random_state=seed + 99).as_matrix()
    moved[:3, 3] = rng.normal(size=3) * 3
    estimate = {s: moved @ p for s, p in truth.items()}
    estimate[100] = np.eye(4)  # no truth for it
    T, ate, compared = trajectory_alignment(estimate, truth)
    assert compared == 12 and ate < 1e-9
    np.testing.assert_allclose(T @ moved, np.eye(4), atol=1e-9)
    spread = {s: p.copy() for s, p in estimate.items()}
    for p in spread.values():
        p[:3, 3] *= scale
    _, ate_se3, _ = trajectory_alignment(spread, truth)
    T_sim3, ate_sim3, _ = trajectory_alignment(spread, truth, with_scale=True)
    assert ate_sim3 < 1e-8
    assert np.cbrt(np.linalg.det(T_sim3[:3, :3])) == pytest.approx(1 / scale, rel=1e-9)
    if abs(scale - 1) > 0.05:
        assert ate_se3 > 1e-3
    T_few, ate_few, few = trajectory_alignment({0: truth[0], 1: truth[1]}, truth)
    assert few == 2 and np.isnan(ate_few) and np.array_equal(T_few, np.eye(4))
