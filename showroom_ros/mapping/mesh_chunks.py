"""The map mesh cut into spatial chunks with stable ids, re-extracted only where an integration changed blocks.

Why: a robot map grows to many thousands of blocks; re-running marching cubes over all of them and
resending the whole mesh after each keyframe does not scale. A chunk is a cube of ``chunk_blocks``
blocks (about 1 m); its id packs its integer coordinates, so it is the same across updates, saves
and loads (the ROS layer uses it as the marker id: ADD/MODIFY changed chunks, DELETE removed ones).
Changed chunks are extracted together from a small grid holding only their blocks plus a one-block
halo (marching cubes reads neighbouring blocks), and each triangle goes to the chunk of its centroid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d
import open3d.core as o3c

from showroom_ros.mapping.volume import IntegrationReport, TsdfVolume, extract_mesh_of

_ID_BITS = 10
_ID_OFFSET = 1 << (_ID_BITS - 1)  # chunk coordinates in [-512, 511]: +-512 m at 1 m chunks
_NEIGHBOURS = (
    np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1).reshape(-1, 3).astype(np.int32)
)


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


class ChunkedMesh:
    """Keeps which chunks have been published and produces incremental updates of a :class:`TsdfVolume`."""

    def __init__(self, volume: TsdfVolume, chunk_size_m: float = 1.0) -> None:
        self.volume = volume
        self.chunk_blocks = max(1, round(chunk_size_m / volume.config.block_size))
        self._published: set[int] = set()

    @property
    def chunk_size(self) -> float:
        """Edge of a chunk in metres (a whole number of blocks)."""
        return self.chunk_blocks * self.volume.config.block_size

    @property
    def published(self) -> set[int]:
        """Ids of the chunks that currently have triangles (as last reported)."""
        return set(self._published)

    def reset(self) -> ChunkUpdate:
        """After the map was cleared: every published chunk is removed."""
        update = ChunkUpdate(removed=sorted(self._published))
        self._published.clear()
        return update

    def update(self, report: IntegrationReport | None = None) -> ChunkUpdate:
        """Chunks touched by ``report`` (its blocks, dropped blocks, and their neighbours); None = everything."""
        blocks = self.volume.block_coords()
        if report is None:
            dirty = set(pack_chunk_keys(np.floor_divide(blocks, self.chunk_blocks)).tolist()) | self._published
        else:
            changed_blocks = np.concatenate([report.touched_blocks, report.dropped_blocks]).astype(np.int64)
            if len(changed_blocks) == 0:
                return ChunkUpdate()
            near = (changed_blocks[:, None, :] + _NEIGHBOURS[None]).reshape(-1, 3)
            dirty = set(np.unique(pack_chunk_keys(np.floor_divide(near, self.chunk_blocks))).tolist())
        if not dirty:
            return ChunkUpdate()
        meshes = self._extract(blocks, np.array(sorted(dirty), dtype=np.int64))
        removed = sorted((dirty & self._published) - set(meshes))
        self._published -= set(removed)
        self._published |= set(meshes)
        return ChunkUpdate(changed=[meshes[k] for k in sorted(meshes)], removed=removed)

    def _extract(self, blocks: np.ndarray, dirty: np.ndarray) -> dict[int, ChunkMesh]:
        """Marching cubes over the dirty chunks' blocks plus a one-block halo, split by triangle centroid."""
        if len(blocks) == 0:
            return {}
        near = (blocks[:, None, :].astype(np.int64) + _NEIGHBOURS[None]).reshape(-1, 3)
        near_ids = pack_chunk_keys(np.floor_divide(near, self.chunk_blocks)).reshape(len(blocks), -1)
        wanted = blocks[np.isin(near_ids, dirty).any(axis=1)]
        if len(wanted) == 0:
            return {}
        mesh = self._mesh_of_blocks(wanted)
        vertices = np.asarray(mesh.vertices, dtype=np.float32)
        triangles = np.asarray(mesh.triangles, dtype=np.int64)
        if len(triangles) == 0:
            return {}
        colors = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else np.full((len(vertices), 3), 0.8)
        centroid = vertices[triangles].mean(axis=1)
        owner = pack_chunk_keys(np.floor(centroid / self.chunk_size).astype(np.int64))
        keep = np.isin(owner, dirty)
        triangles, owner = triangles[keep], owner[keep]
        order = np.argsort(owner, kind="stable")
        triangles, owner = triangles[order], owner[order]
        ids, starts = np.unique(owner, return_index=True)
        result: dict[int, ChunkMesh] = {}
        for index, (cid, start) in enumerate(zip(ids.tolist(), starts.tolist(), strict=True)):
            stop = starts[index + 1] if index + 1 < len(starts) else len(triangles)
            tris = triangles[start:stop]
            used, local = np.unique(tris.reshape(-1), return_inverse=True)
            result[cid] = ChunkMesh(
                chunk_id=cid,
                key=unpack_chunk_id(cid),
                vertices=vertices[used],
                colors=(np.clip(colors[used], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8),
                triangles=local.reshape(-1, 3).astype(np.int32),
            )
        return result

    def _mesh_of_blocks(self, keys: np.ndarray) -> o3d.geometry.TriangleMesh:
        """A temporary grid holding copies of just these blocks, meshed by Open3D."""
        volume = self.volume
        cfg = volume.config
        source = volume.grid.hashmap()
        key_tensor = o3c.Tensor(np.ascontiguousarray(keys, dtype=np.int32)).to(volume.device)
        indices, found = source.find(key_tensor)
        indices = indices[found].to(o3c.int64)
        part = o3d.t.geometry.VoxelBlockGrid(
            ("tsdf", "weight", "color"),
            (o3c.float32, o3c.float32, o3c.float32),
            ((1), (1), (3)),
            cfg.voxel_size,
            cfg.block_resolution,
            max(len(keys), 16),
            volume.device,
        )
        if volume.device.get_type() == o3c.Device.DeviceType.CPU:
            # numpy fancy indexing of the zero-copy views is several times faster than Open3D's tensor indexing.
            rows = indices.numpy()
            values = [o3c.Tensor(value.numpy()[rows]) for value in source.value_tensors()]
        else:
            values = [value[indices] for value in source.value_tensors()]
        part.hashmap().insert(key_tensor[found], values)
        return extract_mesh_of(part, cfg.weight_threshold)
