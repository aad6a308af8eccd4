"""The map mesh cut into spatial chunks with stable ids, re-meshed only around the blocks an integration changed.

Why: a robot map grows to many thousands of blocks; re-running marching cubes over all of them and
resending the whole mesh after each keyframe does not scale. A chunk is a cube of ``chunk_blocks``
blocks (about 1 m); its id packs its integer coordinates, so it is the same across updates, saves
and loads (the ROS layer uses it as the marker id: ADD/MODIFY changed chunks, DELETE removed ones).
Each triangle goes to the chunk of its centroid.

Incremental update: every cached triangle (and surface point) carries the block of its "element
voxel" (its centroid, or point, in voxel units, floored with a small tolerance, so it is the voxel of
the marching-cubes cell that made it or that voxel's +1 neighbour along some axes). A write to block
``b`` changes only cells whose corners lie in ``b``: those cells' element blocks lie within one block
of ``b``. So only elements whose block lies in the changed blocks' one-block neighbourhood ``R`` are
re-extracted, from a small grid holding the blocks within two blocks of the changed ones (every cell
that can produce an element in ``R`` then has all its corners), and spliced into the cached chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d
import open3d.core as o3c

from showroom_ros.mapping.volume import VOXEL_ATTRIBUTES, IntegrationReport, TsdfVolume

_ID_BITS = 10
_ID_OFFSET = 1 << (_ID_BITS - 1)  # chunk coordinates in [-512, 511]: +-512 m at 1 m chunks
_ELEMENT_TOLERANCE = 0.01  # voxels: float32 positions on a cell face must not fall into the cell below


def _cube(radius: int) -> np.ndarray:
    steps = np.arange(-radius, radius + 1)
    return np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3).astype(np.int64)


_NEIGHBOURS = _cube(1)
_NEIGHBOURS_2 = _cube(2)
_FULL_PART_CHUNKS = 2  # a full rebuild with blocks on disk goes by cubes of this many chunks a side


@dataclass
class ChunkMesh:
    """One chunk's triangles: vertices (N, 3) float32 map metres, colours (N, 3) uint8, triangles (M, 3) int32."""

    chunk_id: int
    key: tuple[int, int, int]
    vertices: np.ndarray
    colors: np.ndarray
    triangles: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.vertices.nbytes + self.colors.nbytes + self.triangles.nbytes)


@dataclass
class ChunkUpdate:
    """Result of one update: chunks to (re)send, and ids of chunks that no longer have any surface."""

    changed: list[ChunkMesh] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.changed)


def chunk_id(key: np.ndarray | tuple[int, int, int]) -> int:
    """Stable non-negative int32 id of a chunk coordinate (10 bits per axis)."""
    return int(pack_chunk_keys(np.asarray(key, dtype=np.int64).reshape(1, 3))[0])


def pack_chunk_keys(keys: np.ndarray) -> np.ndarray:
    """Vectorised :func:`chunk_id`; raises for chunks outside +-512 chunks of the origin."""
    shifted = np.asarray(keys, dtype=np.int64) + _ID_OFFSET
    if len(shifted) and (shifted.min() < 0 or shifted.max() >= (1 << _ID_BITS)):
        raise ValueError("chunk coordinates outside [-512, 511]: the map is too far from its origin for chunk ids")
    return (shifted[:, 0] << (2 * _ID_BITS)) | (shifted[:, 1] << _ID_BITS) | shifted[:, 2]


def unpack_chunk_id(value: int) -> tuple[int, int, int]:
    """Chunk coordinate of an id."""
    mask = (1 << _ID_BITS) - 1
    return (
        ((value >> (2 * _ID_BITS)) & mask) - _ID_OFFSET,
        ((value >> _ID_BITS) & mask) - _ID_OFFSET,
        (value & mask) - _ID_OFFSET,
    )


class _BlockSet:
    """A set of block coordinates as a boolean box: membership of many blocks in O(n), no sorting."""

    def __init__(self, blocks: np.ndarray) -> None:
        self.lo = blocks.min(axis=0)
        self.mask = np.zeros(blocks.max(axis=0) - self.lo + 1, bool)
        self.mask[tuple((blocks - self.lo).T)] = True

    def contains(self, blocks: np.ndarray) -> np.ndarray:
        index = blocks.astype(np.int64) - self.lo
        inside = np.all((index >= 0) & (index < self.mask.shape), axis=1)
        result = np.zeros(len(blocks), bool)
        result[inside] = self.mask[tuple(index[inside].T)]
        return result


