"""A bounded folder of map blocks on disk: where a map keeps the blocks that its memory budget cannot hold.

Why a store instead of erasing: a robot that maps a floor larger than its memory budget must not lose
the first rooms. The TSDF keeps the blocks near the camera in memory; the others wait here, and come
back (values unchanged) when the camera nears them again.

Blocks are kept in *pages*: cubes of ``page_blocks`` blocks a side, one compressed ``.npz`` per page
(keys plus one array per attribute, zlib level 1: about a quarter of the raw 10 kB per 8^3 block, at
about 0.15 ms a block). A map moves whole pages, so a page is either all in memory or all here, and
a few thousand files hold a building.

Each write goes to a temporary name and is renamed over the page's file, so a page file is complete
or absent; a write that fails (read-only folder, full disk) or that would take the store over
``max_bytes`` raises :class:`BlockStoreError` (:class:`BlockStoreFull`) and leaves the store as it was.
Nothing is flushed to the disk's platter: the store is a cache for this process, not a save
(``save_map`` is), and it is deleted when the map goes away (or, after a crash, by the next store made
in the same folder).

The store makes its own subfolder ``blocks-<pid>-<random>`` of the folder it is given, lazily, at the
first page it writes: two maps of one process (a map being loaded while the old one still serves) never
share pages. Not thread-safe: one owner (the map's mapping thread).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import weakref
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

PageKey = tuple[int, int, int]

_FOLDER = re.compile(r"blocks-(\d+)-[0-9a-f]+")
_ZLIB_LEVEL = 1  # level 6 costs 4x the time for 10 % fewer bytes


class BlockStoreError(RuntimeError):
    """The store could not write or read a page; it holds what it held before, and the message says why."""


class BlockStoreFull(BlockStoreError):
    """Writing a page would take the store over its byte limit."""


def write_npy_entry(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """One array as ``<name>.npy`` in an open zip, as ``np.savez`` writes it (``np.load`` reads the zip back).

    Why not ``np.savez``: a map written part by part (one page at a time) never holds all of it in memory.
    """
    with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
        np.lib.format.write_array(entry, np.asarray(array), allow_pickle=False)


def open_npz_writer(destination: str | os.PathLike[str] | IO[bytes]) -> zipfile.ZipFile:
    """A zip for :func:`write_npy_entry`, deflated at the store's level."""
    return zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=_ZLIB_LEVEL)


@dataclass(frozen=True)
class _Page:
    path: Path
    keys: np.ndarray  # (N, 3) int32 block coordinates
    nbytes: int


def page_keys(blocks: np.ndarray, page_blocks: int) -> np.ndarray:
    """(N, 3) int64 page coordinate of each block coordinate."""
    return np.floor_divide(np.asarray(blocks, dtype=np.int64).reshape(-1, 3), page_blocks)


