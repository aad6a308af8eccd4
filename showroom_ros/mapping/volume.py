"""The robot's persistent volumetric map: a TSDF + weight + colour grid on Open3D's ``VoxelBlockGrid``.

Open3D's tensor voxel-block grid is a kept, tested TSDF (hashed 8^3 blocks, CPU and CUDA kernels,
marching cubes), so this module only adds what a robot map needs around it: integration of a
keyframe in map frame within a depth range, a block budget that bounds memory, a depth map rendered
from a backend's pointmap when there is no sensor depth, and an atomic save/load of the whole map.
Poses are camera-to-map in OpenCV optical axes, depth is camera z in metres (NaN/0 = no data).

Beyond the budget: with ``spill_dir``, the pages of blocks farthest from the camera go to a
:class:`~showroom_ros.mapping.block_store.BlockStore` on disk, and the pages a new frame touches
come back before it is integrated, so every TSDF value continues exactly as if all had stayed in
memory; the map (``block_count``, save/load) is the blocks in memory plus those on disk. Without it,
the blocks farthest from the camera are erased (and the report says which).

Open3D's block hash map grows by copying every block (seconds at 16k blocks) whenever a frame's
blocks (new or not) exceed its free slots, so the grid keeps ``reserve_blocks`` of room ahead: a new
grid and a loaded map are made with it, and :meth:`TsdfVolume.reserve_ahead` lets the owner grow the
map while nothing waits on it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import open3d as o3d
import open3d.core as o3c

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.mapping.block_store import (
    BlockStore,
    BlockStoreError,
    blocks_isin,
    group_pages,
    open_npz_writer,
    page_keys,
    write_npy_entry,
)
from showroom_ros.reconstruction.render import render_points

VOXEL_ATTRIBUTES = ("tsdf", "weight", "color")  # per voxel: 1, 1 and 3 float32
_FORMAT_VERSION = 2  # 1: one set of arrays; 2: the map in parts of whole pages (written without holding it all)
_PART_BLOCKS = 4096  # blocks per part of a saved map: 40 MB of voxels at a time
_SPILL_SLACK = 0.05  # of the budget: spilled beyond need, so that spilling is not a cost of every frame
# Where and how this machine keeps the map, not what the map is: not saved, and a loaded map takes the loader's.
_LOCAL_FIELDS = ("device", "spill_dir", "spill_max_bytes")

Blocks = tuple[np.ndarray, dict[str, np.ndarray]]  # (N, 3) int32 keys, attribute name -> (N, r, r, r, c) float32


@dataclass(frozen=True)
class VolumeConfig:
    """Map parameters; a block is ``block_resolution`` voxels on a side (8 x 2 cm = 16 cm)."""

    voxel_size: float = 0.02
    block_resolution: int = 8
    trunc_voxel_multiplier: float = 4.0  # truncation = multiplier x voxel size (8 cm at 2 cm voxels)
    depth_min: float = 0.1
    depth_max: float = 4.0
    block_budget: int = 60_000  # about 60k x 512 voxels x 20 B = 0.6 GB
    weight_threshold: float = 0.5  # Open3D extracts voxels with weight strictly above this (0.5 = seen once)
    device: str = "auto"  # "auto" = CUDA:0 when Open3D has CUDA, else CPU:0
    # Blocks beyond the budget go to a block store in this folder (None: they are erased), in pages of
    # spill_page_blocks^3 blocks, at most spill_max_bytes of files (then integration raises BlockStoreFull).
    spill_dir: str | None = None
    spill_max_bytes: int = 16 * 2**30
    spill_page_blocks: int = 4
    reserve_blocks: int = 8192  # hash-map room kept for a frame's blocks (Open3D zero-fills it: 10 kB a block)

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {self.voxel_size}")
        if self.block_resolution < 2:
            raise ValueError(f"block_resolution must be >= 2, got {self.block_resolution}")
        if not self.trunc_voxel_multiplier > 0:
            raise ValueError(f"trunc_voxel_multiplier must be > 0, got {self.trunc_voxel_multiplier}")
        if not 0 <= self.depth_min < self.depth_max:
            raise ValueError(f"need 0 <= depth_min < depth_max, got {self.depth_min}, {self.depth_max}")
        if self.block_budget < 1:
            raise ValueError(f"block_budget must be >= 1, got {self.block_budget}")
        if self.spill_dir is not None and not str(self.spill_dir).strip():
            raise ValueError("spill_dir must name a folder (or be None to erase blocks beyond the budget)")
        if self.spill_max_bytes < 1:
            raise ValueError(f"spill_max_bytes must be >= 1, got {self.spill_max_bytes}")
        if self.spill_page_blocks < 1:
            raise ValueError(f"spill_page_blocks must be >= 1, got {self.spill_page_blocks}")
        if self.reserve_blocks < 0:
            raise ValueError(f"reserve_blocks must be >= 0, got {self.reserve_blocks}")

    @property
    def block_size(self) -> float:
        """Edge of one block in metres."""
        return self.voxel_size * self.block_resolution

    @property
    def truncation(self) -> float:
        """TSDF truncation distance in metres."""
        return self.voxel_size * self.trunc_voxel_multiplier


def _no_blocks() -> np.ndarray:
    return np.zeros((0, 3), np.int32)


@dataclass
class IntegrationReport:
    """What one integration changed (block coords): the blocks it wrote, the blocks the budget erased for good
    (no spill folder), and the blocks that went to disk or came back from it (still part of the map, unchanged)."""

    touched_blocks: np.ndarray = field(default_factory=_no_blocks)
    dropped_blocks: np.ndarray = field(default_factory=_no_blocks)
    spilled_blocks: np.ndarray = field(default_factory=_no_blocks)
    reloaded_blocks: np.ndarray = field(default_factory=_no_blocks)

    @property
    def message(self) -> str:
        """A line for the log/status; says when memory bounding dropped part of the map or moved it to disk."""
        text = f"integrated {len(self.touched_blocks)} blocks"
        if len(self.dropped_blocks):
            text += f"; block budget reached: dropped {len(self.dropped_blocks)} blocks farthest from the camera"
        if len(self.spilled_blocks):
            text += f"; block budget reached: {len(self.spilled_blocks)} blocks farthest from the camera went to disk"
        if len(self.reloaded_blocks):
            text += f"; {len(self.reloaded_blocks)} blocks came back from disk"
        return text


def _device(name: str) -> o3c.Device:
    if name == "auto":
        return o3c.Device("CUDA:0" if o3c.cuda.is_available() else "CPU:0")
    return o3c.Device(name)


def _pose(pose_c2w: np.ndarray) -> np.ndarray:
    pose = np.asarray(pose_c2w, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise ValueError(f"pose_c2w must be a finite 4x4 camera-to-map matrix, got shape {pose.shape}")
    return pose


def render_depth_from_points(
    points: np.ndarray,
    pose_c2w: np.ndarray,
    intrinsics: CameraIntrinsics,
    confidence: np.ndarray | None = None,
    min_confidence: float = 0.0,
    point_radius_px: int = 1,
) -> np.ndarray:
    """Depth (camera z, metres, NaN = empty) of a backend's pointmap/cloud seen from a keyframe camera.

    Why: learned backends give points, not depth; the TSDF integrates depth. Open3D's integration
    takes no per-pixel weight, so confidence acts as a gate: points below ``min_confidence`` are not
    drawn (they would otherwise carve or invent surface with full weight).
    """
    xyz = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if confidence is not None:
        conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
        if len(conf) != len(xyz):
            raise ValueError(f"confidence has {len(conf)} values for {len(xyz)} points")
        xyz = xyz[np.isfinite(conf) & (conf >= min_confidence)]
    result = render_points(xyz, None, _pose(pose_c2w), intrinsics, point_radius_px=point_radius_px)
    return result.depth.astype(np.float32)


class TsdfVolume:
    """A growing TSDF map in map frame. Not thread-safe: one owner (the mapping worker) calls it."""

    def __init__(self, config: VolumeConfig | None = None, expected_blocks: int = 0) -> None:
        """``expected_blocks``: blocks the map will hold at once (a map being loaded); the hash map gets room for them
        and ``reserve_blocks`` more."""
        self.config = config or VolumeConfig()
        self.device = _device(self.config.device)
        cfg = self.config
        self._store = (
            BlockStore(cfg.spill_dir, cfg.spill_max_bytes, cfg.spill_page_blocks) if cfg.spill_dir is not None else None
        )
        self._grid = self._new_grid(expected_blocks)

    def _new_grid(self, blocks: int) -> o3d.t.geometry.VoxelBlockGrid:
        """An empty grid with room for ``blocks`` and ``reserve_blocks`` more."""
        return self.empty_grid(blocks + self.config.reserve_blocks)

    def empty_grid(self, capacity: int) -> o3d.t.geometry.VoxelBlockGrid:
        """An empty grid like the map's (voxel and block size, attributes, device), room for ``capacity`` blocks."""
        cfg = self.config
        return o3d.t.geometry.VoxelBlockGrid(
            VOXEL_ATTRIBUTES,
            (o3c.float32, o3c.float32, o3c.float32),
            ((1), (1), (3)),
            cfg.voxel_size,
            cfg.block_resolution,
            max(int(capacity), 16),
            self.device,
        )

    @property
    def grid(self) -> o3d.t.geometry.VoxelBlockGrid:
        """The underlying Open3D grid: the blocks in memory (for extraction by chunks)."""
        return self._grid

    @property
    def store(self) -> BlockStore | None:
        """Where blocks beyond the budget wait (None without ``spill_dir``)."""
        return self._store

    @property
    def block_count(self) -> int:
        """Number of blocks of the map: in memory and on disk."""
        return self.resident_block_count + self.stored_block_count

    @property
    def resident_block_count(self) -> int:
        """Blocks in memory (what the budget bounds)."""
        return int(self._grid.hashmap().size())

    @property
    def stored_block_count(self) -> int:
        """Blocks on disk, beyond the budget."""
        return self._store.block_count if self._store is not None else 0

    @property
    def stored_bytes(self) -> int:
        """Bytes of the block files on disk."""
        return self._store.nbytes if self._store is not None else 0

    @property
    def capacity(self) -> int:
        """Blocks the hash map holds before Open3D must grow it (by copying every block)."""
        return int(self._grid.hashmap().capacity())

    def block_coords(self) -> np.ndarray:
        """(N, 3) int32 coordinates of every block in memory (block index = floor(position / block size))."""
        hashmap = self._grid.hashmap()
        return hashmap.key_tensor()[hashmap.active_buf_indices()].cpu().numpy().astype(np.int32)

    def stored_block_coords(self) -> np.ndarray:
        """(N, 3) int32 coordinates of every block on disk."""
        return self._store.block_coords() if self._store is not None else _no_blocks()

    def memory_bytes(self) -> int:
        """Bytes used by the blocks in memory: voxels (tsdf, weight, 3 colour floats) and keys."""
        voxels = self.config.block_resolution**3
        return self.resident_block_count * (voxels * 5 * 4 + 3 * 4)

    def clear(self) -> None:
        """Forget the whole map (its blocks on disk too)."""
        if self._store is not None:
            self._store.clear()
        self._grid = self._new_grid(0)

    def close(self) -> None:
        """Delete the blocks on disk and their folder (also done when the volume is garbage collected)."""
        if self._store is not None:
            self._store.close()

    def reserve_ahead(self) -> bool:
        """Grow the hash map now if fewer than ``reserve_blocks / 2`` slots are free (never beyond budget + reserve).

        Why: Open3D grows the hash map, copying every block (seconds at 16k blocks), inside the integration
        whose frame's blocks, counted whether new or not, exceed the free slots; so the map keeps
        ``reserve_blocks`` of room beyond the budget for a frame, and the owner calls this when nothing
        waits on the map (after publishing). Returns whether it grew.
        """
        cfg = self.config
        size, capacity = self.resident_block_count, self.capacity
        limit = max(cfg.block_budget, size) + cfg.reserve_blocks
        if capacity >= limit or capacity - size >= cfg.reserve_blocks // 2:
            return False
        self._grid.hashmap().reserve(min(limit, max(size + cfg.reserve_blocks, 2 * capacity)))
        return True

    def integrate(
        self,
        depth_m: np.ndarray,
        intrinsics: CameraIntrinsics,
        pose_c2w: np.ndarray,
        color: np.ndarray | None = None,
        color_intrinsics: CameraIntrinsics | None = None,
    ) -> IntegrationReport:
        """Fuse one keyframe's depth (metres, camera z; NaN/<=0 = none) and optional uint8 RGB into the map.

        Blocks of the frame that wait on disk come back first; when the block store cannot take or give
        back blocks this raises :class:`~showroom_ros.mapping.block_store.BlockStoreError` before the
        frame is integrated, and every block of the map is still in memory or on disk, unchanged.
        """
        depth = np.asarray(depth_m, dtype=np.float32)
        if depth.shape != (intrinsics.height, intrinsics.width):
            raise ValueError(
                f"depth shape {depth.shape} does not match intrinsics {intrinsics.width}x{intrinsics.height}"
            )
        pose = _pose(pose_c2w)
        usable = np.isfinite(depth) & (depth >= self.config.depth_min) & (depth <= self.config.depth_max)
        depth = np.where(usable, depth, 0.0).astype(np.float32)
        if not np.any(depth > 0):
            return IntegrationReport()
        cfg = self.config
        depth_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth))).to(self.device)
        intrinsic = o3c.Tensor(intrinsics.matrix, o3c.float64)
        extrinsic = o3c.Tensor(np.linalg.inv(pose), o3c.float64)
        coords = self._grid.compute_unique_block_coordinates(
            depth_image, intrinsic, extrinsic, 1.0, cfg.depth_max, cfg.trunc_voxel_multiplier
        )
        report = IntegrationReport(touched_blocks=coords.cpu().numpy().astype(np.int32))
        try:
            self._make_room(report, pose[:3, 3])
        except BlockStoreError as error:
            raise type(error)(f"{error}; the frame was not integrated, and the map keeps every block it had") from error
        self._allocate(coords)
        if color is None:
            self._grid.integrate(
                coords, depth_image, intrinsic, extrinsic, 1.0, cfg.depth_max, cfg.trunc_voxel_multiplier
            )
        else:
            rgb = np.asarray(color)
            color_k = color_intrinsics or intrinsics
            if rgb.shape != (color_k.height, color_k.width, 3) or rgb.dtype != np.uint8:
                raise ValueError(
                    f"color must be uint8 ({color_k.height}, {color_k.width}, 3), got {rgb.dtype} {rgb.shape}"
                )
            color_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0)).to(
                self.device
            )
            self._grid.integrate(
                coords,
                depth_image,
                color_image,
                intrinsic,
                o3c.Tensor(color_k.matrix, o3c.float64),
                extrinsic,
                1.0,
                cfg.depth_max,
                cfg.trunc_voxel_multiplier,
            )
        return report

    # --- the budget -------------------------------------------------------------------------------
    def _make_room(self, report: IntegrationReport, camera_position: np.ndarray) -> None:
        """Before a frame is integrated: keep the budget (spill or erase the farthest), then bring its pages back.

        The frame's own blocks (and with a store, the pages holding them) are never spilled or erased;
        a frame larger than the budget keeps all its blocks (the map then holds just that frame).
        Spilling goes first so that memory never holds more than the budget.
        """
        frame = report.touched_blocks
        store = self._store
        returning = store.stored_pages_of(frame) if store is not None else []
        _, resident = self._grid.hashmap().find(self._tensor(frame))
        arriving = int((~resident.cpu().numpy()).sum())  # new blocks and those coming back from disk
        if returning:
            assert store is not None
            coming = np.concatenate([store.keys_of(page) for page in returning])
            arriving += len(coming) - int(blocks_isin(coming, frame).sum())  # the rest of their pages
        excess = self.resident_block_count + arriving - self.config.block_budget
        if excess > 0:
            if store is None:
                report.dropped_blocks = self._erase_farthest(frame, camera_position, excess)
            else:  # a little more than needed, so that the next frames need not spill again at once
                slack = int(self.config.block_budget * _SPILL_SLACK)
                report.spilled_blocks = self._spill_farthest(frame, camera_position, excess + slack)
        back = [self._take_back(page) for page in returning]
        if back:
            report.reloaded_blocks = np.concatenate(back)

    def _erase_farthest(self, frame: np.ndarray, camera_position: np.ndarray, excess: int) -> np.ndarray:
        """Erase the ``excess`` blocks farthest from the camera, never the frame's own."""
        existing = self.block_coords()
        candidates = existing[~blocks_isin(existing, frame)]
        if len(candidates) == 0:
            return _no_blocks()
        centre = (candidates.astype(np.float64) + 0.5) * self.config.block_size
        distance = np.linalg.norm(centre - camera_position, axis=1)
        drop = candidates[np.argsort(-distance, kind="stable")[: min(excess, len(candidates))]]
        self._grid.hashmap().erase(self._tensor(drop))
        return drop

    def _spill_farthest(self, frame: np.ndarray, camera_position: np.ndarray, excess: int) -> np.ndarray:
        """Move whole pages, farthest from the camera first, to the store until ``excess`` blocks went.

        A page that cannot be written stays in memory and the store's error propagates (pages moved
        before it stay on disk: each page is in exactly one place).
        """
        assert self._store is not None
        page_size = self.config.spill_page_blocks
        rows = self._grid.hashmap().active_buf_indices().cpu().numpy()
        keys = self._grid.hashmap().key_tensor().cpu().numpy()[rows].astype(np.int32)
        frame_pages, _ = group_pages(frame, page_size)
        movable = ~blocks_isin(page_keys(keys, page_size), frame_pages)
        rows, keys = rows[movable], keys[movable]
        pages, members = group_pages(keys, page_size)
        if not members:
            return _no_blocks()
        centre = (pages.astype(np.float64) + 0.5) * page_size * self.config.block_size
        order = np.argsort(-np.linalg.norm(centre - camera_position, axis=1), kind="stable")
        counts = np.array([len(members[i]) for i in order])
        spilled = []
        for index in order[: int(np.searchsorted(np.cumsum(counts), excess)) + 1].tolist():
            page_blocks = keys[members[index]]
            self._store.put(tuple(pages[index].tolist()), page_blocks, self._values(rows[members[index]]))
            self._grid.hashmap().erase(self._tensor(page_blocks))
            spilled.append(page_blocks)
        return np.concatenate(spilled) if spilled else _no_blocks()

    def _allocate(self, coords: o3c.Tensor) -> None:
        """Allocate the frame's new blocks with zero TSDF, weight and colour.

        Why not let ``integrate`` allocate them: Open3D hands a new block the buffer slot of an erased
        (spilled or dropped) one without clearing it, so the new block would start with that block's
        values and weights (its fresh slots are zero only because the buffer is zero-filled when made).
        """
        buffer_indices, new = self._grid.hashmap().activate(coords)
        if not bool(new.any()):
            return
        rows = buffer_indices[new].to(o3c.int64)
        for value in self._grid.hashmap().value_tensors():
            if self.device.get_type() == o3c.Device.DeviceType.CPU:
                value.numpy()[rows.numpy()] = 0.0  # a zero-copy view of the buffer
            else:
                value[rows] = o3c.Tensor.zeros((int(rows.shape[0]), *value.shape[1:]), value.dtype, self.device)

    def _take_back(self, page: tuple[int, int, int]) -> np.ndarray:
        """Bring one page from the store into memory; returns its block coords."""
        assert self._store is not None
        keys, arrays = self._store.take(page)
        self._insert(keys, arrays)
        return keys

    # --- block values ------------------------------------------------------------------------------
    def _tensor(self, keys: np.ndarray) -> o3c.Tensor:
        return o3c.Tensor(np.ascontiguousarray(keys, dtype=np.int32).reshape(-1, 3)).to(self.device)

    def _values(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Attribute arrays of the blocks at hash-map buffer ``rows`` (copies)."""
        values = self._grid.hashmap().value_tensors()
        if self.device.get_type() == o3c.Device.DeviceType.CPU:
            # numpy fancy indexing of the zero-copy views is several times faster than Open3D's tensor indexing.
            return {name: value.numpy()[rows] for name, value in zip(VOXEL_ATTRIBUTES, values, strict=True)}
        index = o3c.Tensor(np.asarray(rows, dtype=np.int64)).to(self.device)
        return {name: value[index].cpu().numpy() for name, value in zip(VOXEL_ATTRIBUTES, values, strict=True)}

    def _insert(self, keys: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        if len(keys) == 0:
            return
        tensors = [o3c.Tensor(np.ascontiguousarray(arrays[n], np.float32)).to(self.device) for n in VOXEL_ATTRIBUTES]
        self._grid.hashmap().insert(self._tensor(keys), tensors)

    def stored_blocks(self, keys: np.ndarray) -> Blocks | None:
        """Values of those of ``keys`` that wait on disk (they stay there), or None: for a chunk mesher whose
        neighbourhood reaches into blocks beyond the budget."""
        if self._store is None or len(keys) == 0:
            return None
        return self._store.blocks(keys)

    def iter_blocks(self, max_blocks: int = _PART_BLOCKS) -> Iterator[Blocks]:
        """The whole map in parts of whole pages (about ``max_blocks`` blocks): memory first, then disk.

        Why parts: a map beyond the budget is written (and compared) without holding all of it.
        """
        hashmap = self._grid.hashmap()
        rows = hashmap.active_buf_indices().cpu().numpy()
        keys = hashmap.key_tensor().cpu().numpy()[rows].astype(np.int32)
        part: list[np.ndarray] = []
        for members in group_pages(keys, self.config.spill_page_blocks)[1]:
            part.append(members)
            if sum(len(m) for m in part) >= max_blocks:  # cut between pages once a part is full
                yield keys[np.concatenate(part)], self._values(rows[np.concatenate(part)])
                part = []
        if part:
            yield keys[np.concatenate(part)], self._values(rows[np.concatenate(part)])
        if self._store is not None:
            for _, keys, arrays in self._store.iter_pages():
                yield keys, arrays

    # --- extraction --------------------------------------------------------------------------------
    def extract_point_cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """Surface points (N, 3) float64 and colours (N, 3) uint8 of the blocks in memory.

        The whole map when nothing waits on disk; else ``ChunkedMesh`` (``RobotMap.surface()``) has it all.
        """
        if self.resident_block_count == 0:
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
        cloud = self._grid.extract_point_cloud(self.config.weight_threshold)
        points = cloud.point.positions.cpu().numpy().astype(np.float64)
        if "colors" in cloud.point:
            colors = _to_uint8(cloud.point.colors.cpu().numpy())
        else:
            colors = np.full((len(points), 3), 200, np.uint8)
        return points, colors

    def extract_mesh(self) -> o3d.geometry.TriangleMesh:
        """Marching-cubes mesh of the blocks in memory (legacy Open3D mesh, vertex colours 0..1).

        The whole map when nothing waits on disk; else ``RobotMap.mesh()`` meshes it all, part by part.
        """
        return extract_mesh_of(self._grid, self.config.weight_threshold)

    # --- save, load --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the whole map (memory and disk; keys, tsdf, weight, colour, config) to an ``.npz``, atomically."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # io/export.py's naming (what a stopping node removes), and "x" rather than mkstemp: the file gets the
        # umask's mode, where mkstemp's 0600 would carry over to the saved map.
        temp = target.with_name(f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            with open(temp, "xb") as handle:
                self.write_npz(handle)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):  # a read-only disk: the error to raise is the one that failed
                temp.unlink(missing_ok=True)
            raise
        return target

    def write_npz(self, destination: str | os.PathLike[str] | BinaryIO) -> None:
        """Write the whole map's ``.npz`` to exactly ``destination`` (a path or an open binary file), not atomically:
        for callers with their own atomic writer (apps/map_session.py). One part (of whole pages) at a time."""
        with open_npz_writer(destination) as archive:
            write_npy_entry(archive, "format_version", np.array(_FORMAT_VERSION))
            for key, value in asdict(self.config).items():
                if key not in _LOCAL_FIELDS:
                    write_npy_entry(archive, f"config_{key}", np.array(value))
            parts = 0
            for keys, arrays in self.iter_blocks():
                write_npy_entry(archive, f"part{parts}_keys", keys)
                for name in VOXEL_ATTRIBUTES:
                    write_npy_entry(archive, f"part{parts}_{name}", arrays[name])
                parts += 1
            write_npy_entry(archive, "parts", np.array(parts))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], device: str | None = None, *, local: VolumeConfig | None = None
    ) -> TsdfVolume:
        """Read a volume written by :meth:`save`: the file's map parameters, this machine's device and spill folder.

        ``local`` gives the device, ``spill_dir`` and ``spill_max_bytes`` (``device`` overrides its device).
        Within the budget the blocks are loaded into memory; with a spill folder the rest go to disk, without
        one they are all loaded (the next integration then keeps the budget).
        """
        with np.load(Path(path), allow_pickle=False) as data:
            version = int(data["format_version"])
            if version not in (1, _FORMAT_VERSION):
                raise ValueError(f"{path}: unsupported volume format {version}")
            names = set(VolumeConfig.__dataclass_fields__) - set(_LOCAL_FIELDS)
            values = {k[len("config_") :]: data[k].item() for k in data.files if k.startswith("config_")}
            settings = {k: v for k, v in values.items() if k in names}
            here = local or VolumeConfig()
            settings.update({name: getattr(here, name) for name in _LOCAL_FIELDS})
            if device is not None:
                settings["device"] = device
            config = VolumeConfig(**settings)
            prefixes = [""] if version == 1 else [f"part{i}_" for i in range(int(data["parts"]))]
            total = sum(int(data[f"{prefix}keys"].shape[0]) for prefix in prefixes)
            volume = cls(config, expected_blocks=min(total, config.block_budget) if config.spill_dir else total)
            try:
                for prefix in prefixes:
                    keys = data[f"{prefix}keys"].astype(np.int32)
                    volume._load_part(keys, {name: data[f"{prefix}{name}"] for name in VOXEL_ATTRIBUTES})
            except BaseException:
                volume.close()
                raise
        return volume

    def _load_part(self, keys: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Blocks of a saved map into memory while the budget allows (or no store), whole pages to disk after."""
        if self._store is None:
            self._insert(keys, arrays)
            return
        pages, groups = group_pages(keys, self.config.spill_page_blocks)
        resident_pages, _ = group_pages(self.block_coords(), self.config.spill_page_blocks)
        in_memory = blocks_isin(pages, resident_pages)
        for index, (page, member) in enumerate(zip(map(tuple, pages.tolist()), groups, strict=True)):
            part = {name: array[member] for name, array in arrays.items()}
            fits = self.resident_block_count + len(member) <= self.config.block_budget
            if in_memory[index] or (page not in self._store and fits):
                self._insert(keys[member], part)
            else:
                self._store.put(page, keys[member], part)


def _to_uint8(colors: np.ndarray) -> np.ndarray:
    """Open3D's grid keeps colour as float 0..1 here (we integrate 0..1 images)."""
    return (np.clip(np.nan_to_num(colors), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def extract_mesh_of(grid: o3d.t.geometry.VoxelBlockGrid, weight_threshold: float) -> o3d.geometry.TriangleMesh:
    """Marching cubes of a grid as a legacy mesh; empty grids give an empty mesh."""
    if grid.hashmap().size() == 0:
        return o3d.geometry.TriangleMesh()
    mesh = grid.extract_triangle_mesh(weight_threshold).to_legacy()
    if mesh.has_vertex_colors():
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(mesh.vertex_colors), 0.0, 1.0))
    return mesh
