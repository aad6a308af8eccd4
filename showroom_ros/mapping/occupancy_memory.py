"""What a robot map remembers for its 2D grid across integrations: the cells seen free, and per chunk the
surface cells in the obstacle band; :func:`compose_occupancy` makes the grid from both."""

from __future__ import annotations

import numpy as np

from showroom_ros.mapping.occupancy import (
    FREE,
    OCCUPIED,
    UNKNOWN,
    OccupancyConfig,
    OccupancyGrid,
)


class FreeCells:
    """Observed-free cells, remembered across integrations in a boolean grid that grows with the extent.

    Cells are addressed by integer indices ``floor(xy / resolution)``; ``offset`` is the (col, row)
    index of ``mask[0, 0]``.
    """

    def __init__(self, resolution: float, max_cells: int) -> None:
        self.resolution = resolution
        self.max_cells = max_cells
        self.offset = np.zeros(2, np.int64)
        self.mask = np.zeros((0, 0), bool)

    def clear(self) -> None:
        self.offset = np.zeros(2, np.int64)
        self.mask = np.zeros((0, 0), bool)

    def add(self, grid: OccupancyGrid) -> None:
        """OR the FREE cells of a grid (same resolution, cell-aligned origin) into the memory."""
        if grid.data.size == 0 or not np.any(grid.data == FREE):
            return
        offset = _cell_index(grid)
        self.mask, self.offset = _union(self.mask, self.offset, grid.data == FREE, offset, self.max_cells)


def _cell_index(grid: OccupancyGrid) -> np.ndarray:
    """(col, row) integer index of a grid's cell (0, 0) (build_occupancy aligns origins to the resolution)."""
    return np.rint(np.asarray(grid.origin_xy, dtype=np.float64) / grid.resolution).astype(np.int64)


def _union(
    mask_a: np.ndarray, offset_a: np.ndarray, mask_b: np.ndarray, offset_b: np.ndarray, max_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """OR of two cell-aligned boolean grids on their joint extent."""
    if mask_b.size == 0:
        return mask_a, offset_a
    if mask_a.size == 0:
        return mask_b.copy(), offset_b.copy()
    lo = np.minimum(offset_a, offset_b)
    hi = np.maximum(offset_a + mask_a.shape[::-1], offset_b + mask_b.shape[::-1])
    cols, rows = (hi - lo).tolist()
    if rows * cols > max_cells:
        raise ValueError(f"occupancy grid of {cols}x{rows} cells exceeds max_cells={max_cells}")
    merged = np.zeros((rows, cols), bool)
    for mask, offset in ((mask_a, offset_a), (mask_b, offset_b)):
        c0, r0 = (offset - lo).tolist()
        merged[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]] |= mask
    return merged, lo


