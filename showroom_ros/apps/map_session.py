"""Robot map sessions: save/load a :class:`RobotMap` as files, and continuous mapping over recorded frames.

``save_map`` writes what a robot needs to keep or hand on: the mesh and the surface cloud (PLY), the
occupancy grid as nav2_map_server files (PGM + YAML), the TSDF volume (``.npz``) that ``load_map``
continues mapping from, and a small ``<name>_map.yaml`` (frame, occupancy band); each file is written
atomically (temporary name, then rename). They hold the whole map: a map beyond its block budget keeps
blocks on disk (``VolumeConfig.spill_dir``), and those are written too, part by part, never all in memory.
The volume holds no rays, so ``load_map`` seeds the remembered free space from the saved occupancy grid.

``ContinuousMapper`` is the offline counterpart of the node's continuous mode: keyframes arrive one at
a time; every ``window`` of them is reconstructed with the pipeline and integrated, and the next window
starts with the last ``overlap`` keyframes (so learned backends see shared views and stay registered).
The map integrates each keyframe once. ``map_input`` feeds it every frame of a folder or a bag.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from showroom_ros.apps.offline import BagOptions, OfflineInputError, is_bag, load_bag
from showroom_ros.capture.keyframes import Keyframe, KeyframeSelector, KeyframeSelectorConfig
from showroom_ros.io.console import ProgressFactory, silent
from showroom_ros.io.datasets import FRAME_PERIOD_NS, DatasetError, find_index, load_frame_folder, read_frame_index
from showroom_ros.io.datasets import read_rgb as _read_rgb
from showroom_ros.io.export import atomic_write, atomic_write_text, save_mesh_ply, save_point_cloud_ply
from showroom_ros.io.file_names import MAP_FILES, map_files, map_files_beside
from showroom_ros.io.map_files import read_nav2_map, write_nav2_map
from showroom_ros.mapping.occupancy import OccupancyGrid
from showroom_ros.mapping.robot_map import MapInputError, MapUpdate, RobotMap, RobotMapConfig
from showroom_ros.reconstruction.pipeline import ReconstructionError, ReconstructionPipeline
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh

# --- save / load -----------------------------------------------------------------------------------


def _settings(config: RobotMapConfig) -> dict[str, object]:
    """What the volume file does not hold but continuing the map needs: its frame and occupancy band."""
    return {
        "frame_id": config.frame_id,
        "gravity_aligned": config.gravity_aligned,
        "chunk_size_m": config.chunk_size_m,
        "occupancy": asdict(config.occupancy),
    }


def read_settings(path: str | os.PathLike[str], base: RobotMapConfig | None = None) -> RobotMapConfig:
    """The RobotMapConfig a ``<name>_map.yaml`` describes (other fields from ``base``)."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping of map settings")
    config = base or RobotMapConfig()
    occupancy = replace(config.occupancy, **dict(document.get("occupancy") or {}))
    fields = {k: document[k] for k in ("frame_id", "gravity_aligned", "chunk_size_m") if k in document}
    return replace(config, occupancy=occupancy, **fields)


