"""Generate views a reconstruction is missing: choose a keyframe, turn it, render, inpaint, check, keep.

This is the ROS-free core of the ``~/generate_views`` service and of ``showroom generate``:

1. :func:`validate_request` turns a bad request into one clear ``ValueError`` before any work;
2. :func:`generate_views` picks the keyframe and the turn direction (ShowRoom's layout rules with
   ST-RoomNet, or a geometric rule without it), renders each turned view
   (:mod:`~showroom_ros.generation.view_synthesis`), fills its holes with the inpainter, and accepts
   or rejects it by its room layout;
3. :func:`generated_views_to_keyframes` turns the accepted views into keyframes for "3D generate".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.generation.inpainting import (
    BACKENDS,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_PROMPT,
    Inpainter,
    InpaintSettings,
)
from showroom_ros.generation.layout import (
    LEFT,
    RIGHT,
    ExtensionChoice,
    check_layout_plausibility,
    choose_extension,
    expected_layout,
)
from showroom_ros.generation.st_roomnet import RoomLayout, RoomLayoutEstimator
from showroom_ros.generation.view_synthesis import (
    RENDER_SOURCES,
    HoleMaskConfig,
    NovelView,
    estimate_up_direction,
    point_spacing,
    render_novel_view,
    yawed_pose,
)
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.export import atomic_write_bytes, atomic_write_text
from showroom_ros.reconstruction.result import Reconstruction

MAX_VIEWS = 16
MAX_STEPS = 200
MAX_PROMPT_CHARS = 1000
MAX_YAW_DEG = 90.0
MAX_GUIDANCE = 30.0
DEFAULT_YAW_DEG = 30.0
MAX_HOLE_FRACTION = 0.75
"""A view with more than this fraction missing is not generated: too little context to continue the room."""

ProgressCallback = Callable[[float, str], None]


@dataclass
class GenerationRequest:
    """One ``~/generate_views`` request.

    ``keyframe_index`` -1 lets the discriminator choose the keyframe and the direction. Views are
    the explicit ``yaw_angles_deg`` (positive = turn left) or, when empty, ``num_views`` angles up
    to ``max_yaw_deg``: all towards the chosen side when the keyframe was chosen, else alternating
    left/right. ``seed`` -1 draws a random seed; view i uses seed + i.
    """

    keyframe_index: int = -1
    yaw_angles_deg: Sequence[float] = ()
    num_views: int = 1
    max_yaw_deg: float = DEFAULT_YAW_DEG
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    steps: int = 30
    guidance_scale: float = 7.5
    seed: int = 0
    backend: str = "auto"


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def validate_request(
    request: GenerationRequest, reconstruction: Reconstruction | None, num_keyframes: int
) -> None:
    """Raise ``ValueError`` with a message a robot operator understands when the request cannot run."""
    if reconstruction is None:
        raise ValueError("there is no reconstruction yet: reconstruct the room first, then generate views")
    has_mesh = reconstruction.mesh is not None and reconstruction.mesh.num_triangles > 0
    if reconstruction.num_points == 0 and not has_mesh:
        raise ValueError("the reconstruction is empty (no points, no mesh): nothing to render views from")
    cameras = min(int(num_keyframes), len(reconstruction.camera_poses))
    if cameras < 1:
        raise ValueError("the reconstruction has no keyframe cameras to turn")
    if (
        not isinstance(request.keyframe_index, (int, np.integer))
        or not -1 <= request.keyframe_index < cameras
    ):
        raise ValueError(
            f"keyframe index {request.keyframe_index} is out of range: use 0..{cameras - 1}, "
            "or -1 to let the discriminator choose"
        )
    angles = list(request.yaw_angles_deg)
    if angles:
        if len(angles) > MAX_VIEWS:
            raise ValueError(f"{len(angles)} yaw angles requested; at most {MAX_VIEWS} views per request")
        bad = [a for a in angles if not _finite(a) or abs(float(a)) > MAX_YAW_DEG]
        if bad:
            raise ValueError(f"yaw angles must be finite degrees within +-{MAX_YAW_DEG:g}, got {bad}")
    elif not isinstance(request.num_views, (int, np.integer)) or not 1 <= request.num_views <= MAX_VIEWS:
        raise ValueError(
            f"number of views must be 1..{MAX_VIEWS} (or give yaw angles), got {request.num_views}"
        )
    if not _finite(request.max_yaw_deg) or not 0 < float(request.max_yaw_deg) <= MAX_YAW_DEG:
        raise ValueError(f"max yaw must be in (0, {MAX_YAW_DEG:g}] degrees, got {request.max_yaw_deg}")
    if not isinstance(request.steps, (int, np.integer)) or not 1 <= request.steps <= MAX_STEPS:
        raise ValueError(f"steps must be 1..{MAX_STEPS}, got {request.steps}")
    if not _finite(request.guidance_scale) or not 0 <= float(request.guidance_scale) <= MAX_GUIDANCE:
        raise ValueError(f"guidance scale must be in [0, {MAX_GUIDANCE:g}], got {request.guidance_scale}")
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise ValueError("the prompt is empty: describe what to fill in (e.g. plain walls and floor)")
    for name, text in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
        if not isinstance(text, str):
            raise ValueError(f"the {name} must be text")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"the {name} has {len(text)} characters; at most {MAX_PROMPT_CHARS} are accepted"
            )
    if request.backend not in BACKENDS:
        raise ValueError(
            f"unknown inpainting backend {request.backend!r}: choose one of {', '.join(BACKENDS)}"
        )
    if not isinstance(request.seed, (int, np.integer)) or not -1 <= request.seed < 2**63:
        raise ValueError(f"seed must be an integer >= 0, or -1 for a random one, got {request.seed}")


@dataclass
class GeneratedView:
    """One turned view: ``mask`` True where pixels were generated; ``depth`` NaN there and where unknown."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) bool
    depth: np.ndarray  # (H, W) float32, camera z, NaN = unknown
    pose_c2w: np.ndarray  # (4, 4) camera-to-map
    intrinsics: CameraIntrinsics
    source_keyframe: int
    yaw_deg: float
    accepted: bool
    reason: str
    hole_fraction: float
    seed: int | None = None
    layout: RoomLayout | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _intrinsics_of(reconstruction: Reconstruction, index: int) -> CameraIntrinsics:
    if not reconstruction.intrinsics:
        raise ValueError("the reconstruction has no camera intrinsics")
    return (
        reconstruction.intrinsics[index]
        if len(reconstruction.intrinsics) > 1
        else reconstruction.intrinsics[0]
    )