@dataclass
class _Elements:
    """What a grid extraction gave, split per chunk: triangles and (optionally) surface points."""

    vertices: np.ndarray  # (V, 3) float32
    colors: np.ndarray  # (V, 3) uint8
    triangles: np.ndarray  # (T, 3) int64 into vertices
    triangle_block: np.ndarray  # (T, 3) int32 element block
    triangle_chunk: np.ndarray  # (T,) chunk id (by centroid)
    points: np.ndarray  # (P, 3) float64
    point_colors: np.ndarray  # (P, 3) uint8
    point_block: np.ndarray  # (P, 3) int32
    point_chunk: np.ndarray  # (P,)


@dataclass
class _Chunk:
    """The cached state of one chunk: its published mesh and surface points, with each element's block."""

    mesh: ChunkMesh
    triangle_block: np.ndarray
    points: np.ndarray
    point_colors: np.ndarray
    point_block: np.ndarray


class ChunkedMesh:
    """Keeps every chunk's triangles (and surface points) and produces incremental updates of a :class:`TsdfVolume`.

    ``keep_points`` also keeps the grid's surface point cloud (``extract_point_cloud``) per chunk, so
    :meth:`points` is the whole map's cloud without extracting it again.
    """

    def __init__(self, volume: TsdfVolume, chunk_size_m: float = 1.0, keep_points: bool = False) -> None:
        self.volume = volume
        self.chunk_blocks = max(1, round(chunk_size_m / volume.config.block_size))
        self.keep_points = keep_points
        self._chunks: dict[int, _Chunk] = {}
        self._synced = volume.block_count == 0  # the cache describes the volume (else the next update is full)
        self._cloud: tuple[np.ndarray, np.ndarray] | None = None
        self.point_changes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def chunk_size(self) -> float:
        """Edge of a chunk in metres (a whole number of blocks)."""
        return self.chunk_blocks * self.volume.config.block_size

    @property
    def published(self) -> set[int]:
        """Ids of the chunks that currently have triangles (as last reported)."""
        return {cid for cid, chunk in self._chunks.items() if len(chunk.mesh.triangles)}

    @property
    def nbytes(self) -> int:
        """Bytes the cache holds: every chunk's mesh and kept surface points (with their blocks); it grows with
        the mapped area, blocks on disk included, since their chunks stay published."""
        return sum(
            c.mesh.nbytes + c.triangle_block.nbytes + c.points.nbytes + c.point_colors.nbytes + c.point_block.nbytes
            for c in self._chunks.values()
        )

    def chunk(self, cid: int) -> ChunkMesh | None:
        """The current mesh of one chunk (None when it has no triangles)."""
        state = self._chunks.get(cid)
        return state.mesh if state is not None and len(state.mesh.triangles) else None

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The map's surface points (N, 3) float64 and colours (N, 3) uint8, as ``extract_point_cloud`` gives them.

        Only with ``keep_points``; concatenated from the chunks on the first call after a change.
        """
        if not self.keep_points:
            raise RuntimeError("ChunkedMesh was made without keep_points")
        if self._cloud is None:
            parts = [c for c in self._chunks.values() if len(c.points)]
            if parts:
                self._cloud = (
                    np.concatenate([c.points for c in parts]),
                    np.concatenate([c.point_colors for c in parts]),
                )
            else:
                self._cloud = (np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
        return self._cloud

    def chunk_points(self) -> dict[int, np.ndarray]:
        """Surface points per chunk id (only with ``keep_points``)."""
        return {cid: c.points for cid, c in self._chunks.items() if len(c.points)}

    def reset(self) -> ChunkUpdate:
        """After the map was cleared: every published chunk is removed."""
        update = ChunkUpdate(removed=sorted(self.published))
        self.point_changes = {cid: (c.points, np.zeros((0, 3))) for cid, c in self._chunks.items() if len(c.points)}
        self._chunks.clear()
        self._cloud = None
        self._synced = self.volume.block_count == 0
        return update

    def update(self, report: IntegrationReport | None = None) -> ChunkUpdate:
        """Chunks whose triangles ``report`` (blocks written or dropped) changed; None = everything.

        ``point_changes`` then maps each chunk whose surface points changed to (old points, new points).
        """
        self.point_changes = {}
        if report is None or not self._synced:
            return self._full()
        changed_blocks = np.concatenate([report.touched_blocks, report.dropped_blocks]).astype(np.int64)
        if len(changed_blocks) == 0:
            return ChunkUpdate()
        update = ChunkUpdate()
        before = self.published
        self._resplice(np.unique(changed_blocks, axis=0), update)
        update.removed = sorted(before - self.published)
        return update

    def mesh(self) -> o3d.geometry.TriangleMesh:
        """Every chunk's triangles as one legacy Open3D mesh (vertex colours 0..1; vertices on chunk faces once)."""
        meshes = [self._chunks[cid].mesh for cid in sorted(self.published)]
        result = o3d.geometry.TriangleMesh()
        if not meshes:
            return result
        offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])[:-1]
        result.vertices = o3d.utility.Vector3dVector(np.concatenate([m.vertices for m in meshes]).astype(np.float64))
        result.triangles = o3d.utility.Vector3iVector(
            np.concatenate([m.triangles + offset for m, offset in zip(meshes, offsets, strict=True)]).astype(np.int32)
        )
        result.vertex_colors = o3d.utility.Vector3dVector(np.concatenate([m.colors for m in meshes]) / 255.0)
        return result.remove_duplicated_vertices()

    # --- internals ------------------------------------------------------------------------------------
    def _resplice(self, changed_blocks: np.ndarray, update: ChunkUpdate) -> None:
        """Re-extract the elements near ``changed_blocks`` (unique block coords) and splice them into the chunks."""
        # Element blocks whose elements may have changed: within one block of a changed block.
        region = _BlockSet((changed_blocks[:, None, :] + _NEIGHBOURS[None]).reshape(-1, 3))
        # Every cell that can make an element in the region has its corners within two blocks of a changed one.
        near = _BlockSet((changed_blocks[:, None, :] + _NEIGHBOURS_2[None]).reshape(-1, 3))
        source = np.argwhere(near.mask) + near.lo
        elements = self._extract(self._sub_grid(source))
        keep = region.contains(elements.triangle_block)
        keep_points = region.contains(elements.point_block)
        # Chunks that may hold a changed element: those of the region's blocks and their lower neighbours
        # (an element on a chunk's lower face may belong, by its centroid, to the chunk below).
        candidates = set(np.unique(pack_chunk_keys(np.floor_divide(source, self.chunk_blocks))).tolist())
        new_tris = _group(elements.triangle_chunk[keep], np.flatnonzero(keep))
        new_points = _group(elements.point_chunk[keep_points], np.flatnonzero(keep_points))
        candidates |= set(new_tris) | set(new_points)
        for cid in sorted(candidates):
            self._splice(cid, region, elements, new_tris.get(cid), new_points.get(cid), update)

    def _full(self) -> ChunkUpdate:
        """Extract the whole map and replace every chunk.

        With blocks on disk (beyond the budget), part by part: each cube of ``_FULL_PART_CHUNKS`` chunks
        is re-spliced from a grid of its blocks and their neighbours, read from memory or disk, so the
        whole map is never in memory at once; the result equals one extraction of the whole map.
        """
        before = self.published
        old_points = {cid: c.points for cid, c in self._chunks.items() if len(c.points)}
        self._chunks.clear()
        self._cloud = None
        self._synced = True
        if self.volume.stored_block_count:
            blocks = np.concatenate([self.volume.block_coords(), self.volume.stored_block_coords()]).astype(np.int64)
            parts = np.floor_divide(blocks, self.chunk_blocks * _FULL_PART_CHUNKS)
            order = np.lexsort(parts.T[::-1])
            _, starts = np.unique(parts[order], axis=0, return_index=True)
            for part in np.split(order, starts[1:]):
                self._resplice(blocks[part], ChunkUpdate())
        elif self.volume.block_count:
            elements = self._extract(self.volume.grid)
            tris = _group(elements.triangle_chunk, np.arange(len(elements.triangles)))
            points = _group(elements.point_chunk, np.arange(len(elements.points)))
            for cid in sorted(set(tris) | set(points)):
                self._chunks[cid] = self._make_chunk(cid, elements, tris.get(cid), points.get(cid))
        after = self.published
        new_points = {cid: c.points for cid, c in self._chunks.items() if len(c.points)}
        empty = np.zeros((0, 3))
        self.point_changes = {
            cid: (old_points.get(cid, empty), new_points.get(cid, empty)) for cid in set(old_points) | set(new_points)
        }
        return ChunkUpdate(changed=[self._chunks[c].mesh for c in sorted(after)], removed=sorted(before - after))

    def _make_chunk(self, cid: int, elements: _Elements, tris: np.ndarray | None, points: np.ndarray | None) -> _Chunk:
        tris = np.zeros(0, np.int64) if tris is None else tris
        points = np.zeros(0, np.int64) if points is None else points
        mesh = _mesh(cid, elements.vertices, elements.colors, elements.triangles[tris])
        return _Chunk(
            mesh=mesh,
            triangle_block=elements.triangle_block[tris],
            points=elements.points[points],
            point_colors=elements.point_colors[points],
            point_block=elements.point_block[points],
        )

    def _splice(
        self,
        cid: int,
        region: _BlockSet,
        elements: _Elements,
        tris: np.ndarray | None,
        points: np.ndarray | None,
        update: ChunkUpdate,
    ) -> None:
        """Replace the chunk's elements that lie in ``region`` by the newly extracted ones."""
        old = self._chunks.get(cid)
        if old is None:
            if tris is None and points is None:
                return
            state = self._make_chunk(cid, elements, tris, points)
            self._chunks[cid] = state
            if len(state.mesh.triangles):
                update.changed.append(state.mesh)
            if len(state.points):
                self.point_changes[cid] = (np.zeros((0, 3)), state.points)
                self._cloud = None
            return
        stale_tris = region.contains(old.triangle_block)
        stale_points = region.contains(old.point_block)
        mesh_changed = not _same_triangles(old.mesh, stale_tris, elements, tris)
        points_changed = bool(stale_points.any()) or points is not None
        if not (mesh_changed or points_changed):
            return
        tris = np.zeros(0, np.int64) if tris is None else tris
        points = np.zeros(0, np.int64) if points is None else points
        mesh, triangle_block = old.mesh, old.triangle_block
        if mesh_changed:
            kept = ~stale_tris
            vertices = np.concatenate([old.mesh.vertices, elements.vertices])
            colors = np.concatenate([old.mesh.colors, elements.colors])
            triangles = np.concatenate(
                [old.mesh.triangles[kept].astype(np.int64), elements.triangles[tris] + len(old.mesh.vertices)]
            )
            mesh = _mesh(cid, vertices, colors, triangles)
            triangle_block = np.concatenate([old.triangle_block[kept], elements.triangle_block[tris]])
        state = _Chunk(mesh, triangle_block, old.points, old.point_colors, old.point_block)
        if points_changed:
            kept = ~stale_points
            state.points = np.concatenate([old.points[kept], elements.points[points]])
            state.point_colors = np.concatenate([old.point_colors[kept], elements.point_colors[points]])
            state.point_block = np.concatenate([old.point_block[kept], elements.point_block[points]])
            self.point_changes[cid] = (old.points, state.points)
            self._cloud = None
        if len(state.mesh.triangles) or len(state.points):
            self._chunks[cid] = state
        else:
            del self._chunks[cid]
        if mesh_changed and len(state.mesh.triangles):
            update.changed.append(state.mesh)

    def _sub_grid(self, keys: np.ndarray) -> o3d.t.geometry.VoxelBlockGrid:
        """A temporary grid holding copies of those of ``keys`` that the map has, in memory or on disk."""
        volume = self.volume
        source = volume.grid.hashmap()
        key_tensor = o3c.Tensor(np.ascontiguousarray(keys, dtype=np.int32)).to(volume.device)
        indices, found = source.find(key_tensor)
        indices = indices[found].to(o3c.int64)
        count = int(indices.shape[0])
        stored = volume.stored_blocks(keys)
        part = volume.empty_grid(count + (len(stored[0]) if stored is not None else 0))
        if count:
            if volume.device.get_type() == o3c.Device.DeviceType.CPU:
                # numpy fancy indexing of the zero-copy views is several times faster than Open3D's tensor indexing.
                rows = indices.numpy()
                values = [o3c.Tensor(value.numpy()[rows]) for value in source.value_tensors()]
            else:
                values = [value[indices] for value in source.value_tensors()]
            part.hashmap().insert(key_tensor[found], values)
        if stored is not None:
            stored_keys, arrays = stored
            part.hashmap().insert(
                o3c.Tensor(stored_keys).to(volume.device),
                [o3c.Tensor(np.ascontiguousarray(arrays[name])).to(volume.device) for name in VOXEL_ATTRIBUTES],
            )
        return part

    def _extract(self, grid: o3d.t.geometry.VoxelBlockGrid) -> _Elements:
        """Marching cubes (and the point cloud, with ``keep_points``) of a grid, each element with its block."""
        cfg = self.volume.config
        empty3, empty = np.zeros((0, 3)), np.zeros(0, np.int64)
        vertices, colors, triangles = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), empty.reshape(0, 3)
        points, point_colors = empty3, np.zeros((0, 3), np.uint8)
        if grid.hashmap().size():
            mesh = grid.extract_triangle_mesh(cfg.weight_threshold)
            if "indices" in mesh.triangle and mesh.triangle.indices.shape[0]:
                vertices = mesh.vertex.positions.cpu().numpy().astype(np.float32, copy=False)
                triangles = mesh.triangle.indices.cpu().numpy().astype(np.int64)
                if "colors" in mesh.vertex:
                    colors = _to_uint8(mesh.vertex.colors.cpu().numpy())
                else:
                    colors = np.full((len(vertices), 3), 204, np.uint8)
            if self.keep_points:
                cloud = grid.extract_point_cloud(cfg.weight_threshold)
                if "positions" in cloud.point and cloud.point.positions.shape[0]:
                    points = cloud.point.positions.cpu().numpy().astype(np.float64)
                    if "colors" in cloud.point:
                        point_colors = _to_uint8(cloud.point.colors.cpu().numpy())
                    else:
                        point_colors = np.full((len(points), 3), 200, np.uint8)
        centroid = vertices.astype(np.float64)[triangles].mean(axis=1) if len(triangles) else empty3
        return _Elements(
            vertices=vertices,
            colors=colors,
            triangles=triangles,
            triangle_block=self._element_block(centroid),
            triangle_chunk=pack_chunk_keys(np.floor(centroid / self.chunk_size).astype(np.int64)),
            points=points,
            point_colors=point_colors,
            point_block=self._element_block(points),
            point_chunk=pack_chunk_keys(np.floor(points / self.chunk_size).astype(np.int64)),
        )

    def _element_block(self, positions: np.ndarray) -> np.ndarray:
        cfg = self.volume.config
        voxel = np.floor(positions / cfg.voxel_size + _ELEMENT_TOLERANCE).astype(np.int64)
        return np.floor_divide(voxel, cfg.block_resolution).astype(np.int32)


