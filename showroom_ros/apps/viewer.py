"""A local web viewer (viser) for a reconstruction: cloud, mesh, keyframe cameras, generated views.

ShowRoom showed its results with viser; many people prefer a browser tab to RViz for a quick look,
or have no ROS on the machine at all. :class:`ReconstructionViewer` serves one scene on
``http://host:port`` and can be updated from any thread (the node calls :meth:`~ReconstructionViewer.show`
after each reconstruction). The GUI panel has a checkbox per layer (cloud, mesh, keyframes,
generated views) and a summary of the reconstruction.

Everything is drawn in the reconstruction's frame; the scene's up direction is taken from the
keyframe cameras (their -y axis, OpenCV optical frames), so a ``map`` frame (z up) and a camera
frame (y down) both appear upright.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import io
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.reconstruction.render import preview_camera
from showroom_ros.reconstruction.result import Reconstruction

LAYERS = ("cloud", "mesh", "keyframes", "generated")
KEYFRAME_COLOUR = (30, 90, 220)
GENERATED_COLOUR = (240, 130, 20)


class ViewerError(RuntimeError):
    """The viewer could not start (port in use, viser missing) or was used before start()."""


@dataclass
class CameraView:
    """One picture placed in the scene: a keyframe or a generated view (pose camera-to-frame, OpenCV axes)."""

    image: np.ndarray | None  # (H, W, 3) uint8 RGB, or None for a bare frustum
    pose: np.ndarray  # (4, 4)
    intrinsics: CameraIntrinsics | None = None
    label: str = ""


def as_camera_views(items: Sequence[Any] | None, kind: str = "view") -> list[CameraView]:
    """Views from CameraViews, Keyframe-like objects (``image``, ``pose``, ``intrinsics``) or tuples.

    A tuple is (image, pose) or (image, pose, intrinsics); items without a pose are skipped.
    """
    views: list[CameraView] = []
    for index, item in enumerate(items or []):
        if isinstance(item, CameraView):
            views.append(item)
            continue
        if isinstance(item, (tuple, list)):
            image, pose = item[0], item[1]
            intrinsics = item[2] if len(item) > 2 else None
        else:
            image = getattr(item, "image", None)
            pose = getattr(item, "pose", getattr(item, "pose_c2w", None))
            intrinsics = getattr(item, "intrinsics", None)
        if pose is None:
            continue  # a view with no pose has no place in the scene
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError(f"{kind} {index}: pose must be a finite 4x4 camera-to-frame matrix")
        views.append(
            CameraView(None if image is None else np.asarray(image), pose, intrinsics, f"{kind} {index}")
        )
    return views


def scene_up(camera_poses: np.ndarray, frame_id: str) -> np.ndarray:
    """World 'up' of the scene: the cameras' mean -y axis, else +z for a ROS map frame, else -y (OpenCV)."""
    poses = np.asarray(camera_poses, dtype=np.float64).reshape(-1, 4, 4)
    if len(poses):
        up = -poses[:, :3, 1].mean(axis=0)
        if np.linalg.norm(up) > 1e-6:
            return up / np.linalg.norm(up)
    return np.array([0.0, 0.0, 1.0]) if frame_id in ("map", "odom", "world") else np.array([0.0, -1.0, 0.0])


def point_spacing(points: np.ndarray, samples: int = 2000, seed: int = 0) -> float:
    """Median distance from a point to its nearest neighbour: how big a point must be drawn to close gaps."""
    if len(points) < 2:
        return 0.01
    tree = cKDTree(points)
    rng = np.random.default_rng(seed)
    query = points[rng.choice(len(points), size=min(samples, len(points)), replace=False)]
    distances, _ = tree.query(query, k=2)
    spacing = float(np.median(distances[:, 1]))
    return spacing if np.isfinite(spacing) and spacing > 0 else 0.01


