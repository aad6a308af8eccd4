"""``showroom reconstruct``: the node's pipeline on a folder of photos, a frames_c2w.txt folder or a
rosbag2; with ``--map``, the robot map of every frame."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from showroom_ros.apps.cli_common import (
    CliError,
    finite_float,
    fmt_seconds,
    positive_int,
    write_text,
)
from showroom_ros.io.console import FractionProgress, progress_factory, result, say
from showroom_ros.io.file_names import (
    KEYFRAMES_SUFFIX,
    NAME_RULE,
    name_refusal,
    reconstruction_files,
)
from showroom_ros.models.names import DEFAULT_ENGINE, ENGINE_PRECISION_CHOICES, ENGINES, FAST3R_RELEASE_REPO


def _make_backends(
    backend: str, model: str | None, device: str | None, engine: str = "torch", engine_precision: str = "auto"
) -> dict[str, Any]:
    """The backends by name, nothing loaded yet (so a bad ``--backend`` fails before any frame is read).

    In the CLI, ``auto`` uses a learned model only when ``--model`` is given: a command run on a
    folder should not start a multi-gigabyte download on its own.
    """
    try:
        from showroom_ros.backends import BackendsConfig, LearnedConfig, build_backends
    except ImportError as error:  # a core without learned backends: the weight-free ones only
        from showroom_ros.reconstruction.pipeline import default_backends

        if model or device:
            raise CliError(f"--model/--device need the learned backends, which do not import here: {error}") from None
        return dict(default_backends())

    if backend == "showroom" and not model:
        raise CliError("--backend showroom needs --model: a path or Hugging Face repo of the ShowRoom student weights")
    fast3r_model = model if (backend in ("fast3r", "auto") and model) else ""
    if backend == "fast3r" and not model:
        fast3r_model = FAST3R_RELEASE_REPO
    showroom_model = model if backend == "showroom" else ""
    learned_device = device or "auto"

    def learned(source: str) -> Any:
        # An unconfigured model's dtype is never used; "fp32" spares validating "auto" (which imports torch).
        return LearnedConfig(
            model=source,
            device=learned_device,
            dtype="auto" if source else "fp32",
            engine=engine if source else "torch",
            engine_precision=engine_precision,
        )

    try:
        config = BackendsConfig(fast3r=learned(fast3r_model), showroom=learned(showroom_model), start_loading=False)
    except ValueError as error:
        raise CliError(str(error)) from None
    return build_backends(config, backend=backend)


def _load_weights(backends: dict[str, Any], backend: str, quiet: bool) -> list[str]:
    """Load the configured learned models now (the CLI can wait); a failure is fatal only when requested."""
    try:
        from showroom_ros.backends import model_holders
    except ImportError:
        return []
    notes = []
    for name, holder in model_holders(backends).items():
        if not holder.source or (backend not in ("auto", name)):
            continue
        say(f"loading {name} weights from {holder.source} ...", quiet)
        state = holder.load()
        if state != "ready" and backend == name:
            raise CliError(f"backend {name} cannot load its model: {holder.reason}")
        notes.append(f"{name}: {holder.reason}")
    return notes


def _write_keyframes(keyframes: Sequence[Any], poses: np.ndarray, folder: Path) -> Path:
    """Keyframe images + frames_c2w.txt (the reconstruction's poses): what the viewer draws in frustums."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# keyframes of this reconstruction: <rgb> - <4x4 camera-to-frame pose of the reconstruction>"]
    for index, keyframe in enumerate(keyframes):
        name = f"keyframe-{index:02d}.jpg"
        bgr = cv2.cvtColor(keyframe.image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise CliError(f"could not write keyframe image {folder / name}")
        pose = poses[index] if index < len(poses) else np.eye(4)
        lines.append(f"{name} - " + " ".join(f"{v:.9g}" for v in np.asarray(pose).reshape(-1)))
    write_text(folder / "frames_c2w.txt", "\n".join(lines) + "\n")
    return folder


def cmd_reconstruct(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from showroom_ros.apps.offline import load_input
    from showroom_ros.capture.keyframes import KeyframeSelectorConfig
    from showroom_ros.geometry.camera import CameraIntrinsics
    from showroom_ros.io.export import save_glb, save_mesh_ply, save_npz, save_point_cloud_ply, save_preview_png
    from showroom_ros.reconstruction.pipeline import PipelineConfig, ReconstructionPipeline

    quiet = args.quiet
    source = Path(args.path).expanduser()
    given = args.name is not None
    name = args.name if given else (source.stem if source.is_file() else source.resolve().name) or "reconstruction"
    refusal = name_refusal(name, "--name" if given else "output name")
    if refusal is not None:
        raise CliError(refusal if given else f"{refusal}; it is PATH's name: choose one with --name")
    out = Path(args.out).expanduser() if args.out else Path("output") / name
    progress = progress_factory(quiet)
    try:
        selector = KeyframeSelectorConfig(max_keyframes=args.max_keyframes, min_keyframes=min(3, args.max_keyframes))
    except ValueError as error:
        raise CliError(f"--max-keyframes: {error}") from None
    backends = _make_backends(args.backend, args.model, args.device, args.engine, args.engine_precision)
    if args.map:
        return _reconstruct_map(args, source, name, out, backends, selector, started)
    pipeline = ReconstructionPipeline(PipelineConfig(backend=args.backend, build_mesh=not args.no_mesh), backends)

    bag = _bag_options(args)
    load_started = time.perf_counter()
    offline = load_input(
        source,
        use_all=args.all,
        frames=[f for f in (args.frames or "").split(",") if f] or None,
        selector=selector,
        with_depth=not args.no_depth,
        with_poses=not args.no_poses,
        bag=bag,
        progress=progress,
    )
    keyframes = offline.keyframes
    if args.intrinsics:
        fx, fy, cx, cy = args.intrinsics
        for keyframe in keyframes:
            keyframe.intrinsics = CameraIntrinsics(fx, fy, cx, cy, keyframe.width, keyframe.height)
    load_seconds = time.perf_counter() - load_started
    say(f"{len(keyframes)} keyframes from {source} ({offline.kind}) in {fmt_seconds(load_seconds)}", quiet)
    weights_started = time.perf_counter()
    backend_notes = _load_weights(backends, args.backend, quiet)
    weights_seconds = time.perf_counter() - weights_started

    pipeline_started = time.perf_counter()
    with FractionProgress("reconstructing", quiet) as report:
        reconstruction = pipeline.run(keyframes, report)
    pipeline_seconds = time.perf_counter() - pipeline_started
    if reconstruction.frame_id == "map" and offline.fixed_frame:
        reconstruction.frame_id = offline.fixed_frame  # as the node does with its map_frame

    write_started = time.perf_counter()
    paths = reconstruction_files(out, name)
    written: dict[str, Path] = {"png": save_preview_png(reconstruction, paths["png"])}
    first_picture = time.perf_counter() - started
    written["cloud"] = save_point_cloud_ply(reconstruction, paths["cloud"])
    if reconstruction.mesh is not None:
        written["mesh"] = save_mesh_ply(reconstruction.mesh, paths["mesh"])
    written["glb"] = save_glb(reconstruction, paths["glb"])
    written["npz"] = save_npz(reconstruction, paths["npz"])
    written["keyframes"] = _write_keyframes(keyframes, reconstruction.camera_poses, out / f"{name}{KEYFRAMES_SUFFIX}")
    write_seconds = time.perf_counter() - write_started
    total = time.perf_counter() - started

    mesh = reconstruction.mesh
    summary = {
        "input": str(source),
        "kind": offline.kind,
        "frames_considered": offline.frames_considered,
        "keyframes": offline.names,
        "selection": offline.notes,
        "backend": reconstruction.backend,
        "backend_reason": report.first_stage,  # the pipeline reports its backend choice first
        "backend_notes": backend_notes,
        "points": int(reconstruction.num_points),
        "triangles": int(mesh.num_triangles) if mesh is not None else 0,
        "result_notes": list(reconstruction.notes),
        "frame_id": reconstruction.frame_id,
        "metric": bool(reconstruction.metric),
        "bounds_min": [float(v) for v in reconstruction.points.min(axis=0)],
        "bounds_max": [float(v) for v in reconstruction.points.max(axis=0)],
        "seconds": {
            "startup": load_started - started,  # imports and backend set-up
            "load": load_seconds,
            "weights": weights_seconds,  # loading learned models (0 when none is used)
            **{f"stage_{k}": float(v) for k, v in reconstruction.timings.items()},
            "pipeline": pipeline_seconds,
            "write": write_seconds,
            "first_picture": first_picture,
            "total": total,
        },
        "outputs": {kind: str(path) for kind, path in written.items()},
    }
    summary_path = out / "summary.json"
    write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    if args.json:
        result(json.dumps(summary, indent=2))
    elif not quiet:
        result(_summary_text(summary, reconstruction.timings))
    return 0


def _reconstruct_map(
    args: argparse.Namespace,
    source: Path,
    name: str,
    out: Path,
    backends: dict[str, Any],
    selector: Any,
    started: float,
) -> int:
    """``reconstruct --map``: continuous mapping over every frame, then the files of the node's ~/save_map."""
    from showroom_ros.apps.map_session import ContinuousMapper, map_input, save_map
    from showroom_ros.mapping.occupancy import OccupancyConfig
    from showroom_ros.mapping.robot_map import RobotMap, RobotMapConfig
    from showroom_ros.reconstruction.pipeline import PipelineConfig, ReconstructionPipeline

    quiet = args.quiet
    if args.all or args.frames:
        raise CliError("--map considers every frame and selects keyframes itself: drop --all/--frames")
    if args.intrinsics:
        raise CliError("--intrinsics is not supported with --map (give the folder a camera.yaml)")
    try:
        config = RobotMapConfig(occupancy=OccupancyConfig(floor_z=args.floor_z), gravity_aligned=args.map_up != "none")
    except ValueError as error:
        raise CliError(f"--map: {error}") from None
    robot_map = RobotMap(config)
    pipeline = ReconstructionPipeline(PipelineConfig(backend=args.backend, build_mesh=False), backends)
    backend_notes = _load_weights(backends, args.backend, quiet)

    def report(window: Any) -> None:
        if window.error:
            say(f"window {window.number} ({', '.join(window.keyframes)}): failed: {window.error}", quiet)
        else:
            text = f"{window.backend}; {window.update.summary} in {fmt_seconds(window.seconds)}"
            say(f"window {window.number} ({', '.join(window.keyframes)}): {text}", quiet)

    try:
        mapper = ContinuousMapper(pipeline, robot_map, args.window, args.overlap, on_window=report)
    except ValueError as error:
        raise CliError(f"--window/--overlap: {error}") from None
    bag = _bag_options(args)
    run = map_input(
        source,
        mapper,
        selector=selector,
        with_depth=not args.no_depth,
        with_poses=not args.no_poses,
        bag=bag,
        up_from_first_camera=args.map_up == "first-camera",
        progress=progress_factory(quiet),
    )
    done = [w for w in run.windows if not w.error]
    if not done:
        reasons = "; ".join(w.error for w in run.windows) or "no window was reconstructed"
        raise CliError(f"no window could be mapped: {reasons}")
    try:
        written = save_map(robot_map, out, name)
    except ValueError as error:
        raise CliError(str(error)) from None
    grid = robot_map.occupancy()
    summary = {
        "input": str(source),
        "kind": run.kind,
        "frames_considered": run.frames_considered,
        "keyframes_selected": run.keyframes,
        "keyframes_integrated": robot_map.keyframe_count,
        "selection": run.notes,
        "backend_notes": backend_notes,
        "frame_id": robot_map.frame_id,
        "map_up": args.map_up,
        "transform": run.transform.tolist() if run.transform is not None else None,
        "window": args.window,
        "overlap": args.overlap,
        "windows": [
            {
                "keyframes": w.keyframes,
                "backend": w.backend,
                "error": w.error,
                "integrated": len(w.update.integrated) if w.update else 0,
                "skipped": len(w.update.skipped) if w.update else 0,
                "dropped_blocks": w.update.dropped_blocks if w.update else 0,
                "messages": w.update.messages if w.update else [],
                "seconds": w.seconds,
            }
            for w in run.windows
        ],
        "blocks": robot_map.block_count,
        "memory_bytes": robot_map.volume.memory_bytes(),
        "surface_points": len(robot_map.surface()[0]),
        "occupancy": None
        if grid is None
        else {"width": grid.width, "height": grid.height, "resolution": grid.resolution, "origin": grid.origin_xy},
        "occupancy_reason": robot_map.occupancy_reason,
        "seconds": {"total": time.perf_counter() - started},
        "outputs": {kind: str(path) for kind, path in written.items()},
    }
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if args.json:
        result(json.dumps(summary, indent=2))
    elif not quiet:
        failed = len(run.windows) - len(done)
        occupancy = (
            f"occupancy {grid.width}x{grid.height} cells at {grid.resolution:g} m"
            if grid is not None
            else f"no occupancy grid: {robot_map.occupancy_reason}"
        )
        lines = [
            f"input      {source} ({run.kind}, {run.frames_considered} frames, {run.keyframes} keyframes)",
            *(f"           {note}" for note in run.notes),
            f"windows    {len(done)} mapped"
            + (f", {failed} failed" if failed else "")
            + f" (window {args.window}, overlap {args.overlap})",
            f"map        {robot_map.keyframe_count} keyframes in frame '{robot_map.frame_id}', "
            f"{robot_map.block_count:,} blocks, {summary['surface_points']:,} surface points; {occupancy}",
            f"seconds    total {fmt_seconds(summary['seconds']['total'])}",
            "wrote      " + ", ".join(str(p) for p in written.values()),
        ]
        result("\n".join(lines))
    return 0


def _bag_options(args: argparse.Namespace) -> Any:
    """The rosbag2 topic and frame options of ``reconstruct`` (also with --map)."""
    from showroom_ros.apps.offline import BagOptions

    return BagOptions(
        image_topic=args.image_topic,
        depth_topic=args.depth_topic,
        camera_info_topic=args.camera_info_topic,
        depth_info_topic=args.depth_info_topic,
        pose_topic=args.pose_topic,
        fixed_frame=args.fixed_frame,
        camera_frame=args.camera_frame,
        depth_scale=args.depth_scale,
    )


def _summary_text(summary: dict[str, Any], timings: dict[str, float]) -> str:
    seconds = summary["seconds"]
    stages = " | ".join(f"{k} {fmt_seconds(v)}" for k, v in timings.items() if not k.endswith("_total"))
    lines = [
        f"input      {summary['input']} ({summary['kind']}, {summary['frames_considered']} frames)",
        *(f"           {note}" for note in summary["selection"]),
        f"keyframes  {', '.join(summary['keyframes'])}",
        f"backend    {summary['backend']} ({summary['backend_reason']})",
        *(f"           {note}" for note in summary["backend_notes"]),
        f"result     {summary['points']:,} points, {summary['triangles']:,} triangles, "
        f"frame '{summary['frame_id']}'"
        f" ({'metres' if summary['metric'] else 'arbitrary scale'})",
        *(f"           note: {note}" for note in summary["result_notes"]),
        f"stages     {stages}" if stages else "stages     (none reported)",
        f"seconds    startup {fmt_seconds(seconds['startup'])} | load {fmt_seconds(seconds['load'])}"
        + (f" | weights {fmt_seconds(seconds['weights'])}" if seconds["weights"] >= 0.01 else "")
        + f" | reconstruct {fmt_seconds(seconds['pipeline'])} | write {fmt_seconds(seconds['write'])}"
        f" | total {fmt_seconds(seconds['total'])}",
        f"first picture after {fmt_seconds(seconds['first_picture'])}: {summary['outputs']['png']}",
        "wrote      "
        + ", ".join(summary["outputs"][k] for k in ("cloud", "mesh", "glb", "npz") if k in summary["outputs"]),
    ]
    return "\n".join(lines)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``showroom reconstruct`` on the subcommand parsers."""
    rec = commands.add_parser(
        "reconstruct",
        help="reconstruct a folder of images, a frames_c2w.txt folder or a rosbag2",
        description="Reconstruct PATH (a folder of photos, a folder with frames_c2w.txt, "
        "or a rosbag2 .mcap/.db3 "
        "or bag folder) with the node's pipeline; writes PLY, GLB, PNG and NPZ to --out.",
    )
    rec.add_argument("path", help="image folder, frames_c2w.txt folder, or rosbag2 (MCAP or sqlite3)")
    rec.add_argument("--out", help="output folder (default: output/<name of PATH>)")
    rec.add_argument("--name", help=f"base name of the output files: {NAME_RULE} (default: the name of PATH)")
    rec.add_argument(
        "--backend",
        default="auto",
        help="auto (default), rgbd, sfm, fast3r, showroom, or any backend this install provides",
    )
    rec.add_argument("--model", help="weights of the learned backend: local path or Hugging Face repo id")
    rec.add_argument("--device", help="device of the learned backend: auto, cpu, cuda or cuda:N")
    rec.add_argument(
        "--engine",
        default=DEFAULT_ENGINE,
        choices=ENGINES,
        help="inference engine of the learned network on CPU (default torch; docs/fast3r.md)",
    )
    rec.add_argument(
        "--engine-precision",
        default="auto",
        choices=ENGINE_PRECISION_CHOICES,
        help="engine precision: auto (= the model dtype), fp32, bf16, int8 (onnxruntime only)",
    )
    rec.add_argument("--all", action="store_true", help="use every frame of a folder instead of 3-5 selected ones")
    rec.add_argument("--frames", help="comma-separated frame names of a folder to use (e.g. frame-000250,frame-000300)")
    rec.add_argument("--max-keyframes", type=positive_int, default=5, help="keyframes to select (default 5)")
    rec.add_argument("--no-mesh", action="store_true", help="skip the Screened Poisson surface")
    rec.add_argument("--no-depth", action="store_true", help="ignore depth images (RGB-only backends)")
    rec.add_argument("--no-poses", action="store_true", help="ignore known camera poses")
    rec.add_argument(
        "--intrinsics",
        nargs=4,
        type=finite_float,
        metavar=("FX", "FY", "CX", "CY"),
        help="colour camera intrinsics in pixels (override camera.yaml / CameraInfo)",
    )
    bag = rec.add_argument_group("rosbag2 input (topics are found automatically when there is one candidate)")
    bag.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage colour topic")
    bag.add_argument("--depth-topic", help="depth image topic (16UC1 mm, 32FC1 m, or compressedDepth)")
    bag.add_argument("--camera-info-topic", help="CameraInfo of the colour camera")
    bag.add_argument("--depth-info-topic", help="CameraInfo of the depth camera when not registered to colour")
    bag.add_argument("--pose-topic", help="geometry_msgs/PoseStamped camera poses instead of TF")
    bag.add_argument("--fixed-frame", help="frame the poses are expressed in (default: the root of the TF tree)")
    bag.add_argument("--camera-frame", help="camera optical frame (default: the images' header.frame_id)")
    bag.add_argument("--depth-scale", type=float, default=1000.0, help="16-bit depth units per metre (default 1000)")
    robot_map = rec.add_argument_group("continuous mapping (--map): the robot map of every frame")
    robot_map.add_argument(
        "--map",
        action="store_true",
        help="map every frame: reconstruct overlapping keyframe windows, integrate them into one TSDF "
        "map and write its mesh, cloud, Nav2 occupancy grid and volume to --out",
    )
    robot_map.add_argument("--window", type=positive_int, default=5, help="keyframes per window (default 5)")
    robot_map.add_argument(
        "--overlap", type=int, default=1, help="keyframes a window shares with the previous one (default 1)"
    )
    robot_map.add_argument(
        "--map-up",
        choices=("z", "first-camera", "none"),
        default="z",
        help="z: the poses' frame is z up (REP-103, default); first-camera: rotate the poses so the first "
        "camera's -y is up (sequences such as 7-Scenes); none: not gravity-aligned, no occupancy grid",
    )
    robot_map.add_argument(
        "--floor-z", type=float, default=0.0, help="floor height in the map frame for the occupancy band (default 0)"
    )
    rec.add_argument("--json", action="store_true", help="print the summary as JSON")
    rec.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")
    rec.set_defaults(handler=cmd_reconstruct)
    return rec