def _to_uint8(colors: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(colors), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _group(owner: np.ndarray, rows: np.ndarray) -> dict[int, np.ndarray]:
    """Rows split by owner id (each group in the input order)."""
    if len(owner) == 0:
        return {}
    order = np.argsort(owner, kind="stable")
    ids, starts = np.unique(owner[order], return_index=True)
    return {int(cid): rows[part] for cid, part in zip(ids.tolist(), np.split(order, starts[1:]), strict=True)}


_PROJECTION = np.random.default_rng(12).normal(size=9)


def _triangle_rows(vertices: np.ndarray, colors: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Each triangle's corner positions and colours, ordered by a projection of the positions.

    Why not a full row sort: sorting byte strings is slow in numpy; rows that tie on the projection are
    (almost never) the only ones that could compare unequal although the sets are equal, and that only
    resends a chunk, it never skips a real change.
    """
    corners = vertices[triangles].reshape(len(triangles), -1)
    order = np.argsort(corners.astype(np.float64) @ _PROJECTION, kind="stable")
    return np.concatenate([corners[order].view(np.uint8), colors[triangles].reshape(len(triangles), -1)[order]], 1)


def _same_triangles(old: ChunkMesh, stale: np.ndarray, elements: _Elements, tris: np.ndarray | None) -> bool:
    """Whether the re-extracted triangles equal the stale ones exactly (then the chunk need not be resent)."""
    fresh = np.zeros(0, np.int64) if tris is None else tris
    if int(stale.sum()) != len(fresh):
        return False
    if len(fresh) == 0:
        return True
    before = _triangle_rows(old.vertices, old.colors, old.triangles[stale])
    after = _triangle_rows(elements.vertices, elements.colors, elements.triangles[fresh])
    return bool(np.array_equal(before, after))


def _mesh(cid: int, vertices: np.ndarray, colors: np.ndarray, triangles: np.ndarray) -> ChunkMesh:
    """A chunk mesh holding only the vertices its triangles use (a mask and a cumsum: no sort)."""
    used = np.zeros(len(vertices), bool)
    used[triangles.reshape(-1)] = True
    local = np.cumsum(used, dtype=np.int64) - 1
    return ChunkMesh(
        chunk_id=cid,
        key=unpack_chunk_id(cid),
        vertices=vertices[used],
        colors=colors[used],
        triangles=local[triangles].reshape(-1, 3).astype(np.int32),
    )
