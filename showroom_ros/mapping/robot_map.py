"""One persistent robot map: reconstructions' keyframes fused into a TSDF, its chunked mesh and occupancy grid.

Why a class around :mod:`volume`, :mod:`mesh_chunks` and :mod:`occupancy`: the node and the offline CLI
must do the same bookkeeping after every reconstruction window. They integrate each keyframe once (a
window overlaps the previous one so learned backends stay registered, and the overlap must not count
twice), take depth from the sensor or render it from the backend's cloud, re-mesh only the chunks an
integration touched, and keep the occupancy grid's free space across integrations.

Free space memory: each integration's keyframe rays are turned into observed-free cells, which are OR-ed
into one boolean grid that grows with the map's xy extent (``OccupancyConfig.max_cells`` bounds it: one
byte per 5 cm cell, 25 MB at the default limit). Obstacles are not accumulated: they are recomputed
from the current TSDF surface, so carved or budget-dropped surface stops being an obstacle, and an
obstacle always wins over remembered free space. The rays themselves are not kept.

Not thread-safe: the node calls a ``RobotMap`` from its one mapping worker thread only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import open3d as o3d

from showroom_ros.capture.keyframes import Keyframe
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.mapping.fused_views import FusedViews, camera_reach
from showroom_ros.mapping.mesh_chunks import ChunkedMesh, ChunkUpdate
from showroom_ros.mapping.occupancy import (
    OccupancyConfig,
    OccupancyGrid,
    Rays,
    build_occupancy,
    depth_rays,
)
from showroom_ros.mapping.occupancy_memory import FreeCells, Obstacles, compose_occupancy
from showroom_ros.mapping.volume import IntegrationReport, TsdfVolume, VolumeConfig, render_depth_from_points
from showroom_ros.reconstruction.result import Reconstruction

KeyframeKey = tuple[int, int, str]


class MapInputError(ValueError):
    """A reconstruction the map cannot take (not metric, another frame, cameras that do not pair up)."""


@dataclass(frozen=True)
class RobotMapConfig:
    """Map parameters. ``occupancy.floor_z``/``min_height``/``max_height`` set the obstacle band.

    ``gravity_aligned`` says the map frame's z is up (REP-103); without it there is no occupancy grid.
    ``render_min_confidence`` gates a backend's points before they are rendered into a keyframe's
    depth (the TSDF takes no per-pixel weight): rgbd confidence counts keyframes (>= 1), Fast3R's is
    >= 1, SfM's is a track length (>= 2). ``render_scale`` renders that depth at a fraction of the
    colour resolution, which closes the holes between a fused cloud's voxels. ``ray_stride`` samples
    every n-th depth pixel for free-space rays.

    ``redundant_translation_m``/``redundant_rotation_deg``: a keyframe whose camera is within both of a
    keyframe already fused is not fused again (``MapUpdate.redundant``): seeing the same surface again
    adds nothing but blocks where its depth noise reaches past the earlier band, so a static scene seen
    over and over would grow the map (docs/mapping.md, "Static scenes"). The defaults (2 cm, 2 deg) are
    10x a tracker's pose jitter and small against the node's frame-rate path (every evaluated frame is
    offered; on the 7-Scenes walk at 5 Hz consecutive frames are 1-2 cm apart), so a moving camera keeps
    filling the map while a still one adds nothing. 0 turns the check off.
    """

    frame_id: str = "map"
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    chunk_size_m: float = 1.0
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)
    gravity_aligned: bool = True
    render_min_confidence: float = 0.0
    render_scale: float = 0.5
    render_point_radius_px: int = 1
    ray_stride: int = 4
    redundant_translation_m: float = 0.02
    redundant_rotation_deg: float = 2.0

    def __post_init__(self) -> None:
        if not self.frame_id.strip():
            raise ValueError("frame_id must name the map frame, got an empty string")
        if not isinstance(self.volume, VolumeConfig):
            raise ValueError(f"volume must be a VolumeConfig, got {type(self.volume).__name__}")
        if not isinstance(self.occupancy, OccupancyConfig):
            raise ValueError(f"occupancy must be an OccupancyConfig, got {type(self.occupancy).__name__}")
        if not (math.isfinite(self.chunk_size_m) and self.chunk_size_m >= self.volume.block_size):
            raise ValueError(
                f"chunk_size_m must be at least one block ({self.volume.block_size:g} m), got {self.chunk_size_m}"
            )
        if not math.isfinite(self.render_min_confidence):
            raise ValueError(f"render_min_confidence must be finite, got {self.render_min_confidence}")
        if not 0 < self.render_scale <= 1:
            raise ValueError(f"render_scale must be in (0, 1], got {self.render_scale}")
        if self.render_point_radius_px < 0:
            raise ValueError(f"render_point_radius_px must be >= 0, got {self.render_point_radius_px}")
        if self.ray_stride < 1:
            raise ValueError(f"ray_stride must be >= 1, got {self.ray_stride}")
        if not (math.isfinite(self.redundant_translation_m) and self.redundant_translation_m >= 0):
            raise ValueError(f"redundant_translation_m must be >= 0 (0 = off), got {self.redundant_translation_m}")
        if not 0 <= self.redundant_rotation_deg <= 180:
            raise ValueError(f"redundant_rotation_deg must be in [0, 180] (0 = off), got {self.redundant_rotation_deg}")


@dataclass
class MapUpdate:
    """What one integration (or load) changed, for the node's topics and ``~/status``.

    ``integrated``/``skipped``/``redundant`` are keyframe indices of the window; ``depth_sources[i]`` is
    "sensor" or "rendered" for ``integrated[i]``. ``redundant``: not fused because a keyframe from nearly
    the same pose is in the map already (:class:`RobotMapConfig`). ``occupancy`` is None when there is no
    grid; ``occupancy_reason`` then says why.
    """

    reports: list[IntegrationReport] = field(default_factory=list)
    chunks: ChunkUpdate = field(default_factory=ChunkUpdate)
    occupancy: OccupancyGrid | None = None
    occupancy_reason: str = ""
    integrated: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    redundant: list[int] = field(default_factory=list)
    depth_sources: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    block_count: int = 0
    memory_bytes: int = 0
    stored_blocks: int = 0  # of block_count, those on disk beyond the budget
    stored_bytes: int = 0

    @property
    def dropped_blocks(self) -> int:
        """Blocks the block budget erased during this update."""
        return sum(len(r.dropped_blocks) for r in self.reports)

    @property
    def spilled_blocks(self) -> int:
        """Blocks the block budget moved to disk during this update (still in the map, its chunks and grid)."""
        return sum(len(r.spilled_blocks) for r in self.reports)

    @property
    def summary(self) -> str:
        """One line for the log/status."""
        on_disk = f"; {self.stored_blocks} on disk, {self.stored_bytes / 2**20:.1f} MiB" if self.stored_blocks else ""
        text = (
            f"integrated {len(self.integrated)} keyframes ({', '.join(self.depth_sources) or 'none'}); "
            f"map {self.block_count} blocks ({self.memory_bytes / 2**20:.1f} MiB in memory{on_disk}); "
            f"{len(self.chunks.changed)} chunks changed, {len(self.chunks.removed)} removed"
        )
        if self.skipped:
            text += f"; skipped {len(self.skipped)}"
        if self.redundant:
            text += f"; {len(self.redundant)} redundant (a fused keyframe has nearly the same pose: not fused again)"
        if self.dropped_blocks:
            text += f"; block budget reached: dropped {self.dropped_blocks} blocks farthest from the camera"
        if self.spilled_blocks:
            text += f"; block budget reached: {self.spilled_blocks} blocks farthest from the camera went to disk"
        if self.occupancy is None and self.occupancy_reason:
            text += f"; no occupancy grid: {self.occupancy_reason}"
        return text


def keyframe_key(keyframe: Keyframe) -> KeyframeKey:
    """Identity of a keyframe across windows: camera, stamp and source file (copies compare equal)."""
    return (int(keyframe.camera_id), int(keyframe.stamp_ns), keyframe.metadata.get("rgb", ""))


def _for_size(intrinsics: CameraIntrinsics, width: int, height: int) -> CameraIntrinsics | None:
    """The intrinsics at another resolution of the same camera, None when the aspect ratio differs."""
    if (intrinsics.width, intrinsics.height) == (width, height):
        return intrinsics
    if abs(intrinsics.width / intrinsics.height - width / height) > 0.01 * width / height:
        return None
    return intrinsics.scaled(width, height)


class RobotMap:
    """The robot's map in ``config.frame_id``: integrate reconstructions, publish chunks, grid, cloud; save/load.

    Not thread-safe: one owner (the node's mapping worker thread, or the CLI) calls every method.
    """

    def __init__(self, config: RobotMapConfig | None = None) -> None:
        self.config = config or RobotMapConfig()
        self.volume = TsdfVolume(self.config.volume)
        self.chunks = ChunkedMesh(self.volume, self.config.chunk_size_m, keep_points=True)
        occ = self.config.occupancy
        self._free = FreeCells(occ.resolution, occ.max_cells)
        self._obstacles = Obstacles(occ)
        self._obstacles_stale = False
        self._integrated: set[KeyframeKey] = set()
        self._views = FusedViews(self.config.redundant_translation_m, self.config.redundant_rotation_deg)
        self._redundant_count = 0
        # Fused since the last refresh: the blocks whose chunks need meshing again, and the rays for the grid.
        self._pending_reports: list[IntegrationReport] = []
        self._pending_rays: list[Rays] = []
        self._occupancy: OccupancyGrid | None = None
        self._occupancy_reason = "the map is empty"

    # --- state --------------------------------------------------------------------------------
    @property
    def frame_id(self) -> str:
        return self.config.frame_id

    @property
    def keyframe_count(self) -> int:
        """Keyframes integrated since the map was created, cleared or loaded."""
        return len(self._integrated)

    def is_integrated(self, keyframe: Keyframe) -> bool:
        """Whether this keyframe (by :func:`keyframe_key`) is already in the map."""
        return keyframe_key(keyframe) in self._integrated

    def is_redundant(self, pose_c2w: np.ndarray) -> bool:
        """Whether a keyframe at this camera-to-map pose would not be fused: one near it is in the map already."""
        return self._views.near(np.asarray(pose_c2w, dtype=np.float64))

    @property
    def redundant_count(self) -> int:
        """Keyframes not fused because they were redundant, since the map was created, cleared or loaded."""
        return self._redundant_count

    @property
    def block_count(self) -> int:
        return self.volume.block_count

    @property
    def occupancy_reason(self) -> str:
        """Why :meth:`occupancy` is None ("" when there is a grid)."""
        return self._occupancy_reason

    def surface(self) -> tuple[np.ndarray, np.ndarray]:
        """Surface points (N, 3) float64 in the map frame and colours (N, 3) uint8: the ~/map cloud.

        The same points as ``volume.extract_point_cloud()`` (up to order), kept per chunk and updated
        with the chunks, so a window does not extract the whole map's cloud again.
        """
        return self.chunks.points()

    def occupancy(self) -> OccupancyGrid | None:
        """The latest 2D grid (z = 0 plane of the map frame), or None (see :attr:`occupancy_reason`)."""
        return self._occupancy

    def mesh(self) -> o3d.geometry.TriangleMesh:
        """Marching cubes of the whole map, blocks on disk included (for saving; the topics use the chunks).

        With blocks on disk it is meshed part by part (a full :class:`ChunkedMesh` rebuild), never all in memory.
        """
        if self.volume.stored_block_count == 0:
            return self.volume.extract_mesh()
        whole = ChunkedMesh(self.volume, self.config.chunk_size_m)
        whole.update(None)
        return whole.mesh()

    def reserve_ahead(self) -> bool:
        """Grow the TSDF's hash map now, while nothing waits on the map, if it is nearly full
        (:meth:`TsdfVolume.reserve_ahead`): the node calls it after publishing."""
        return self.volume.reserve_ahead()

    def close(self) -> None:
        """Delete the map's blocks on disk (also done when the map is garbage collected)."""
        self.volume.close()

    # --- integration ----------------------------------------------------------------------------
    def check(self, reconstruction: Reconstruction) -> None:
        """Raise :class:`MapInputError` when the reconstruction cannot go into this map, saying why."""
        if reconstruction.sparse:
            raise MapInputError(
                f"a sparse {reconstruction.backend or 'unknown'} result (scattered points, no surface) would carve "
                "and invent surfaces in the TSDF"
            )
        if not reconstruction.metric:
            raise MapInputError(
                f"reconstruction by '{reconstruction.backend or 'unknown'}' is not metric (frame "
                f"'{reconstruction.frame_id}'): the map needs metres; give the keyframes depth or poses"
            )
        if reconstruction.frame_id != self.frame_id:
            raise MapInputError(
                f"reconstruction is in frame '{reconstruction.frame_id}' but the map is in '{self.frame_id}': "
                "the keyframes need poses in the map frame (TF or a pose topic)"
            )

    def integrate(
        self, reconstruction: Reconstruction, keyframes: Sequence[Keyframe], indices: Sequence[int] | None = None
    ) -> MapUpdate:
        """Fuse keyframes of one reconstruction window (default all; each keyframe only once) into the map.

        Poses come from ``reconstruction.camera_poses`` (the result is in map frame; when a backend
        could not place every keyframe, from the keyframes' own poses). Depth is the keyframe's sensor
        depth, else a depth map rendered from the reconstruction's confidence-gated points.
        """
        self.check(reconstruction)
        keyframes = list(keyframes)
        chosen = list(range(len(keyframes))) if indices is None else [int(i) for i in indices]
        bad = [i for i in chosen if not 0 <= i < len(keyframes)]
        if bad:
            raise MapInputError(f"keyframe indices {bad} out of range for {len(keyframes)} keyframes")
        poses = np.asarray(reconstruction.camera_poses, dtype=np.float64).reshape(-1, 4, 4)
        paired = len(poses) == len(keyframes)
        update = MapUpdate()
        if not paired:
            update.messages.append(
                f"the reconstruction placed {len(poses)} of {len(keyframes)} keyframes: using the keyframes' own poses"
            )
        points, confidence = reconstruction.points, reconstruction.confidence
        for index in chosen:
            keyframe = keyframes[index]
            if keyframe_key(keyframe) in self._integrated:
                update.skipped.append(index)  # fused already (the keyframe-rate path got there first)
                continue
            pose = poses[index] if paired else keyframe.pose
            if pose is None:
                update.skipped.append(index)
                update.messages.append(f"keyframe {index} has no pose in the map frame: skipped")
                continue
            colour_k = keyframe.intrinsics
            if colour_k is None and paired and len(reconstruction.intrinsics) == len(keyframes):
                colour_k = reconstruction.intrinsics[index]
            self._fuse(index, keyframe, pose, colour_k, update, points, confidence)
        return self._refreshed(update)

    def fuse_keyframes(self, keyframes: Sequence[Keyframe]) -> MapUpdate:
        """The keyframe-rate path: each keyframe with its own pose and sensor depth into the TSDF, once.

        No reconstruction is needed (depth with a pose is all a TSDF needs), and nothing is meshed: the
        chunks and the grid catch up at :meth:`refresh`, at the rate the map is published. A keyframe
        without a pose, depth or intrinsics is skipped with the reason in ``update.messages``.
        """
        update = MapUpdate()
        empty_points, empty_confidence = np.zeros((0, 3)), np.zeros(0)
        for index, keyframe in enumerate(keyframes):
            if keyframe_key(keyframe) in self._integrated:
                update.skipped.append(index)
                continue
            missing = [name for name in ("pose", "depth") if getattr(keyframe, name) is None]
            if missing:
                update.skipped.append(index)
                update.messages.append(f"keyframe {index} has no {' or '.join(missing)}: not fused at keyframe rate")
                continue
            self._fuse(index, keyframe, keyframe.pose, keyframe.intrinsics, update, empty_points, empty_confidence)
        return self._finish(update)

    @property
    def pending(self) -> int:
        """Keyframes fused since the last :meth:`refresh` (their chunks and grid cells are not updated yet)."""
        return len(self._pending_reports)

    def refresh(self) -> MapUpdate:
        """Mesh the chunks of every block touched since the last refresh, and rebuild the grid."""
        return self._refreshed(MapUpdate())

    def _fuse(
        self,
        index: int,
        keyframe: Keyframe,
        pose: np.ndarray,
        colour_k: CameraIntrinsics | None,
        update: MapUpdate,
        points: np.ndarray,
        confidence: np.ndarray,
    ) -> None:
        """One keyframe into the TSDF (unless it is redundant); its blocks and rays wait for :meth:`_refreshed`."""
        if self._views.near(pose):
            update.redundant.append(index)
            self._redundant_count += 1
            return
        if colour_k is not None:
            colour_k = _for_size(colour_k, keyframe.width, keyframe.height)
        if colour_k is None:
            update.skipped.append(index)
            update.messages.append(f"keyframe {index} has no intrinsics for its image size: skipped")
            return
        depth, depth_k, source = self._depth_of(keyframe, colour_k, pose, points, confidence)
        if depth_k is None:
            update.skipped.append(index)
            update.messages.append(f"keyframe {index}: depth intrinsics do not fit its depth image: skipped")
            return
        report = self.volume.integrate(depth, depth_k, pose, keyframe.image, colour_k)
        update.reports.append(report)
        self._pending_reports.append(report)
        if len(report.dropped_blocks):
            update.messages.append(f"keyframe {index}: {report.message}")
            self._forget_views_of(report.dropped_blocks)
        if len(report.touched_blocks):
            self._views.add(pose, camera_reach(depth_k, self.config.volume.depth_max) + self.config.volume.truncation)
        if len(report.touched_blocks) == 0:
            update.messages.append(
                f"keyframe {index}: no {source} depth within {self.config.volume.depth_min:g}-"
                f"{self.config.volume.depth_max:g} m"
            )
        self._pending_rays.append(
            depth_rays(depth, depth_k, pose, self.config.ray_stride, self.config.volume.depth_max)
        )
        self._integrated.add(keyframe_key(keyframe))
        update.integrated.append(index)
        update.depth_sources.append(source)

    def _forget_views_of(self, dropped_blocks: np.ndarray) -> None:
        """Views that could have written a dropped block are no longer redundant: their places may be fused again."""
        size = self.config.volume.block_size
        centres = (np.asarray(dropped_blocks, dtype=np.float64) + 0.5) * size
        self._views.forget_near(centres, margin=size * math.sqrt(3) / 2)

    def _refreshed(self, update: MapUpdate) -> MapUpdate:
        """Catch the chunks and the grid up with everything fused since the last refresh."""
        if self._pending_reports:
            reports, rays = self._pending_reports, self._pending_rays
            self._pending_reports, self._pending_rays = [], []
            combined = IntegrationReport(
                touched_blocks=np.concatenate([r.touched_blocks for r in reports]).astype(np.int32),
                dropped_blocks=np.concatenate([r.dropped_blocks for r in reports]).astype(np.int32),
            )
            update.chunks = self.chunks.update(combined)
            self._refresh_occupancy(rays)
        return self._finish(update)

    def _depth_of(
        self,
        keyframe: Keyframe,
        colour_k: CameraIntrinsics,
        pose: np.ndarray,
        points: np.ndarray,
        confidence: np.ndarray,
    ) -> tuple[np.ndarray, CameraIntrinsics | None, str]:
        """(depth, its intrinsics or None if they do not fit, "sensor" | "rendered")."""
        if keyframe.depth is not None:
            height, width = keyframe.depth.shape
            base = keyframe.depth_intrinsics or colour_k
            return keyframe.depth, _for_size(base, width, height), "sensor"
        cfg = self.config
        width = max(1, round(colour_k.width * cfg.render_scale))
        height = max(1, round(colour_k.height * cfg.render_scale))
        render_k = colour_k.scaled(width, height)
        depth = render_depth_from_points(
            points, pose, render_k, confidence, cfg.render_min_confidence, cfg.render_point_radius_px
        )
        return depth, render_k, "rendered"

    def _finish(self, update: MapUpdate) -> MapUpdate:
        update.occupancy = self._occupancy
        update.occupancy_reason = self._occupancy_reason
        update.block_count = self.volume.block_count
        update.memory_bytes = self.volume.memory_bytes()
        update.stored_blocks = self.volume.stored_block_count
        update.stored_bytes = self.volume.stored_bytes
        return update

    # --- occupancy ------------------------------------------------------------------------------
    def _refresh_occupancy(self, rays: Sequence[Rays]) -> None:
        """Remember the new rays' free cells, then rebuild the grid from the surface and the memory."""
        if not self.config.gravity_aligned:
            self._occupancy = None
            self._occupancy_reason = (
                f"map frame '{self.frame_id}' is not gravity-aligned (z up, REP-103): "
                "a floor plan needs the z axis to point up"
            )
            return
        cfg = self.config.occupancy
        try:
            if rays:
                self._free.add(build_occupancy(np.zeros((0, 3)), rays, cfg))
            self._occupancy = self._compose(cfg)
        except ValueError as error:  # the extent exceeds max_cells (a stray far point or a huge map)
            self._occupancy = None
            self._occupancy_reason = str(error)
            return
        self._occupancy_reason = "" if self._occupancy is not None else "the map has no surface or free space yet"

    def _compose(self, cfg: OccupancyConfig) -> OccupancyGrid | None:
        """Obstacles of the current surface over the remembered free cells (incremental: changed chunks only)."""
        obstacles = self._obstacles
        changes = self.chunks.point_changes
        self.chunks.point_changes = {}
        empty = np.zeros((0, 3))
        if self._obstacles_stale:  # a failed update left partial counts: recount every chunk once
            obstacles.clear()
            changes = {key: (empty, points) for key, points in self.chunks.chunk_points().items()}
        try:
            for key, (old, new) in changes.items():
                obstacles.change(key, old, new)
        except ValueError:
            self._obstacles_stale = True
            raise
        self._obstacles_stale = False
        occupied, offset = obstacles.occupied()
        return compose_occupancy(occupied, offset, obstacles.extent(), self._free.mask, self._free.offset, cfg)

    def occupancy_from_scratch(self) -> OccupancyGrid | None:
        """The grid recomputed from the whole surface and the free-space memory (what the incremental one equals)."""
        cfg = self.config.occupancy
        if self.volume.stored_block_count == 0:
            points, _ = self.volume.extract_point_cloud()
        else:  # the blocks on disk too, extracted part by part
            whole = ChunkedMesh(self.volume, self.config.chunk_size_m, keep_points=True)
            whole.update(None)
            points, _ = whole.points()
        reference = Obstacles(cfg)
        reference.change(0, np.zeros((0, 3)), points)
        occupied, offset = reference.occupied()
        return compose_occupancy(occupied, offset, reference.extent(), self._free.mask, self._free.offset, cfg)

    # --- clear, save, load ---------------------------------------------------------------------
    def clear(self) -> ChunkUpdate:
        """Empty the map; the update removes every published chunk."""
        self.volume.clear()
        self._free.clear()
        self._integrated.clear()
        self._views.clear()
        self._redundant_count = 0
        self._pending_reports, self._pending_rays = [], []
        self._obstacles.clear()
        self._occupancy = None
        self._occupancy_reason = "the map is empty"
        update = self.chunks.reset()
        self.chunks.point_changes = {}
        return update

    def save_volume(self, path: str | os.PathLike[str]) -> Path:
        """Write the TSDF (and its VolumeConfig) atomically to an ``.npz`` that :meth:`load_volume` continues from."""
        return self.volume.save(path)

    def write_volume(self, destination: str | os.PathLike[str]) -> None:
        """:meth:`save_volume` without its atomic rename, for a caller with its own atomic writer."""
        self.volume.write_npz(destination)

    def load_volume(self, path: str | os.PathLike[str], occupancy: OccupancyGrid | None = None) -> MapUpdate:
        """Replace the map with a saved volume and continue mapping from it.

        The file's VolumeConfig wins (voxel size, budget); the device and the spill folder stay this
        map's: blocks beyond the budget go to disk, and this map's blocks on disk are deleted. ``occupancy``
        (a saved grid, e.g. read back from the Nav2 files) seeds the remembered free space: the volume
        file holds no rays. The update removes chunks no longer present and sends every chunk again.
        """
        loaded = TsdfVolume.load(path, local=self.config.volume)
        previously = self.chunks.reset().removed
        self.config = replace(self.config, volume=loaded.config)
        self.volume.close()
        self.volume = loaded
        self.chunks = ChunkedMesh(self.volume, self.config.chunk_size_m, keep_points=True)
        self._integrated.clear()
        self._views.clear()
        self._redundant_count = 0
        self._pending_reports, self._pending_rays = [], []
        self._obstacles.clear()
        self._obstacles_stale = False
        self._free.clear()
        update = MapUpdate()
        if occupancy is not None and occupancy.data.size:
            if not math.isclose(occupancy.resolution, self.config.occupancy.resolution, rel_tol=1e-6):
                update.messages.append(
                    f"saved occupancy grid is at {occupancy.resolution:g} m, the map uses "
                    f"{self.config.occupancy.resolution:g} m: its free space was not restored"
                )
            else:
                self._free.add(occupancy)
        rebuilt = self.chunks.update(None)
        present = {c.chunk_id for c in rebuilt.changed}
        update.chunks = ChunkUpdate(changed=rebuilt.changed, removed=sorted(set(previously) - present))
        self._refresh_occupancy([])
        update.messages.append(f"loaded {Path(path).name}: {self.volume.block_count} blocks")
        return self._finish(update)