def _thumbnail(image: np.ndarray, width: int) -> np.ndarray:
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"view images must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _wxyz(pose: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(pose[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        rotation = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    return np.array([w, x, y, z])


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (viser would silently move to the next port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise  # not an address of this machine, no permission for the port, ...
    return True


class ReconstructionViewer:
    """One viser server showing the latest reconstruction; every public method is thread-safe.

    ``max_points`` caps what is sent to the browser (a random subset: a web page with tens of
    millions of points is unusable); ``thumbnail_width`` caps the camera images drawn in frustums.
    """

    def __init__(self, max_points: int = 600_000, thumbnail_width: int = 320, seed: int = 0) -> None:
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.max_points = int(max_points)
        self.thumbnail_width = int(thumbnail_width)
        self._seed = seed
        self._lock = threading.RLock()
        self._server: Any = None
        self._handles: dict[str, list[Any]] = {layer: [] for layer in LAYERS}
        self._toggles: dict[str, Any] = {}
        self._summary: Any = None
        self._camera_set = False
        self.url: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 8080) -> str:
        """Start serving on host:port (0 = any free port) and return the URL; a busy port is an error."""
        with self._lock:
            if self._server is not None:
                raise ViewerError(f"the viewer is already running at {self.url}")
            try:
                import viser
            except ImportError as error:
                raise ViewerError(
                    f"the web viewer needs viser (pip install 'showroom_ros[viewer]'): {error}"
                ) from None
            if not 0 <= int(port) <= 65535:
                raise ViewerError(f"port must be 0..65535, got {port}")
            try:
                free = port_is_free(host, int(port))  # port 0 still checks the host
            except (OSError, OverflowError) as error:  # e.g. a host name that does not resolve
                raise ViewerError(f"cannot listen on {host}:{port}: {error}") from None
            if not free:
                raise ViewerError(
                    f"port {port} on {host} is in use (another viewer?): choose another with --port"
                )
            with contextlib.redirect_stdout(
                io.StringIO()
            ):  # viser prints its own banner; callers print the URL
                server = viser.ViserServer(host=host, port=int(port), verbose=False)
            if port != 0 and server.get_port() != int(port):  # lost a race for the port
                with contextlib.redirect_stdout(io.StringIO()):
                    server.stop()
                raise ViewerError(
                    f"port {port} on {host} is in use (another viewer?): choose another with --port"
                )
            self._server = server
            shown_host = "localhost" if host in ("0.0.0.0", "::") else host
            self.url = f"http://{shown_host}:{server.get_port()}/"
            self._build_gui()
            return self.url

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        with self._lock:
            server, self._server = self._server, None
            self._handles = {layer: [] for layer in LAYERS}
            self._toggles = {}
            self._camera_set = False
            self.url = None
        if server is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # viser's "(viser) Server stopped"
                server.stop()

    @property
    def is_running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int | None:
        with self._lock:
            return None if self._server is None else int(self._server.get_port())

    def __enter__(self) -> ReconstructionViewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- GUI ---------------------------------------------------------------------------------
    def _build_gui(self) -> None:
        gui = self._server.gui
        with gui.add_folder("Layers"):
            labels = {
                "cloud": "Point cloud",
                "mesh": "Mesh",
                "keyframes": "Keyframe cameras",
                "generated": "Generated views",
            }
            defaults = {"cloud": True, "mesh": False, "keyframes": True, "generated": True}
            for layer in LAYERS:
                toggle = gui.add_checkbox(labels[layer], initial_value=defaults[layer])
                toggle.on_update(lambda _event, layer=layer: self._apply_visibility(layer))
                self._toggles[layer] = toggle
        self._summary = gui.add_markdown("*Waiting for a reconstruction...*")

    def _apply_visibility(self, layer: str) -> None:
        with self._lock:
            toggle = self._toggles.get(layer)
            if toggle is None:
                return
            for handle in self._handles[layer]:
                handle.visible = bool(toggle.value)

    def set_visible(self, layer: str, visible: bool) -> None:
        """Show or hide a layer (the same as clicking its checkbox in the page)."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer '{layer}' (layers: {', '.join(LAYERS)})")
        with self._lock:
            self._require_running()
            self._toggles[layer].value = bool(visible)  # runs _apply_visibility through on_update
            self._apply_visibility(layer)

    def is_visible(self, layer: str) -> bool:
        with self._lock:
            self._require_running()
            return bool(self._toggles[layer].value)

    def layer_count(self, layer: str) -> int:
        """How many scene nodes a layer has now (e.g. one frustum per keyframe)."""
        with self._lock:
            return len(self._handles[layer])

    def _require_running(self) -> None:
        if self._server is None:
            raise ViewerError("the viewer is not running: call start() first")

    # --- scene -------------------------------------------------------------------------------
    def clear(self) -> None:
        """Remove the reconstruction from the scene (the node's reset); the toggles keep their state."""
        with self._lock:
            self._require_running()
            for handles in self._handles.values():
                for handle in handles:
                    handle.remove()
            self._handles = {layer: [] for layer in LAYERS}
            self._summary.content = "*Waiting for a reconstruction...*"

    def show(
        self,
        reconstruction: Reconstruction,
        keyframe_images: Sequence[Any] | None = None,
        generated: Sequence[Any] | None = None,
    ) -> None:
        """Replace the scene with this reconstruction.

        ``keyframe_images``: one RGB image (or Keyframe) per ``reconstruction.camera_poses`` entry,
        drawn in its frustum; ``generated``: views with their own poses (:class:`CameraView`,
        Keyframe-like objects or (image, pose[, intrinsics]) tuples).
        """
        if reconstruction.num_points == 0 and (
            reconstruction.mesh is None or not len(reconstruction.mesh.vertices)
        ):
            raise ValueError("nothing to show: the reconstruction has no points and no mesh")
        keyframes = self._keyframe_views(reconstruction, keyframe_images)
        generated_views = as_camera_views(generated, "generated view")
        with self._lock:
            self._require_running()
            scene = self._server.scene
            self.clear()

            points = np.asarray(reconstruction.points, dtype=np.float32)
            colours = np.asarray(reconstruction.colors, dtype=np.uint8)
            if len(points) > self.max_points:
                keep = np.sort(
                    np.random.default_rng(self._seed).choice(len(points), self.max_points, replace=False)
                )
                points, colours = points[keep], colours[keep]
            mesh_vertices = reconstruction.mesh.vertices if reconstruction.mesh is not None else points
            geometry = points if len(points) else np.asarray(mesh_vertices, np.float32)
            centre = np.median(geometry, axis=0)
            radius = max(float(np.quantile(np.linalg.norm(geometry - centre, axis=1), 0.95)), 1e-3)
            up = scene_up(reconstruction.camera_poses, reconstruction.frame_id)
            scene.set_up_direction(tuple(float(v) for v in up))
            if not self._camera_set:
                self._set_initial_camera(geometry, reconstruction.camera_poses, centre, up)

            if len(points):
                handle = scene.add_point_cloud(
                    "/showroom/cloud",
                    points,
                    colours,
                    point_size=1.5 * point_spacing(points),
                    point_shape="square",
                    precision="float32",
                    point_shading="flat",
                    visible=self._toggles["cloud"].value,
                )
                self._handles["cloud"].append(handle)
            if reconstruction.mesh is not None and reconstruction.mesh.num_triangles > 0:
                import trimesh

                mesh = reconstruction.mesh
                alpha = np.full((len(mesh.vertex_colors), 1), 255, dtype=np.uint8)
                geometry_mesh = trimesh.Trimesh(
                    vertices=np.asarray(mesh.vertices, dtype=np.float64),
                    faces=np.asarray(mesh.triangles, dtype=np.int64),
                    vertex_colors=np.hstack([np.asarray(mesh.vertex_colors, np.uint8), alpha]),
                    process=False,
                )
                handle = scene.add_mesh_trimesh(
                    "/showroom/mesh", geometry_mesh, visible=self._toggles["mesh"].value
                )
                self._handles["mesh"].append(handle)
                del geometry_mesh
                gc.collect()  # trimesh objects are reference cycles holding a copy of the mesh (io/export.py)

            frustum_scale = 0.08 * radius
            for layer, views, colour in (
                ("keyframes", keyframes, KEYFRAME_COLOUR),
                ("generated", generated_views, GENERATED_COLOUR),
            ):
                for index, view in enumerate(views):
                    self._handles[layer].append(
                        self._add_frustum(f"/showroom/{layer}/{index}", view, colour, frustum_scale, layer)
                    )
            self._summary.content = self._describe(
                reconstruction, len(keyframes), len(generated_views), len(points)
            )

    def _keyframe_views(
        self, reconstruction: Reconstruction, images: Sequence[Any] | None
    ) -> list[CameraView]:
        poses = np.asarray(reconstruction.camera_poses, dtype=np.float64).reshape(-1, 4, 4)
        images = list(images or [])
        if images and len(images) != len(poses):
            raise ValueError(f"got {len(images)} keyframe images for {len(poses)} keyframe poses")
        views = []
        for index, pose in enumerate(poses):
            image = images[index] if images else None
            image = getattr(image, "image", image)  # a Keyframe gives its image
            intrinsics = reconstruction.intrinsics[index] if index < len(reconstruction.intrinsics) else None
            views.append(
                CameraView(
                    None if image is None else np.asarray(image), pose, intrinsics, f"keyframe {index}"
                )
            )
        return views

    def _set_initial_camera(
        self, geometry: np.ndarray, camera_poses: np.ndarray, centre: np.ndarray, up: np.ndarray
    ) -> None:
        cameras = np.asarray(camera_poses, dtype=np.float64).reshape(-1, 4, 4)
        pose, _ = preview_camera(geometry, cameras if len(cameras) else None)
        initial = self._server.initial_camera
        initial.up = tuple(float(v) for v in up)
        initial.position = tuple(float(v) for v in pose[:3, 3])
        initial.look_at = tuple(float(v) for v in centre)
        self._camera_set = True

    def _add_frustum(
        self, name: str, view: CameraView, colour: tuple[int, int, int], scale: float, layer: str
    ) -> Any:
        image = None if view.image is None else _thumbnail(view.image, self.thumbnail_width)
        if view.intrinsics is not None:
            width, height, fy = view.intrinsics.width, view.intrinsics.height, view.intrinsics.fy
        elif image is not None:
            height, width = image.shape[:2]
            fy = 0.8 * width  # no calibration: a typical ~65 degree horizontal field of view
        else:
            width, height, fy = 4, 3, 3.2
        return self._server.scene.add_camera_frustum(
            name,
            fov=float(2.0 * np.arctan2(height / 2.0, fy)),
            aspect=float(width / height),
            scale=scale,
            color=colour,
            image=image,
            format="jpeg",
            wxyz=_wxyz(view.pose),
            position=view.pose[:3, 3].astype(np.float64),
            visible=self._toggles[layer].value,
        )

    @staticmethod
    def _describe(reconstruction: Reconstruction, keyframes: int, generated: int, drawn_points: int) -> str:
        mesh = reconstruction.mesh
        lines = [
            f"**Backend:** {reconstruction.backend or 'unknown'}",
            f"**Frame:** `{reconstruction.frame_id}` "
            f"({'metres' if reconstruction.metric else 'arbitrary scale'})",
            f"**Points:** {reconstruction.num_points:,}"
            + (f" ({drawn_points:,} drawn)" if drawn_points != reconstruction.num_points else ""),
            f"**Triangles:** {mesh.num_triangles:,}" if mesh is not None else "**Mesh:** none",
            f"**Keyframes:** {keyframes}" + (f", **generated views:** {generated}" if generated else ""),
        ]
        if reconstruction.timings:
            stages = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in reconstruction.timings.items())
            lines.append(f"**Timings:** {stages}")
        return "  \n".join(lines)