def _images_for(reconstruction: Reconstruction, keyframe_images: Sequence[np.ndarray | None] | None) -> list:
    count = len(reconstruction.camera_poses)
    if keyframe_images is None:
        return [None] * count
    images = list(keyframe_images)
    if len(images) != count:
        raise ValueError(f"got {len(images)} keyframe images for a reconstruction with {count} cameras")
    return images


def yaw_schedule(num_views: int, max_yaw_deg: float, direction: str | None) -> list[float]:
    """``num_views`` turn angles up to ``max_yaw_deg``: evenly towards ``direction``, or alternating sides."""
    if direction is not None:
        sign = 1.0 if direction == LEFT else -1.0
        return [sign * max_yaw_deg * (i + 1) / num_views for i in range(num_views)]
    per_side = math.ceil(num_views / 2)
    return [(1.0 if i % 2 == 0 else -1.0) * max_yaw_deg * (i // 2 + 1) / per_side for i in range(num_views)]


def _stand_in_image(reconstruction: Reconstruction, index: int, spacing: float) -> np.ndarray:
    """Without the keyframe photo, its view rendered from the reconstruction (for the layout network)."""
    view = render_novel_view(
        reconstruction,
        reconstruction.camera_poses[index],
        _intrinsics_of(reconstruction, index),
        render_source="auto",
        spacing=spacing,
    )
    return view.image


def _render(
    reconstruction: Reconstruction,
    images: Sequence[np.ndarray | None],
    index: int,
    pose: np.ndarray,
    spacing: float,
    hole_config: HoleMaskConfig | None,
    render_source: str,
    scale: float = 1.0,
) -> NovelView:
    """The turned view of keyframe ``index``; ``scale`` < 1 renders a cheaper, smaller preview."""
    intrinsics = _intrinsics_of(reconstruction, index)
    target = intrinsics
    if scale != 1.0:
        target = intrinsics.scaled(
            max(8, round(intrinsics.width * scale)), max(8, round(intrinsics.height * scale))
        )
    return render_novel_view(
        reconstruction,
        pose,
        target,
        source_image=images[index],
        source_pose=reconstruction.camera_poses[index],
        source_intrinsics=intrinsics,
        render_source=render_source,
        hole_config=hole_config,
        spacing=spacing,
    )


PREVIEW_SCALE = 0.25
"""Resolution of the previews the geometric choice compares (hole fractions barely change with it)."""


def choose_by_geometry(
    reconstruction: Reconstruction,
    images: Sequence[np.ndarray | None],
    yaw_deg: float,
    up: np.ndarray,
    spacing: float,
    hole_config: HoleMaskConfig | None = None,
    render_source: str = "auto",
) -> ExtensionChoice:
    """Without ST-RoomNet: the keyframe and side whose turned view misses the most while keeping context.

    Every keyframe is turned ``yaw_deg`` both ways; the candidate with the largest hole fraction not
    above :data:`MAX_HOLE_FRACTION` wins (the most unseen room that can still be continued from what
    is visible). When every candidate misses more, the one missing least wins. The candidates are
    rendered at :data:`PREVIEW_SCALE` of the keyframe resolution with a scaled hole clean-up.
    """
    config = hole_config or HoleMaskConfig()
    preview_config = HoleMaskConfig(
        close_px=max(1, round(config.close_px * PREVIEW_SCALE)),
        min_hole_area_px=max(1, round(config.min_hole_area_px * PREVIEW_SCALE**2)),
        dilate_px=round(config.dilate_px * PREVIEW_SCALE),
    )
    candidates = []
    for index, pose in enumerate(reconstruction.camera_poses):
        for direction, sign in ((LEFT, 1.0), (RIGHT, -1.0)):
            turned = yawed_pose(pose, sign * yaw_deg, up)
            view = _render(
                reconstruction, images, index, turned, spacing, preview_config, render_source, PREVIEW_SCALE
            )
            candidates.append((view.hole_fraction, index, direction))
    usable = [c for c in candidates if c[0] <= MAX_HOLE_FRACTION]
    hole, index, direction = max(usable) if usable else min(candidates)
    return ExtensionChoice(
        index,
        direction,
        f"geometric choice: turning keyframe {index} {yaw_deg:g} deg {direction} "
        f"leaves {hole:.0%} of the view to generate",
    )


def generate_views(
    reconstruction: Reconstruction,
    keyframe_images: Sequence[np.ndarray | None] | None,
    request: GenerationRequest,
    inpainter: Inpainter,
    discriminator: RoomLayoutEstimator | None = None,
    progress: ProgressCallback | None = None,
    hole_config: HoleMaskConfig | None = None,
    render_source: str = "auto",
    up: np.ndarray | None = None,
) -> list[GeneratedView]:
    """Render, inpaint and check the requested views (call :func:`validate_request` first).

    ``keyframe_images`` are the keyframes' RGB photos in reconstruction camera order (None, or None
    entries, when not at hand: views are then rendered from geometry only). ``discriminator`` is
    ST-RoomNet; without it the keyframe is chosen geometrically and views are accepted unchecked.
    ``up`` is the world vertical; None estimates it (:func:`estimate_up_direction`).
    """
    report = progress or (lambda fraction, message: None)
    if render_source not in RENDER_SOURCES:
        raise ValueError(f"render source must be one of {', '.join(RENDER_SOURCES)}, got {render_source!r}")
    images = _images_for(reconstruction, keyframe_images)
    poses = np.asarray(reconstruction.camera_poses, dtype=np.float64).reshape(-1, 4, 4)
    if up is None:
        up, up_reason = estimate_up_direction(poses)
    else:
        up_reason = "given"
    spacing = point_spacing(reconstruction.points) if reconstruction.num_points else 0.0

    # 1. Which keyframe, which way.
    direction: str | None = None
    layouts: dict[int, RoomLayout] = {}
    index = int(request.keyframe_index)
    if index < 0:
        report(0.0, "choosing the keyframe to extend")
        choice = None
        if discriminator is not None:
            pictures = [
                img if img is not None else _stand_in_image(reconstruction, i, spacing)
                for i, img in enumerate(images)
            ]
            predicted = discriminator.predict(pictures)
            layouts = dict(enumerate(predicted))
            choice = choose_extension([layout.labels for layout in predicted], list(poses))
            if choice.keyframe_index is None:
                choice.reason = f"ST-RoomNet/ShowRoom rules: {choice.reason}; "
        if choice is None or choice.keyframe_index is None:
            prefix = choice.reason if choice is not None else "no ST-RoomNet weights; "
            choice = choose_by_geometry(
                reconstruction, images, float(request.max_yaw_deg), up, spacing, hole_config, render_source
            )
            choice.reason = prefix + choice.reason
        assert choice.keyframe_index is not None
        index, direction = choice.keyframe_index, choice.direction
        choice_reason = choice.reason
    else:
        choice_reason = f"keyframe {index} requested"
    angles = [float(a) for a in request.yaw_angles_deg] or yaw_schedule(
        int(request.num_views), float(request.max_yaw_deg), direction
    )
    report(
        0.05,
        f"{choice_reason}; {len(angles)} view(s) at yaw {', '.join(f'{a:+g}' for a in angles)} deg "
        f"about {up_reason}",
    )

    source_layout = None
    if discriminator is not None:
        source_layout = layouts.get(index)
        if source_layout is None:
            picture = (
                images[index]
                if images[index] is not None
                else _stand_in_image(reconstruction, index, spacing)
            )
            source_layout = discriminator.predict([picture])[0]

    base_seed = int(request.seed) if request.seed >= 0 else int(np.random.SeedSequence().entropy % (2**31))
    source_pose = poses[index]
    intrinsics = _intrinsics_of(reconstruction, index)
    views: list[GeneratedView] = []
    for number, yaw in enumerate(angles):
        span = 0.9 / len(angles)
        start = 0.05 + number * span
        timings: dict[str, float] = {}
        started = time.perf_counter()
        pose = yawed_pose(source_pose, yaw, up)
        novel = _render(reconstruction, images, index, pose, spacing, hole_config, render_source)
        timings["render"] = time.perf_counter() - started
        seed = base_seed + number
        known_depth = np.where(novel.hole_mask, np.float32(np.nan), novel.depth).astype(np.float32)
        view = GeneratedView(
            novel.image,
            novel.hole_mask,
            known_depth,
            pose,
            intrinsics,
            index,
            yaw,
            True,
            "",
            novel.hole_fraction,
            seed,
            None,
            timings,
        )
        views.append(view)
        label = f"view {number + 1}/{len(angles)} (keyframe {index}, yaw {yaw:+g} deg)"
        if novel.hole_fraction == 0.0:
            view.reason = "fully covered by the reconstruction: nothing to generate"
            report(start + span, f"{label}: {view.reason}")
            continue
        if novel.hole_fraction > MAX_HOLE_FRACTION:
            view.accepted = False
            view.reason = (
                f"{novel.hole_fraction:.0%} of the view is unknown (more than {MAX_HOLE_FRACTION:.0%}): "
                "too little context to continue the room"
            )
            report(start + span, f"{label}: rejected, {view.reason}")
            continue
        report(start, f"{label}: inpainting {novel.hole_fraction:.0%} of the view with {inpainter.name}")
        settings = InpaintSettings(
            request.prompt, request.negative_prompt, int(request.steps), float(request.guidance_scale), seed
        )

        def on_step(
            step: int, total: int, start: float = start, span: float = span, label: str = label
        ) -> None:
            report(start + span * 0.9 * step / max(total, 1), f"{label}: step {step}/{total}")

        started = time.perf_counter()
        view.image = inpainter.inpaint(novel.image, novel.hole_mask, settings, on_step)
        timings["inpaint"] = time.perf_counter() - started
        if discriminator is None:
            view.reason = "generated; layout not checked (no ST-RoomNet weights configured)"
        else:
            started = time.perf_counter()
            view.layout = discriminator.predict([view.image])[0]
            assert source_layout is not None
            expected = expected_layout(source_layout, source_pose, intrinsics, pose, intrinsics)
            verdict = check_layout_plausibility(view.layout, expected)
            timings["layout_check"] = time.perf_counter() - started
            view.accepted = verdict.plausible
            view.reason = verdict.reason
        report(start + span, f"{label}: {'accepted' if view.accepted else 'rejected'} ({view.reason})")
    report(1.0, f"{sum(v.accepted for v in views)} of {len(views)} view(s) accepted")
    return views


def generated_views_to_keyframes(
    views: Sequence[GeneratedView], only_accepted: bool = True, first_stamp_ns: int = 0, frame_id: str = ""
) -> list[Keyframe]:
    """Generated views as keyframes for "3D generate" (re-running the reconstruction with them).

    Each keeps its pose and intrinsics. Its depth is the rendered depth of the known pixels and NaN
    on every generated pixel: inpainted content has no measured geometry, so RGB-D fusion adds no
    invented surfaces (it only re-adds what the reconstruction had); image-based backends (Fast3R,
    SfM) estimate the geometry of the generated content themselves. ``metadata`` marks them as
    generated (keyframe, yaw, seed) so nothing downstream mistakes them for camera images.
    """
    keyframes = []
    for number, view in enumerate(v for v in views if v.accepted or not only_accepted):
        keyframes.append(
            Keyframe(
                image=np.ascontiguousarray(view.image),
                stamp_ns=int(first_stamp_ns) + number,
                intrinsics=view.intrinsics,
                depth=np.where(view.mask, np.float32(np.nan), view.depth).astype(np.float32),
                depth_intrinsics=None,
                pose=np.asarray(view.pose_c2w, dtype=np.float64).copy(),
                frame_id=frame_id,
                metadata={
                    "generated": "true",
                    "source_keyframe": str(view.source_keyframe),
                    "yaw_deg": f"{view.yaw_deg:g}",
                    "seed": "" if view.seed is None else str(view.seed),
                    "accepted": str(view.accepted).lower(),
                },
            )
        )
    return keyframes


# --- writing views to disk ----------------------------------------------------------------------


def _write_png(path: Path, rgb_or_gray: np.ndarray) -> None:
    image = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, encoded.tobytes())


def save_generated_views(
    views: Sequence[GeneratedView],
    output_dir: str | Path,
    status: str = "",
    frame_id: str = "map",
    metric: bool = True,
) -> list[Path]:
    """Write the views as a frame folder that ``showroom view --generated`` and the datasets loader read.

    Per view ``view_NN.png``, ``view_NN_mask.png`` (255 = generated) and ``view_NN_depth.png`` (uint16
    in 1/1000 of the reconstruction's unit, millimetres when ``metric``; 0 = unknown, always 0 on
    generated pixels). ``frames_c2w.txt`` lists the *accepted* views with their camera-to-``frame_id``
    poses (rejected ones as comments) and ``camera.yaml`` their intrinsics when all views share them;
    ``views.json`` has everything, rejected views and reasons included.
    """
    directory = Path(output_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    records = []
    index_lines = [
        "# views generated by showroom_ros.generation: <rgb> <depth> <4x4 camera-to-"
        + frame_id
        + ", row-major>",
    ]
    for number, view in enumerate(views):
        stem = f"view_{number:02d}"
        _write_png(directory / f"{stem}.png", view.image)
        _write_png(directory / f"{stem}_mask.png", view.mask.astype(np.uint8) * 255)
        depth_mm = np.nan_to_num(view.depth * 1000.0, nan=0.0, posinf=0.0, neginf=0.0)
        _write_png(directory / f"{stem}_depth.png", np.clip(np.rint(depth_mm), 0, 65535).astype(np.uint16))
        written += [directory / f"{stem}{suffix}.png" for suffix in ("", "_mask", "_depth")]
        k = view.intrinsics
        records.append(
            {
                "image": f"{stem}.png",
                "mask": f"{stem}_mask.png",
                "depth": f"{stem}_depth.png",
                "source_keyframe": view.source_keyframe,
                "yaw_deg": view.yaw_deg,
                "accepted": view.accepted,
                "reason": view.reason,
                "hole_fraction": view.hole_fraction,
                "seed": view.seed,
                "pose_c2w": np.asarray(view.pose_c2w).tolist(),
                "intrinsics": {
                    "fx": k.fx,
                    "fy": k.fy,
                    "cx": k.cx,
                    "cy": k.cy,
                    "width": k.width,
                    "height": k.height,
                },
                "timings": view.timings,
            }
        )
        pose_text = " ".join(f"{value:.9g}" for value in np.asarray(view.pose_c2w, dtype=np.float64).ravel())
        line = f"{stem}.png {stem}_depth.png {pose_text}"
        index_lines.append(line if view.accepted else f"# rejected ({view.reason}): {line}")
    summary = {"inpainter": status, "frame_id": frame_id, "metric": bool(metric), "views": records}
    # Every file complete or absent (io/export.py's atomic writer), also when the CLI is interrupted.
    atomic_write_text(directory / "views.json", json.dumps(summary, indent=2))
    atomic_write_text(directory / "frames_c2w.txt", "\n".join(index_lines) + "\n")
    written += [directory / "views.json", directory / "frames_c2w.txt"]
    if views and all(v.intrinsics == views[0].intrinsics for v in views):
        k = views[0].intrinsics
        # No depth section: the depth PNGs are rendered into the colour camera (registered).
        camera = (
            f"color: {{width: {k.width}, height: {k.height}, fx: {k.fx!r}, fy: {k.fy!r}, "
            f"cx: {k.cx!r}, cy: {k.cy!r}}}\ndepth_scale: 1000.0\n"
        )
        atomic_write_text(directory / "camera.yaml", camera)
        written.append(directory / "camera.yaml")
    return written