def save_map(robot_map: RobotMap, directory: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Write the whole map's mesh, cloud, occupancy grid (when there is one) and volume; returns kind -> path.

    Whole: blocks beyond the budget, waiting on disk, are in the volume, the mesh, the cloud and the grid.

    The files are :func:`~showroom_ros.io.file_names.map_files` (a ``name`` that breaks the name rule
    raises :class:`~showroom_ros.io.file_names.InvalidName`, a ValueError, before anything is written).
    Without an occupancy grid (see ``robot_map.occupancy_reason``) the ``occupancy_*`` files are not
    written and their keys are absent. An empty map is refused: there is nothing to continue from.
    """
    paths = map_files(directory, name)
    if robot_map.block_count == 0:
        raise ValueError("the map is empty: integrate a reconstruction (or load a map) before saving")
    points, colors = robot_map.surface()
    mesh = robot_map.mesh()
    if len(points) == 0 or len(mesh.triangles) == 0:
        raise ValueError("the map has no surface yet (every block is below the weight threshold): nothing to save")
    written: dict[str, Path] = {}
    # Through io's atomic writer, like every other output: the temporaries are the ones a stopping node removes
    # (`.<name>.<pid>-<hex>.tmp<suffix>`), and the files get the umask's mode, not mkstemp's 0600.
    written["volume"] = atomic_write(paths["volume"], robot_map.write_volume)
    settings = yaml.safe_dump(_settings(robot_map.config), sort_keys=False)
    written["settings"] = atomic_write_text(paths["settings"], settings)
    vertex_colors = (
        np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else np.full((len(mesh.vertices), 3), 0.8)
    )
    written["mesh"] = save_mesh_ply(
        TriangleMesh(
            vertices=np.asarray(mesh.vertices, dtype=np.float32),
            triangles=np.asarray(mesh.triangles, dtype=np.int32),
            vertex_colors=(np.clip(vertex_colors, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8),
        ),
        paths["mesh"],
    )
    cloud = Reconstruction(
        points=points.astype(np.float32),
        colors=colors,
        confidence=np.ones(len(points), np.float32),
        camera_poses=np.zeros((0, 4, 4)),
        intrinsics=[],
        frame_id=robot_map.frame_id,
    )
    written["cloud"] = save_point_cloud_ply(cloud, paths["cloud"])
    grid = robot_map.occupancy()
    if grid is not None and grid.data.size:
        yaml_path, pgm_path = write_nav2_map(paths["occupancy_yaml"], grid.data, grid.resolution, grid.origin_xy)
        written["occupancy_yaml"], written["occupancy_pgm"] = yaml_path, pgm_path
    return written


def find_volume(path: str | os.PathLike[str]) -> Path:
    """The ``*_volume.npz`` a path names: the file itself, or the only one in a folder."""
    source = Path(path).expanduser()
    if source.is_file():
        return source
    if not source.is_dir():
        raise FileNotFoundError(f"{source} does not exist")
    suffix = MAP_FILES["volume"]
    candidates = sorted(source.glob(f"*{suffix}"))
    if len(candidates) != 1:
        what = "no" if not candidates else f"{len(candidates)} ({', '.join(c.name for c in candidates)})"
        raise ValueError(f"{source} holds {what} *{suffix} map volumes: name the file to load")
    return candidates[0]


def load_map(path: str | os.PathLike[str], config: RobotMapConfig | None = None) -> tuple[RobotMap, MapUpdate]:
    """A map continued from saved files (a folder with one saved map, or its ``_volume.npz``).

    The saved volume's VolumeConfig replaces ``config.volume``, except what belongs to this machine
    (device, ``spill_dir``, ``spill_max_bytes``): within the budget the blocks are loaded into memory,
    and with a spill folder the rest go to disk. Without ``config`` the saved ``<name>_map.yaml`` gives
    the frame and occupancy band (and there is no spill folder: every block is loaded). The saved
    ``<name>_occupancy.yaml``, when present, restores the remembered free space. The update sends every chunk.
    """
    volume = find_volume(path)
    saved_files = map_files_beside(volume) or {}  # a volume file named otherwise has no saved companions
    settings = saved_files.get("settings")
    if config is None and settings is not None and settings.is_file():
        config = read_settings(settings)
    robot_map = RobotMap(config)
    occupancy: OccupancyGrid | None = None
    yaml_path = saved_files.get("occupancy_yaml")
    if yaml_path is not None and yaml_path.is_file():
        saved = read_nav2_map(yaml_path)
        occupancy = OccupancyGrid(saved.data, saved.resolution, (saved.origin[0], saved.origin[1]))
    update = robot_map.load_volume(volume, occupancy)
    if occupancy is not None and yaml_path is not None:
        update.messages.append(f"free space restored from {yaml_path.name}")
    return robot_map, update


# --- continuous mapping ----------------------------------------------------------------------------


@dataclass
class WindowResult:
    """One reconstruction window: its keyframe labels, the backend, what the map did, or why it failed."""

    number: int
    keyframes: list[str]
    backend: str = ""
    update: MapUpdate | None = None
    error: str = ""
    seconds: float = 0.0


def _label(keyframe: Keyframe) -> str:
    source = keyframe.metadata.get("rgb")
    return Path(source).name if source else f"{keyframe.frame_id or 'camera'}@{keyframe.stamp_ns / 1e9:.3f}"


class ContinuousMapper:
    """Windows of keyframes -> reconstruction -> :meth:`RobotMap.integrate`, overlapping by ``overlap``.

    A window whose reconstruction fails is reported and skipped (the next one still starts with its
    last ``overlap`` keyframes); a reconstruction the map refuses (not metric, wrong frame) stops the
    run with :class:`MapInputError`, since every later window would be refused the same way.
    """

    def __init__(
        self,
        pipeline: ReconstructionPipeline,
        robot_map: RobotMap,
        window: int = 5,
        overlap: int = 1,
        transform: np.ndarray | None = None,
        on_window: Callable[[WindowResult], None] | None = None,
    ) -> None:
        least = max(2, pipeline.config.min_keyframes)
        if window < least:
            raise ValueError(f"window must hold at least {least} keyframes, got {window}")
        if not 0 <= overlap < window:
            raise ValueError(f"overlap must be between 0 and window - 1 = {window - 1}, got {overlap}")
        self.pipeline = pipeline
        self.robot_map = robot_map
        self.window = window
        self.overlap = overlap
        self.transform = None if transform is None else np.asarray(transform, dtype=np.float64)
        self.on_window = on_window
        self.results: list[WindowResult] = []
        self.keyframes_seen = 0
        self._pending: list[Keyframe] = []
        self._previous: list[Keyframe] = []

    @property
    def pending(self) -> list[Keyframe]:
        """Keyframes waiting for the next window (starts with the overlap)."""
        return list(self._pending)

    def add(self, keyframe: Keyframe) -> WindowResult | None:
        """Queue a keyframe; runs a window when ``window`` keyframes are queued."""
        if self.transform is not None and keyframe.pose is not None:
            keyframe = replace(keyframe, pose=self.transform @ keyframe.pose)
        self.keyframes_seen += 1
        self._pending.append(keyframe)
        return self._run() if len(self._pending) >= self.window else None

    def finish(self) -> WindowResult | None:
        """Reconstruct what is left (padded with earlier keyframes up to the pipeline's minimum)."""
        if not any(not self.robot_map.is_integrated(k) for k in self._pending):
            return None
        least = max(2, self.pipeline.config.min_keyframes)
        earlier = [k for k in self._previous if all(k is not p for p in self._pending)]
        while len(self._pending) < least and earlier:
            self._pending.insert(0, earlier.pop())
        if len(self._pending) < least:
            result = WindowResult(len(self.results) + 1, [_label(k) for k in self._pending])
            result.error = f"only {len(self._pending)} keyframe left: a reconstruction needs {least}"
            self._record(result)
            return result
        return self._run()

    def _run(self) -> WindowResult:
        keyframes, started = self._pending, time.perf_counter()
        result = WindowResult(len(self.results) + 1, [_label(k) for k in keyframes])
        try:
            reconstruction = self.pipeline.run(keyframes)
            if reconstruction.frame_id == "map":
                reconstruction.frame_id = self.robot_map.frame_id  # the poses' frame, as the node's map_frame
            result.backend = reconstruction.backend
            result.update = self.robot_map.integrate(reconstruction, keyframes)
        except MapInputError:
            raise
        except (ReconstructionError, ValueError) as error:
            result.error = " ".join(str(error).split())
        result.seconds = time.perf_counter() - started
        self._previous = keyframes
        self._pending = keyframes[len(keyframes) - self.overlap :] if self.overlap else []
        self._record(result)
        return result

    def _record(self, result: WindowResult) -> None:
        self.results.append(result)
        if self.on_window is not None:
            self.on_window(result)


def gravity_from_first_camera(pose_c2w: np.ndarray) -> np.ndarray:
    """A rigid transform into a z-up frame: the first camera's -y is up, it sits at the origin facing +x.

    Why: recorded sequences (7-Scenes, frames_c2w.txt folders) use arbitrary world frames; a floor
    plan needs z up. A handheld or robot camera is held roughly level, so its "up" approximates gravity.
    """
    pose = np.asarray(pose_c2w, dtype=np.float64)
    up = -pose[:3, 1] / np.linalg.norm(pose[:3, 1])
    forward = pose[:3, 2] - np.dot(pose[:3, 2], up) * up
    if np.linalg.norm(forward) < 1e-6:
        raise ValueError("the first camera looks straight up or down: its up direction is undefined")
    forward /= np.linalg.norm(forward)
    rotation = np.stack([forward, np.cross(up, forward), up])  # rows: map x, y, z in the old frame
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = -rotation @ pose[:3, 3]
    return transform


@dataclass
class MappingRun:
    """What :func:`map_input` did."""

    kind: str
    frames_considered: int = 0
    keyframes: int = 0
    windows: list[WindowResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    transform: np.ndarray | None = None  # applied to every keyframe pose (map from the input's frame)


def iter_folder_keyframes(
    folder: Path,
    selector: KeyframeSelectorConfig | None = None,
    with_depth: bool = True,
    with_poses: bool = True,
    progress: ProgressFactory = silent,
    counts: dict[str, int] | None = None,
) -> Iterator[Keyframe]:
    """Every frame of a folder considered in order; the selector's accepted ones loaded as keyframes.

    Unlike :func:`showroom_ros.apps.offline.load_folder` this never stops at ``max_keyframes``: each
    frame is compared with the last keyframe, and keyframes are read only when chosen (memory stays
    one window). Stamps follow the frame's position in the index, so keyframes stay distinct.
    """
    counts = counts if counts is not None else {}
    try:
        index = find_index(folder)
        if index is None:
            raise OfflineInputError(
                f"{folder} has no frames_c2w.txt: mapping needs camera poses in one frame for every frame"
            )
        records = read_frame_index(index)
    except DatasetError as error:
        raise OfflineInputError(str(error)) from None
    chooser = KeyframeSelector(selector or KeyframeSelectorConfig())
    reference: Keyframe | None = None
    bar = progress(len(records), "mapping frames")
    counts["frames"] = len(records)
    try:
        for position, record in enumerate(records):
            bar.update(1)
            try:
                image = _read_rgb(record.rgb)
            except DatasetError as error:
                raise OfflineInputError(str(error)) from None
            pose = record.pose if with_poses else None
            if not chooser.evaluate(image, pose=pose, reference=reference).accepted:
                continue
            name = str(record.rgb.relative_to(folder)) if record.rgb.is_relative_to(folder) else record.rgb.name
            try:
                (keyframe,) = load_frame_folder(
                    folder, names=[name], with_depth=with_depth, with_poses=with_poses, index=index
                )
            except DatasetError as error:
                raise OfflineInputError(str(error)) from None
            keyframe.stamp_ns = position * FRAME_PERIOD_NS
            reference = Keyframe(image=image, pose=pose)
            counts["keyframes"] = counts.get("keyframes", 0) + 1
            yield keyframe
    finally:
        bar.close()


def map_input(
    path: str | os.PathLike[str],
    mapper: ContinuousMapper,
    *,
    selector: KeyframeSelectorConfig | None = None,
    with_depth: bool = True,
    with_poses: bool = True,
    bag: BagOptions | None = None,
    up_from_first_camera: bool = False,
    progress: ProgressFactory = silent,
) -> MappingRun:
    """Continuous mapping over every frame of a frames_c2w.txt folder or a rosbag2, through ``mapper``.

    ``up_from_first_camera`` moves the poses into :func:`gravity_from_first_camera`'s z-up frame
    (set from the first keyframe) before reconstruction, for inputs whose world frame is not z up.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise OfflineInputError(f"{source} does not exist")
    if not with_poses:
        raise OfflineInputError("mapping needs camera poses: drop --no-poses")

    def feed(keyframe: Keyframe) -> None:
        if up_from_first_camera and mapper.transform is None and keyframe.pose is not None:
            mapper.transform = gravity_from_first_camera(keyframe.pose)
        mapper.add(keyframe)

    if is_bag(source):
        options = replace(bag or BagOptions(), max_keyframes=mapper.window, use_depth=with_depth)
        handed: list[Keyframe] = []

        def on_full(keyframes: list[Keyframe]) -> Sequence[Keyframe]:
            # The buffer starts with the overlap handed back last time; the rest are new keyframes.
            for keyframe in keyframes[len(handed) :]:
                feed(keyframe)
            handed[:] = keyframes[len(keyframes) - mapper.overlap :] if mapper.overlap else []
            return list(handed)

        offline = load_bag(source, options, selector, progress, on_full=on_full)
        for keyframe in offline.keyframes[len(handed) :]:
            feed(keyframe)
        mapper.finish()
        run = MappingRun("rosbag2", offline.frames_considered, mapper.keyframes_seen, mapper.results, offline.notes)
    elif source.is_dir():
        counts: dict[str, int] = {}
        for keyframe in iter_folder_keyframes(source, selector, with_depth, with_poses, progress, counts):
            feed(keyframe)
        mapper.finish()
        run = MappingRun("frame folder", counts.get("frames", 0), mapper.keyframes_seen, mapper.results)
        run.notes.append(
            f"selected {mapper.keyframes_seen} of {run.frames_considered} frames with the keyframe selector"
        )
    else:
        raise OfflineInputError(f"{source} is neither a frames_c2w.txt folder nor a rosbag2 (.mcap/.db3 or bag folder)")
    run.transform = mapper.transform
    if mapper.keyframes_seen == 0:
        raise OfflineInputError(f"no frame of {source} became a keyframe: nothing to map")
    return run