class Obstacles:
    """In-band surface points counted per cell, and each chunk's xy extent, kept up to date per changed chunk.

    Why: recomputing obstacles from the whole surface after every window costs a pass over every
    point of the map; counts let the points of the chunks a window changed be subtracted and re-added.
    Cells are ``floor(xy / resolution)`` (global integer indices); ``offset`` is the (col, row) of ``counts[0, 0]``.
    """

    def __init__(self, config: OccupancyConfig) -> None:
        self.config = config
        self.clear()

    def clear(self) -> None:
        self.offset = np.zeros(2, np.int64)
        self.counts = np.zeros((0, 0), np.int32)
        self.extents: dict[int, np.ndarray] = {}  # chunk id -> (min x, min y, max x, max y) of all its points

    def change(self, key: int, old: np.ndarray, new: np.ndarray) -> None:
        """Replace one chunk's points ``old`` by ``new``."""
        self._add(_band_cells(old, self.config), -1)
        self._add(_band_cells(new, self.config), 1)
        finite = new[np.all(np.isfinite(new), axis=1)] if len(new) else new
        if len(finite):
            self.extents[key] = np.concatenate([finite[:, :2].min(axis=0), finite[:, :2].max(axis=0)])
        else:
            self.extents.pop(key, None)

    def extent(self) -> np.ndarray | None:
        """(min x, min y, max x, max y) of every surface point, or None."""
        if not self.extents:
            return None
        boxes = np.stack(list(self.extents.values()))
        return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])

    def occupied(self) -> tuple[np.ndarray, np.ndarray]:
        """(mask of cells holding at least one in-band point, its (col, row) offset)."""
        return self.counts > 0, self.offset

    def _add(self, cells: np.ndarray, sign: int) -> None:
        if len(cells) == 0:
            return
        lo, hi = cells.min(axis=0), cells.max(axis=0) + 1
        if self.counts.size:
            lo = np.minimum(lo, self.offset)
            hi = np.maximum(hi, self.offset + self.counts.shape[::-1])
        if self.counts.size == 0 or np.any(lo != self.offset) or np.any(hi != self.offset + self.counts.shape[::-1]):
            cols, rows = (hi - lo).tolist()
            if rows * cols > self.config.max_cells:
                raise ValueError(f"occupancy grid of {cols}x{rows} cells exceeds max_cells={self.config.max_cells}")
            grown = np.zeros((rows, cols), np.int32)
            if self.counts.size:
                c0, r0 = (self.offset - lo).tolist()
                grown[r0 : r0 + self.counts.shape[0], c0 : c0 + self.counts.shape[1]] = self.counts
            self.counts, self.offset = grown, lo
        local = cells - self.offset
        flat = local[:, 1] * self.counts.shape[1] + local[:, 0]
        self.counts.reshape(-1)[:] += sign * np.bincount(flat, minlength=self.counts.size).astype(np.int32)


def _band_cells(points: np.ndarray, config: OccupancyConfig) -> np.ndarray:
    """(col, row) global cell indices of the points inside the obstacle band."""
    if len(points) == 0:
        return np.zeros((0, 2), np.int64)
    z = points[:, 2]
    band = points[(z >= config.floor_z + config.min_height) & (z <= config.floor_z + config.max_height)]
    band = band[np.all(np.isfinite(band), axis=1)]
    return np.floor(band[:, :2] / config.resolution).astype(np.int64)


def compose_occupancy(
    occupied: np.ndarray,
    occupied_offset: np.ndarray,
    points_extent: np.ndarray | None,
    free: np.ndarray,
    free_offset: np.ndarray,
    config: OccupancyConfig,
) -> OccupancyGrid | None:
    """Obstacles over remembered free cells, on the joint extent of the free grid and of the surface (plus padding).

    Occupied cells lie on surface points, so the surface's extent holds them all.
    """
    res = config.resolution
    boxes = []
    if points_extent is not None:
        lo = np.floor((points_extent[:2] - config.padding) / res).astype(np.int64)
        hi = np.ceil((points_extent[2:] + config.padding) / res).astype(np.int64)
        boxes.append((lo, hi))
    if free.size:  # the free grid's whole array: its rays' extent plus padding
        boxes.append((free_offset, free_offset + free.shape[::-1]))
    if not boxes:
        return None
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    cols, rows = (hi - lo).tolist()
    if rows * cols > config.max_cells:
        raise ValueError(f"occupancy grid of {cols}x{rows} cells exceeds max_cells={config.max_cells}")
    data = np.full((rows, cols), UNKNOWN, np.int8)
    for mask, offset, value in ((free, free_offset, FREE), (occupied, occupied_offset, OCCUPIED)):
        if mask.size == 0:
            continue
        # Clip the mask to the extent (its all-false margins may reach beyond it).
        c0, r0 = (offset - lo).tolist()
        rs, cs = max(0, -r0), max(0, -c0)
        re, ce = min(mask.shape[0], rows - r0), min(mask.shape[1], cols - c0)
        if re > rs and ce > cs:
            data[r0 + rs : r0 + re, c0 + cs : c0 + ce][mask[rs:re, cs:ce]] = value
    return OccupancyGrid(data, res, (float(lo[0] * res), float(lo[1] * res)))