def group_pages(blocks: np.ndarray, page_blocks: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct pages of block coordinates ((P, 3) int64, in a fixed order) and each page's block indices."""
    pages = page_keys(blocks, page_blocks)
    if len(pages) == 0:
        return pages, []
    packed = _pack(pages)
    order = np.argsort(packed, kind="stable")
    starts = np.flatnonzero(np.r_[True, packed[order][1:] != packed[order][:-1]])
    return pages[order[starts]], np.split(order, starts[1:])


class BlockStore:
    """Pages of blocks (int32 keys and named float arrays) in files under ``parent``, at most ``max_bytes`` of them."""

    def __init__(self, parent: str | os.PathLike[str], max_bytes: int, page_blocks: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if page_blocks < 1:
            raise ValueError(f"page_blocks must be >= 1, got {page_blocks}")
        self.parent = Path(parent).expanduser()
        self.max_bytes = int(max_bytes)
        self.page_blocks = int(page_blocks)
        self._folder: Path | None = None
        self._pages: dict[PageKey, _Page] = {}
        self._nbytes = 0
        self._finalizer: weakref.finalize | None = None

    # --- state --------------------------------------------------------------------------------------
    @property
    def folder(self) -> Path | None:
        """This store's own subfolder (None until the first page is written)."""
        return self._folder

    @property
    def nbytes(self) -> int:
        """Bytes of the page files."""
        return self._nbytes

    @property
    def block_count(self) -> int:
        return sum(len(page.keys) for page in self._pages.values())

    def __len__(self) -> int:
        """Number of pages."""
        return len(self._pages)

    def __contains__(self, page: object) -> bool:
        return page in self._pages

    def pages(self) -> list[PageKey]:
        return list(self._pages)

    def block_coords(self) -> np.ndarray:
        """(N, 3) int32 coordinates of every stored block."""
        if not self._pages:
            return np.zeros((0, 3), np.int32)
        return np.concatenate([page.keys for page in self._pages.values()])

    def keys_of(self, page: PageKey) -> np.ndarray:
        """(N, 3) int32 coordinates of the blocks a stored page holds (known without reading it)."""
        return self._pages[tuple(int(v) for v in page)].keys

    def stored_pages_of(self, blocks: np.ndarray) -> list[PageKey]:
        """The stored pages that hold some of ``blocks``'s coordinates' pages (each once)."""
        if not self._pages or len(blocks) == 0:
            return []
        pages, _ = group_pages(blocks, self.page_blocks)
        return [page for page in map(tuple, pages.tolist()) if page in self._pages]

    # --- writing ------------------------------------------------------------------------------------
    def put(self, page: PageKey, keys: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Store blocks of one page (merged with what the page holds already), atomically.

        Raises :class:`BlockStoreFull` over the byte limit and :class:`BlockStoreError` when the folder
        cannot be written; the page is then as it was.
        """
        page = tuple(int(v) for v in page)
        keys = np.asarray(keys, dtype=np.int32).reshape(-1, 3)
        outside = np.any(page_keys(keys, self.page_blocks) != np.asarray(page), axis=1)
        if outside.any():
            raise ValueError(f"blocks {keys[outside][:3].tolist()} are not in page {page}")
        old = self._pages.get(page)
        if old is not None:
            old_keys, old_arrays = self.read(page)
            if blocks_isin(old_keys, keys).any():
                raise ValueError(f"page {page} already holds some of these blocks")
            keys = np.concatenate([old_keys, keys])
            arrays = {name: np.concatenate([old_arrays[name], arrays[name]]) for name in arrays}
        buffer = io.BytesIO()
        with open_npz_writer(buffer) as archive:
            write_npy_entry(archive, "keys", keys)
            for name, array in arrays.items():
                if len(array) != len(keys):
                    raise ValueError(f"{name} has {len(array)} blocks for {len(keys)} keys")
                write_npy_entry(archive, name, array)
        data = buffer.getbuffer()
        total = self._nbytes - (old.nbytes if old is not None else 0) + len(data)
        if total > self.max_bytes:
            raise BlockStoreFull(
                f"the map's block store is full: {len(keys)} more blocks would take {self.parent} to "
                f"{_size(total)}, over its limit of {_size(self.max_bytes)} (spill_max_bytes); "
                "raise the limit, or save the map and clear it"
            )
        folder = self._ensure_folder()
        target = folder / _page_name(page)
        temporary = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            with open(temporary, "xb") as handle:
                handle.write(data)
            os.replace(temporary, target)
        except OSError as error:
            with contextlib.suppress(OSError):  # on a read-only disk even a missing file cannot be unlinked
                temporary.unlink(missing_ok=True)
            what = f"{len(keys)} blocks, {_size(len(data))}"
            raise BlockStoreError(f"cannot write map blocks to {folder}: {error.strerror or error} ({what})") from error
        self._pages[page] = _Page(target, keys, len(data))
        self._nbytes = total

    # --- reading ------------------------------------------------------------------------------------
    def read(self, page: PageKey) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(keys, arrays) of a stored page, which stays stored."""
        entry = self._pages[tuple(int(v) for v in page)]
        try:
            with np.load(entry.path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise BlockStoreError(f"cannot read map blocks from {entry.path}: {error}") from error
        keys = arrays.pop("keys").astype(np.int32)
        if not np.array_equal(keys, entry.keys):
            raise BlockStoreError(f"{entry.path} does not hold the blocks the store wrote there")
        return keys, arrays

    def take(self, page: PageKey) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(keys, arrays) of a stored page, which leaves the store (its file is deleted first: a page that
        cannot be deleted, e.g. on a read-only disk, stays stored and this raises)."""
        page = tuple(int(v) for v in page)
        keys, arrays = self.read(page)
        entry = self._pages[page]
        try:
            entry.path.unlink()
        except OSError as error:
            raise BlockStoreError(
                f"cannot take map blocks back from {entry.path}: {error.strerror or error}"
            ) from error
        del self._pages[page]
        self._nbytes -= entry.nbytes
        return keys, arrays

    def blocks(self, blocks: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """(keys, arrays) of those of ``blocks`` that are stored (they stay stored), or None when none is."""
        wanted = np.asarray(blocks, dtype=np.int32).reshape(-1, 3)
        found_keys, found = [], []
        for page in self.stored_pages_of(wanted):
            keys, arrays = self.read(page)
            hit = blocks_isin(keys, wanted)
            if hit.any():
                found_keys.append(keys[hit])
                found.append({name: array[hit] for name, array in arrays.items()})
        if not found_keys:
            return None
        return np.concatenate(found_keys), {name: np.concatenate([f[name] for f in found]) for name in found[0]}

    def iter_pages(self) -> Iterator[tuple[PageKey, np.ndarray, dict[str, np.ndarray]]]:
        """Every stored page's (page, keys, arrays), one at a time (they stay stored)."""
        for page in list(self._pages):
            yield (page, *self.read(page))

    # --- lifetime -----------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every page and delete the files (a file that cannot be deleted is just left behind)."""
        for entry in self._pages.values():
            with contextlib.suppress(OSError):
                entry.path.unlink(missing_ok=True)
        self._pages.clear()
        self._nbytes = 0

    def close(self) -> None:
        """Delete this store's folder and everything in it."""
        self._pages.clear()
        self._nbytes = 0
        if self._finalizer is not None:
            self._finalizer()

    def _ensure_folder(self) -> Path:
        if self._folder is not None:
            return self._folder
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_folders(self.parent)
            folder = self.parent / f"blocks-{os.getpid()}-{secrets.token_hex(4)}"
            folder.mkdir()
        except OSError as error:
            raise BlockStoreError(
                f"cannot make the map's block folder in {self.parent}: {error.strerror or error}"
            ) from error
        self._folder = folder
        self._finalizer = weakref.finalize(self, shutil.rmtree, folder, True)
        return folder


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 1024:.1f} kB"


def _page_name(page: PageKey) -> str:
    return "page_{:+d}_{:+d}_{:+d}.npz".format(*page)


def _pack(coords: np.ndarray) -> np.ndarray:
    """One int64 per integer coordinate triple (21 bits an axis: +-1M blocks)."""
    shifted = np.asarray(coords, dtype=np.int64).reshape(-1, 3) + (1 << 20)
    return (shifted[:, 0] << 42) | (shifted[:, 1] << 21) | shifted[:, 2]


def blocks_isin(blocks: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Which rows of ``blocks`` (N, 3) are rows of ``among`` (M, 3), for integer (block or page) coordinates."""
    if len(blocks) == 0 or len(among) == 0:
        return np.zeros(len(blocks), bool)
    return np.isin(_pack(blocks), _pack(among))


def _remove_stale_folders(parent: Path) -> None:
    """Delete the block folders of processes that are gone (a crash leaves its store behind)."""
    for folder in parent.iterdir():
        match = _FOLDER.fullmatch(folder.name)
        if match is None or not folder.is_dir():
            continue
        pid = int(match.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's
