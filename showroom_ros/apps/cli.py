"""The ``showroom`` command: offline reconstruction, the web viewer, bag export, generation, distillation.

``showroom reconstruct PATH`` runs the node's pipeline on a folder of photos, a frames_c2w.txt folder
or a rosbag2; ``showroom view PATH`` serves the result in a browser (viser); ``showroom export-bag``
writes what the node would publish to an MCAP bag for ``ros2 bag play`` and Foxglove. None of them
needs ROS. ``generate`` and ``distill`` forward to their own modules.

Every failure ends with a one-line ``showroom <command>: error: ...`` on stderr and a non-zero exit
status; ``--debug`` (or ``SHOWROOM_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from showroom_ros.io.console import FractionProgress, progress_factory, result, say, stdout_for_results
from showroom_ros.io.file_names import (
    GENERATED_SUFFIX,
    KEYFRAMES_SUFFIX,
    NAME_RULE,
    name_refusal,
    reconstruction_files,
)
from showroom_ros.io.message_layout import DISPLAY_MAX_TRIANGLES
from showroom_ros.models.names import DEFAULT_ENGINE, ENGINE_PRECISION_CHOICES, ENGINES, FAST3R_RELEASE_REPO

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
GENERATED_SUFFIXES = (GENERATED_SUFFIX, "generated")  # beside the .npz, or a folder named "generated"


class CliError(RuntimeError):
    """A user-facing failure: printed as one line, exit status 1."""


# --- small helpers -------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    """Complete or absent, like every other output; imported here because io.export loads Open3D (~1 s)."""
    from showroom_ros.io.export import atomic_write_text

    atomic_write_text(path, text)


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def find_reconstruction(path: Path) -> Path:
    """The .npz of a reconstruction: the file itself, or the only one in a folder written by reconstruct."""
    path = path.expanduser()
    if not path.exists():
        raise CliError(f"{path} does not exist")
    if path.is_file():
        if path.suffix != ".npz":
            raise CliError(f"{path} is not a reconstruction .npz (run `showroom reconstruct` first)")
        return path
    candidates = sorted(path.glob("*.npz"))
    if not candidates:
        raise CliError(
            f"{path} holds no reconstruction .npz (run `showroom reconstruct ... --out {path}` first)"
        )
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise CliError(f"{path} holds several reconstructions ({names}): name the .npz to use")
    return candidates[0]


def _load_reconstruction(npz: Path) -> Any:
    from showroom_ros.io.export import load_reconstruction

    try:
        return load_reconstruction(npz)
    except ValueError as error:
        raise CliError(str(error)) from None


# --- reconstruct ---------------------------------------------------------------------------------


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
            raise CliError(
                f"--model/--device need the learned backends, which do not import here: {error}"
            ) from None
        return dict(default_backends())

    if backend == "showroom" and not model:
        raise CliError(
            "--backend showroom needs --model: a path or Hugging Face repo of the ShowRoom student weights"
        )
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
        config = BackendsConfig(
            fast3r=learned(fast3r_model), showroom=learned(showroom_model), start_loading=False
        )
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
    _write_text(folder / "frames_c2w.txt", "\n".join(lines) + "\n")
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
        selector = KeyframeSelectorConfig(
            max_keyframes=args.max_keyframes, min_keyframes=min(3, args.max_keyframes)
        )
    except ValueError as error:
        raise CliError(f"--max-keyframes: {error}") from None
    backends = _make_backends(args.backend, args.model, args.device, args.engine, args.engine_precision)
    if args.map:
        return _reconstruct_map(args, source, name, out, backends, selector, started)
    pipeline = ReconstructionPipeline(
        PipelineConfig(backend=args.backend, build_mesh=not args.no_mesh), backends
    )

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
    say(f"{len(keyframes)} keyframes from {source} ({offline.kind}) in {_fmt_seconds(load_seconds)}", quiet)
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
    written["keyframes"] = _write_keyframes(
        keyframes, reconstruction.camera_poses, out / f"{name}{KEYFRAMES_SUFFIX}"
    )
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
    _write_text(summary_path, json.dumps(summary, indent=2) + "\n")
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
        config = RobotMapConfig(
            occupancy=OccupancyConfig(floor_z=args.floor_z), gravity_aligned=args.map_up != "none"
        )
    except ValueError as error:
        raise CliError(f"--map: {error}") from None
    robot_map = RobotMap(config)
    pipeline = ReconstructionPipeline(PipelineConfig(backend=args.backend, build_mesh=False), backends)
    backend_notes = _load_weights(backends, args.backend, quiet)

    def report(window: Any) -> None:
        if window.error:
            say(f"window {window.number} ({', '.join(window.keyframes)}): failed: {window.error}", quiet)
        else:
            text = f"{window.backend}; {window.update.summary} in {_fmt_seconds(window.seconds)}"
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
    _write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
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
            f"windows    {len(done)} mapped" + (f", {failed} failed" if failed else "")
            + f" (window {args.window}, overlap {args.overlap})",
            f"map        {robot_map.keyframe_count} keyframes in frame '{robot_map.frame_id}', "
            f"{robot_map.block_count:,} blocks, {summary['surface_points']:,} surface points; {occupancy}",
            f"seconds    total {_fmt_seconds(summary['seconds']['total'])}",
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
    stages = " | ".join(f"{k} {_fmt_seconds(v)}" for k, v in timings.items() if not k.endswith("_total"))
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
        f"seconds    startup {_fmt_seconds(seconds['startup'])} | load {_fmt_seconds(seconds['load'])}"
        + (f" | weights {_fmt_seconds(seconds['weights'])}" if seconds["weights"] >= 0.01 else "")
        + f" | reconstruct {_fmt_seconds(seconds['pipeline'])} | write {_fmt_seconds(seconds['write'])}"
        f" | total {_fmt_seconds(seconds['total'])}",
        f"first picture after {_fmt_seconds(seconds['first_picture'])}: {summary['outputs']['png']}",
        "wrote      "
        + ", ".join(
            summary["outputs"][k] for k in ("cloud", "mesh", "glb", "npz") if k in summary["outputs"]
        ),
    ]
    return "\n".join(lines)


# --- view ----------------------------------------------------------------------------------------


def _load_views_folder(folder: Path) -> list[Any]:
    from showroom_ros.io.datasets import DatasetError, load_frame_folder

    try:
        return load_frame_folder(folder, with_depth=False)
    except DatasetError as error:
        raise CliError(str(error)) from None


def load_view_inputs(
    path: Path, generated: Path | None = None
) -> tuple[Any, list[np.ndarray] | None, list[Any], Path]:
    """Reconstruction, keyframe images (when saved beside it) and generated views for ``showroom view``."""
    npz = find_reconstruction(path)
    reconstruction = _load_reconstruction(npz)
    images = None
    keyframe_folder = npz.with_name(npz.stem + KEYFRAMES_SUFFIX)
    if keyframe_folder.is_dir():
        frames = _load_views_folder(keyframe_folder)
        if len(frames) == len(reconstruction.camera_poses):
            images = [frame.image for frame in frames]
    views: list[Any] = []
    if generated is not None:
        if not generated.is_dir():
            raise CliError(f"--generated {generated} is not a folder")
        views = _load_views_folder(generated)
    else:
        for suffix in GENERATED_SUFFIXES:
            candidate = npz.with_name(npz.stem + suffix) if suffix.startswith("_") else npz.parent / suffix
            if candidate.is_dir() and any(candidate.glob("frames_c2w*.txt")):
                views = _load_views_folder(candidate)
                break
    return reconstruction, images, views, npz


def cmd_view(args: argparse.Namespace) -> int:
    from showroom_ros.apps.viewer import ReconstructionViewer, ViewerError

    reconstruction, images, generated, npz = load_view_inputs(
        Path(args.path), Path(args.generated).expanduser() if args.generated else None
    )
    viewer = ReconstructionViewer(max_points=args.max_points)
    try:
        url = viewer.start(args.host, args.port)
    except ViewerError as error:
        raise CliError(str(error)) from None
    stop = threading.Event()
    try:
        viewer.show(reconstruction, keyframe_images=images, generated=generated)
        result(  # the result: a script reads the URL from stdout
            f"showroom viewer: {url}  ({npz.name}: {reconstruction.num_points:,} points"
            f"{', mesh' if reconstruction.mesh is not None else ''}, "
            f"{len(reconstruction.camera_poses)} keyframes"
            f"{f', {len(generated)} generated views' if generated else ''}); Ctrl-C to stop"
        )
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            stop.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    return 0


# --- export-bag ----------------------------------------------------------------------------------


def cmd_export_bag(args: argparse.Namespace) -> int:
    from showroom_ros.io.export_bag import export_reconstruction_bag

    npz = find_reconstruction(Path(args.path))
    reconstruction = _load_reconstruction(npz)
    out = Path(args.out).expanduser() if args.out else npz.with_name(npz.stem + "_bag")
    if out.exists():
        raise CliError(f"{out} already exists: choose another --out or remove it first")
    stamp_ns = None if args.stamp is None else round(args.stamp * 1e9)
    if stamp_ns is not None and stamp_ns < 0:
        raise CliError("--stamp must be >= 0 seconds")
    try:
        path = export_reconstruction_bag(
            reconstruction,
            out,
            stamp_ns=stamp_ns,
            frame_id=args.frame_id,
            storage=args.storage,
            topic_prefix=args.topic_prefix,
            max_triangles=args.max_triangles,
        )
    except FileExistsError as error:
        raise CliError(str(error)) from None
    prefix = "/" + args.topic_prefix.strip("/") if args.topic_prefix.strip("/") else ""
    frame_id = args.frame_id or reconstruction.frame_id
    if args.json:
        document = {
            "bag": str(path),
            "storage": args.storage,
            "frame_id": frame_id,
            "topics": [f"{prefix}/cloud", f"{prefix}/mesh", f"{prefix}/keyframes"],
            "points": int(reconstruction.num_points),
            "keyframes": len(reconstruction.camera_poses),
        }
        result(json.dumps(document, indent=2))
    elif not args.quiet:
        result(
            f"wrote {path} ({args.storage}): {prefix}/cloud ({reconstruction.num_points:,} points), "
            f"{prefix}/mesh, {prefix}/keyframes ({len(reconstruction.camera_poses)} poses) in frame "
            f"'{frame_id}'; play with `ros2 bag play {path}`"
        )
    return 0


# --- forwarded subcommands -----------------------------------------------------------------------

FORWARDED = {
    "generate": (("showroom_ros.generation.cli", "main"), ("showroom_ros.generation", "main")),
    "distill": (("showroom_ros.distillation.cli", "main"),),
}


def _forward(command: str, argv: list[str]) -> int:
    """Run another module's ``main(argv)``; a missing module is a clear error, not an ImportError."""
    problems = []
    for module_name, function in FORWARDED[command]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            problems.append(f"{module_name}: {error}")
            continue
        entry = getattr(module, function, None)
        if callable(entry):
            try:
                result = entry(argv)
            except SystemExit as exit_request:  # their argparse (--help, usage errors)
                code = exit_request.code
                return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
            return int(result or 0)
        problems.append(f"{module_name} has no {function}()")
    extra = {"generate": "generation", "distill": "distill"}[command]
    raise CliError(
        f"`showroom {command}` is not available in this install ({'; '.join(problems)}); "
        f"install the extras with pip install 'showroom_ros[{extra}]'"
    )


