"""Writing reconstructions to disk: PLY (cloud, mesh), GLB, a PNG preview and a reloadable NPZ.

Every file is written to a temporary name in the target directory and then renamed over the final
name (``os.replace`` is atomic on one filesystem), so a reader such as RViz, a web viewer or the
view-generation CLI never sees a half-written file, even if the node is killed mid-save.
Coordinates are written as they are, in the reconstruction's frame (``map``: the robot's map
frame; ``showroom``: the first keyframe's optical frame, y down); no axis conversion is applied.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import trimesh

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.file_names import RECONSTRUCTION_FILES, reconstruction_files
from showroom_ros.reconstruction.render import preview_camera, render_points
from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh

NPZ_FORMAT_VERSION = 1


class ExportError(OSError):
    """A reconstruction could not be written; the message names the file."""


_temporaries_gate = threading.Lock()
_temporaries_closed = False


def close_temporaries_for_exit(timeout_s: float = 1.0) -> None:
    """No temporary file is created by this process after this returns (its lock is kept for good).

    Called once when a node stops, just before it deletes its unfinished temporaries: a save thread
    being abandoned could otherwise create one a moment after that clean-up, and leave it behind.
    """
    global _temporaries_closed
    if _temporaries_gate.acquire(timeout=timeout_s):  # held only while a temporary is being created
        _temporaries_closed = True


def _create_temporary(path: Path) -> None:
    with _temporaries_gate:
        if _temporaries_closed:
            raise ExportError(f"not writing {path.name}: the process is stopping")
        path.touch()  # exists from now on, so the clean-up at a stop sees it


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write`` on a temporary file beside ``path`` (same suffix: writers pick formats by it), rename."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would leak into the final file; a random name is enough to be unique.
    temporary_path = target.with_name(f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{target.suffix}")
    try:
        _create_temporary(temporary_path)
        write(temporary_path)
        if not temporary_path.is_file() or temporary_path.stat().st_size == 0:
            # Open3D's writers return False without saying why; the usual why is a full disk.
            stats = os.statvfs(target.parent)
            free = stats.f_bavail * stats.f_frsize
            if free < 1_000_000:
                raise ExportError(
                    errno.ENOSPC, f"writing {target} produced no data: no space left on device ({free} bytes free)"
                )
            raise ExportError(f"writing {target} produced no data")
        os.replace(temporary_path, target)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """:func:`atomic_write` of bytes."""
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of text (UTF-8)."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def _legacy_mesh(mesh: TriangleMesh) -> o3d.geometry.TriangleMesh:
    result = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(mesh.vertices, dtype=np.float64)),
        o3d.utility.Vector3iVector(np.asarray(mesh.triangles, dtype=np.int32)),
    )
    result.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertex_colors, dtype=np.float64) / 255.0)
    return result


def save_point_cloud_ply(reconstruction: Reconstruction, path: str | Path) -> Path:
    """Binary PLY with x, y, z (float32), red, green, blue (uint8) and a ``confidence`` float property."""
    cloud = o3d.t.geometry.PointCloud()
    cloud.point.positions = o3d.core.Tensor(np.ascontiguousarray(reconstruction.points, dtype=np.float32))
    cloud.point.colors = o3d.core.Tensor(np.ascontiguousarray(reconstruction.colors, dtype=np.uint8))
    cloud.point.confidence = o3d.core.Tensor(
        np.ascontiguousarray(reconstruction.confidence, dtype=np.float32).reshape(-1, 1)
    )

    def write(temporary: Path) -> None:
        if not o3d.t.io.write_point_cloud(str(temporary), cloud, write_ascii=False):
            raise ExportError(f"Open3D could not write the point cloud {path}")

    return atomic_write(path, write)


def save_mesh_ply(mesh: TriangleMesh, path: str | Path) -> Path:
    """Binary PLY of a coloured triangle mesh."""
    legacy = _legacy_mesh(mesh)

    def write(temporary: Path) -> None:
        if not o3d.io.write_triangle_mesh(str(temporary), legacy, write_ascii=False, write_vertex_normals=False):
            raise ExportError(f"Open3D could not write the mesh {path}")

    return atomic_write(path, write)


def save_glb(reconstruction: Reconstruction, path: str | Path) -> Path:
    """Binary glTF of the mesh when there is one, else of the coloured points (viewable in any browser)."""
    if reconstruction.mesh is not None and reconstruction.mesh.num_triangles > 0:
        mesh = reconstruction.mesh
        alpha = np.full((len(mesh.vertex_colors), 1), 255, dtype=np.uint8)
        geometry = trimesh.Trimesh(
            vertices=np.asarray(mesh.vertices, dtype=np.float64),
            faces=np.asarray(mesh.triangles, dtype=np.int64),
            vertex_colors=np.hstack([mesh.vertex_colors, alpha]),
            process=False,
        )
    else:
        alpha = np.full((reconstruction.num_points, 1), 255, dtype=np.uint8)
        geometry = trimesh.PointCloud(
            np.asarray(reconstruction.points, dtype=np.float64),
            colors=np.hstack([reconstruction.colors, alpha]),
        )
    scene = trimesh.Scene(geometry)
    data = scene.export(file_type="glb")
    # Trimesh objects are reference cycles (geometry <-> caches <-> visuals) that hold float64/int64
    # copies of the mesh (~15 MB for 377k triangles). Only a full garbage collection frees them, and a
    # node that autosaves every few seconds piled up hundreds of MB before one ran (issue 14, defect 12).
    del scene, geometry
    gc.collect()
    return atomic_write_bytes(path, data)


def render_preview(reconstruction: Reconstruction, width: int = 960, height: int = 720) -> np.ndarray:
    """RGB picture of the reconstruction (mesh vertices if meshed, else the cloud) from behind the cameras."""
    if reconstruction.mesh is not None and len(reconstruction.mesh.vertices) > 0:
        points, colors = reconstruction.mesh.vertices, reconstruction.mesh.vertex_colors
    else:
        points, colors = reconstruction.points, reconstruction.colors
    if len(points) == 0:
        raise ValueError("cannot preview an empty reconstruction")
    cameras = reconstruction.camera_poses if len(reconstruction.camera_poses) else None
    pose, intrinsics = preview_camera(points, cameras, width=width, height=height)
    return render_points(points, colors, pose, intrinsics, point_radius_px=1, background=(255, 255, 255)).image


def save_preview_png(reconstruction: Reconstruction, path: str | Path, width: int = 960, height: int = 720) -> Path:
    """PNG preview rendered by :mod:`showroom_ros.reconstruction.render` (no display or GPU needed)."""
    image = render_preview(reconstruction, width, height)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ExportError(f"could not encode the preview {path}")
    return atomic_write_bytes(path, encoded.tobytes())


def _intrinsics_array(intrinsics: list[CameraIntrinsics]) -> np.ndarray:
    rows = [[k.fx, k.fy, k.cx, k.cy, k.width, k.height] for k in intrinsics]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def save_npz(reconstruction: Reconstruction, path: str | Path) -> Path:
    """Everything in one NPZ (no pickles): cloud, confidence, cameras, intrinsics, mesh, metadata, timings."""
    arrays: dict[str, np.ndarray] = {
        "format_version": np.asarray(NPZ_FORMAT_VERSION),
        "points": np.asarray(reconstruction.points, dtype=np.float32),
        "colors": np.asarray(reconstruction.colors, dtype=np.uint8),
        "confidence": np.asarray(reconstruction.confidence, dtype=np.float32),
        "camera_poses": np.asarray(reconstruction.camera_poses, dtype=np.float64).reshape(-1, 4, 4),
        "intrinsics": _intrinsics_array(reconstruction.intrinsics),
        "frame_id": np.asarray(reconstruction.frame_id),
        "metric": np.asarray(bool(reconstruction.metric)),
        "backend": np.asarray(reconstruction.backend),
        "timings_json": np.asarray(json.dumps(reconstruction.timings)),
        "notes_json": np.asarray(json.dumps(list(reconstruction.notes))),
        "sparse": np.asarray(bool(reconstruction.sparse)),
    }
    if reconstruction.mesh is not None:
        arrays["mesh_vertices"] = np.asarray(reconstruction.mesh.vertices, dtype=np.float32)
        arrays["mesh_triangles"] = np.asarray(reconstruction.mesh.triangles, dtype=np.int32)
        arrays["mesh_vertex_colors"] = np.asarray(reconstruction.mesh.vertex_colors, dtype=np.uint8)

    def write(temporary: Path) -> None:
        with temporary.open("wb") as stream:
            np.savez(stream, **arrays)

    return atomic_write(path, write)


def load_reconstruction(npz_path: str | Path) -> Reconstruction:
    """Read back a reconstruction written by :func:`save_reconstruction` / :func:`save_npz`."""
    path = Path(npz_path).expanduser()
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read reconstruction {path}: {error}") from None
    with data:
        missing = {"points", "colors", "confidence", "camera_poses", "intrinsics"} - set(data.files)
        if missing:
            raise ValueError(f"{path} is not a showroom reconstruction (missing {', '.join(sorted(missing))})")
        version = int(data["format_version"]) if "format_version" in data.files else 0
        if version > NPZ_FORMAT_VERSION:
            raise ValueError(f"{path} has format version {version}; this showroom_ros reads up to {NPZ_FORMAT_VERSION}")
        mesh = None
        if "mesh_vertices" in data.files:
            mesh = TriangleMesh(data["mesh_vertices"], data["mesh_triangles"], data["mesh_vertex_colors"])
        intrinsics = [
            CameraIntrinsics(float(fx), float(fy), float(cx), float(cy), int(w), int(h))
            for fx, fy, cx, cy, w, h in data["intrinsics"]
        ]
        return Reconstruction(
            points=data["points"],
            colors=data["colors"],
            confidence=data["confidence"],
            camera_poses=data["camera_poses"],
            intrinsics=intrinsics,
            frame_id=str(data["frame_id"]) if "frame_id" in data.files else "map",
            metric=bool(data["metric"]) if "metric" in data.files else True,
            backend=str(data["backend"]) if "backend" in data.files else "",
            mesh=mesh,
            timings=json.loads(str(data["timings_json"])) if "timings_json" in data.files else {},
            notes=[str(note) for note in json.loads(str(data["notes_json"]))] if "notes_json" in data.files else [],
            sparse=bool(data["sparse"]) if "sparse" in data.files else False,
        )


def save_reconstruction(reconstruction: Reconstruction, directory: str | Path, basename: str) -> dict[str, Path]:
    """Write the files of :func:`~showroom_ros.io.file_names.reconstruction_files` (the mesh only when
    there is one), the ``.npz`` last; returns the written paths by kind. A ``basename`` that breaks the
    name rule raises :class:`~showroom_ros.io.file_names.InvalidName` (a ValueError) before anything is written.
    """
    paths = reconstruction_files(directory, basename)
    written = {"cloud": save_point_cloud_ply(reconstruction, paths["cloud"])}
    if reconstruction.mesh is not None:
        written["mesh"] = save_mesh_ply(reconstruction.mesh, paths["mesh"])
    written["glb"] = save_glb(reconstruction, paths["glb"])
    written["png"] = save_preview_png(reconstruction, paths["png"])
    written["npz"] = save_npz(reconstruction, paths["npz"])
    return written


def prune_saved(directory: str | Path, prefix: str, keep: int, max_bytes: int | None = None) -> list[str]:
    """Delete the oldest saved reconstructions named ``<prefix>...`` beyond ``keep`` or ``max_bytes``.

    A reconstruction is the group of files :func:`save_reconstruction` writes for one basename; its
    ``.npz`` is written last, so only complete groups are counted. The newest is always kept, and
    files of other names are never touched. Returns the pruned basenames, oldest first.
    """
    folder = Path(directory).expanduser()
    groups: list[tuple[int, str, list[Path]]] = []
    for npz in folder.glob(f"{prefix}*{RECONSTRUCTION_FILES['npz']}"):
        base = npz.name.removesuffix(RECONSTRUCTION_FILES["npz"])
        files = [folder / f"{base}{suffix}" for suffix in RECONSTRUCTION_FILES.values()]
        files = [path for path in files if path.is_file()]
        groups.append((npz.stat().st_mtime_ns, base, files))
    groups.sort()  # oldest first; the name breaks ties
    total = sum(path.stat().st_size for _, _, files in groups for path in files)
    pruned: list[str] = []
    while len(groups) > 1 and (len(groups) > keep or (max_bytes is not None and total > max_bytes)):
        _, base, files = groups.pop(0)
        for path in files:
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
        pruned.append(base)
    return pruned