# --- parser and main -----------------------------------------------------------------------------


def _intrinsics(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="showroom",
        description="Reconstruct rooms from 3-5 photos offline, view them in a browser, "
        "export them as ROS bags.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

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
    rec.add_argument(
        "--all", action="store_true", help="use every frame of a folder instead of 3-5 selected ones"
    )
    rec.add_argument(
        "--frames", help="comma-separated frame names of a folder to use (e.g. frame-000250,frame-000300)"
    )
    rec.add_argument("--max-keyframes", type=_positive_int, default=5, help="keyframes to select (default 5)")
    rec.add_argument("--no-mesh", action="store_true", help="skip the Screened Poisson surface")
    rec.add_argument("--no-depth", action="store_true", help="ignore depth images (RGB-only backends)")
    rec.add_argument("--no-poses", action="store_true", help="ignore known camera poses")
    rec.add_argument(
        "--intrinsics",
        nargs=4,
        type=_intrinsics,
        metavar=("FX", "FY", "CX", "CY"),
        help="colour camera intrinsics in pixels (override camera.yaml / CameraInfo)",
    )
    bag = rec.add_argument_group("rosbag2 input (topics are found automatically when there is one candidate)")
    bag.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage colour topic")
    bag.add_argument("--depth-topic", help="depth image topic (16UC1 mm, 32FC1 m, or compressedDepth)")
    bag.add_argument("--camera-info-topic", help="CameraInfo of the colour camera")
    bag.add_argument(
        "--depth-info-topic", help="CameraInfo of the depth camera when not registered to colour"
    )
    bag.add_argument("--pose-topic", help="geometry_msgs/PoseStamped camera poses instead of TF")
    bag.add_argument(
        "--fixed-frame", help="frame the poses are expressed in (default: the root of the TF tree)"
    )
    bag.add_argument("--camera-frame", help="camera optical frame (default: the images' header.frame_id)")
    bag.add_argument(
        "--depth-scale", type=float, default=1000.0, help="16-bit depth units per metre (default 1000)"
    )
    robot_map = rec.add_argument_group("continuous mapping (--map): the robot map of every frame")
    robot_map.add_argument(
        "--map",
        action="store_true",
        help="map every frame: reconstruct overlapping keyframe windows, integrate them into one TSDF "
        "map and write its mesh, cloud, Nav2 occupancy grid and volume to --out",
    )
    robot_map.add_argument("--window", type=_positive_int, default=5, help="keyframes per window (default 5)")
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

    view = commands.add_parser(
        "view",
        help="show a reconstruction in the browser (viser)",
        description="Serve a reconstruction (.npz written by `showroom reconstruct`, or its folder) "
        "on a local "
        "web page: cloud, mesh (toggle), keyframe cameras with their images, generated views.",
    )
    view.add_argument("path", help="reconstruction .npz or the folder `showroom reconstruct` wrote")
    view.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    view.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    view.add_argument("--generated", help="folder of generated views (frames_c2w.txt layout)")
    view.add_argument("--max-points", type=_positive_int, default=600_000, help="points sent to the browser")
    view.add_argument("--seconds", type=float, help=argparse.SUPPRESS)  # stop after this long (tests)
    view.set_defaults(handler=cmd_view)

    export = commands.add_parser(
        "export-bag",
        help="write the node's messages for a reconstruction to a rosbag2 (MCAP)",
        description="Write PointCloud2 (<prefix>/cloud), MarkerArray (<prefix>/mesh) and PoseArray "
        "(<prefix>/keyframes) of a reconstruction to a rosbag2, without ROS installed.",
    )
    export.add_argument("path", help="reconstruction .npz or the folder `showroom reconstruct` wrote")
    export.add_argument("--out", help="bag folder to create (default: <name>_bag beside the .npz)")
    export.add_argument(
        "--storage", choices=("mcap", "sqlite3"), default="mcap", help="bag storage (default mcap)"
    )
    export.add_argument(
        "--topic-prefix", default="/showroom", help="topic namespace (default /showroom, the node's)"
    )
    export.add_argument("--frame-id", help="header frame (default: the reconstruction's frame)")
    export.add_argument(
        "--max-triangles",
        type=int,
        default=DISPLAY_MAX_TRIANGLES,
        help="decimate the mesh markers to this many triangles, as the node does (0: keep all)",
    )
    export.add_argument("--stamp", type=float, help="message time in seconds since the epoch (default: now)")
    export.add_argument("--json", action="store_true", help="print what was written as JSON")
    export.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")
    export.set_defaults(handler=cmd_export_bag)

    for command, text in (
        ("generate", "generate novel views (forwards to showroom_ros.generation)"),
        ("distill", "distil a student model (forwards to showroom_ros.distillation)"),
    ):
        commands.add_parser(command, help=text, add_help=False)
    return parser


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``showroom`` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments or os.environ.get("SHOWROOM_DEBUG", "") not in ("", "0")
    arguments = [a for a in arguments if a != "--debug"]
    command = next((a for a in arguments if not a.startswith("-")), "")
    try:
        if command in FORWARDED:
            position = arguments.index(command)
            return _forward(command, arguments[position + 1 :])
        parser = build_parser()
        try:
            args = parser.parse_args(arguments)
        except SystemExit as exit_request:  # --help, or a usage error argparse already explained
            return int(exit_request.code or 0) if isinstance(exit_request.code, int) else EXIT_USAGE
        with stdout_for_results():  # after parsing: --help is the result of a --help
            return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"showroom {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            raise
        print(f"showroom {command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
