"""Surface from a fused cloud: screened Poisson (Open3D), with the trimming that makes it honest.

Poisson always returns a closed, watertight surface; in a room scanned from the inside that means
invented walls, a "roof" over the open side and blobs where nothing was seen. Two things keep only
what the cameras support: normals are oriented towards the cameras (a wrong sign turns a wall
inside out), and after meshing, low-density vertices and vertices far from every input point are
removed and the mesh is cropped to the input's bounding box plus a small margin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import open3d as o3d

from showroom_ros.reconstruction.result import Reconstruction, TriangleMesh

MIN_SURFACE_POINTS = 30

SUPPORT_CELLS = 2.0
MIN_SUPPORT = 0.7
"""Defaults of :func:`surface_support`'s rule (calibration in its docstring)."""

DENSE_HINT = (
    "add depth (a depth topic, backend rgbd) or configure learned model weights "
    "(parameter model: Fast3R weights, or student_model) for a dense surface"
)
"""What would turn a sparse result into a dense one; ends every sparse-result note."""


@dataclass
class SurfaceConfig:
    """Parameters of :func:`reconstruct_surface`.

    ``depth`` is the Poisson octree depth (9: ~2**9 cells across the cloud's extent, about 1 cm
    for a 5 m room). ``density_quantile`` removes that fraction of least-supported vertices.
    ``crop_margin`` enlarges the input bounding box by this fraction of its diagonal before
    cropping. ``max_distance_factor`` x the mean point spacing is the farthest a vertex may be from
    any input point (0 disables): it removes the hole fillings density alone keeps.
    ``normal_radius_factor`` x the mean point spacing is the normal-estimation radius
    (scale-free, so it also works for non-metric clouds from learned backends), with at most
    ``normal_max_neighbors`` points. ``passes`` = 2 re-runs Poisson on the first mesh's vertices
    (what the original ShowRoom did; measured in docs/surface.md). ``threads`` -1 = all cores.
    ``keep_backend_mesh`` keeps a mesh the backend already built from depth (the rgbd backend's
    TSDF surface, ``RGBDFusionConfig.tsdf_mesh``) instead of replacing it by Poisson: faster and as
    accurate on RGB-D input (docs/surface.md, "Trigger to published").
    """

    depth: int = 9
    passes: int = 1
    density_quantile: float = 0.05
    crop_margin: float = 0.02
    max_distance_factor: float = 5.0
    normal_radius_factor: float = 4.0
    normal_max_neighbors: int = 30
    poisson_scale: float = 1.1
    threads: int = -1
    min_support: float = MIN_SUPPORT
    support_cells: float = SUPPORT_CELLS
    keep_backend_mesh: bool = True

    def __post_init__(self) -> None:
        if not 4 <= self.depth <= 14:
            raise ValueError(f"Poisson depth must be in 4..14, got {self.depth}")
        if self.passes not in (1, 2):
            raise ValueError(f"passes must be 1 or 2, got {self.passes}")
        if not 0 <= self.density_quantile < 1:
            raise ValueError(f"density_quantile must be in [0, 1), got {self.density_quantile}")
        if self.crop_margin < 0 or self.max_distance_factor < 0:
            raise ValueError("crop_margin and max_distance_factor must be >= 0")
        if self.normal_radius_factor <= 0 or self.normal_max_neighbors < 3:
            raise ValueError("normal_radius_factor must be > 0 and normal_max_neighbors >= 3")
        if not 0 <= self.min_support <= 1 or not self.support_cells > 0:
            raise ValueError("min_support must be in [0, 1] and support_cells > 0")


def _camera_centres_and_axes(cameras: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(K, 3) centres and, when poses were given, (K, 3) optical axes."""
    if cameras is None:
        return np.zeros((0, 3)), None
    array = np.asarray(cameras, dtype=np.float64)
    if array.ndim == 3 and array.shape[1:] == (4, 4):
        return array[:, :3, 3], array[:, :3, 2]
    if array.ndim == 2 and array.shape[1] == 3:
        return array, None
    raise ValueError(f"cameras must be (K, 3) centres or (K, 4, 4) camera-to-frame poses, got {array.shape}")


def orient_normals_to_cameras(points: np.ndarray, normals: np.ndarray, cameras: np.ndarray | None) -> np.ndarray:
    """Flip normals to face the cameras that plausibly saw each point.

    Every camera that has the point in front of it (within 70 degrees of its optical axis, when
    poses are given) votes for the side it is on, weighted by 1/distance; a point no camera
    faces follows its nearest camera. Without cameras the normals are returned unchanged.
    """
    centres, axes = _camera_centres_and_axes(cameras)
    if len(centres) == 0:
        return normals
    votes = np.zeros(len(points))
    nearest_side = np.zeros(len(points))
    nearest_distance = np.full(len(points), np.inf)
    for index, centre in enumerate(centres):
        to_camera = centre - points
        distance = np.maximum(np.linalg.norm(to_camera, axis=1), 1e-9)
        side = np.sign(np.einsum("ij,ij->i", normals, to_camera))
        seen = np.ones(len(points), dtype=bool)
        if axes is not None:
            seen = (-to_camera @ axes[index]) > np.cos(np.deg2rad(70.0)) * distance
        votes += np.where(seen, side / distance, 0.0)
        closer = distance < nearest_distance
        nearest_distance[closer], nearest_side[closer] = distance[closer], side[closer]
    decided = np.where(votes != 0, np.sign(votes), nearest_side)
    return normals * np.where(decided < 0, -1.0, 1.0)[:, None]


def _poisson_once(
    cloud: o3d.geometry.PointCloud,
    config: SurfaceConfig,
    bounds: o3d.geometry.AxisAlignedBoundingBox,
    support: o3d.geometry.PointCloud,
    max_distance: float,
) -> tuple[o3d.geometry.TriangleMesh, float, float]:
    """One Poisson solve, trimmed (density, distance to ``support``) and cropped, with stage seconds."""
    started = time.perf_counter()
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
            cloud, depth=config.depth, scale=config.poisson_scale, linear_fit=False, n_threads=config.threads
        )
    poisson_seconds = time.perf_counter() - started
    started = time.perf_counter()
    densities = np.asarray(densities)
    if config.density_quantile > 0 and len(densities):
        mesh.remove_vertices_by_mask(densities < np.quantile(densities, config.density_quantile))
    mesh = mesh.crop(bounds)
    if max_distance > 0 and len(mesh.vertices):
        distance = np.asarray(o3d.geometry.PointCloud(mesh.vertices).compute_point_cloud_distance(support))
        mesh.remove_vertices_by_mask(distance > max_distance)
    mesh.remove_degenerate_triangles()
    mesh.remove_unreferenced_vertices()
    return mesh, poisson_seconds, time.perf_counter() - started


def reconstruct_surface(
    points: np.ndarray,
    colors: np.ndarray | None,
    camera_centres: np.ndarray | None,
    config: SurfaceConfig | None = None,
    timings: dict[str, float] | None = None,
) -> TriangleMesh:
    """Screened Poisson mesh of a coloured cloud, trimmed to what the input supports.

    ``camera_centres`` are (K, 3) camera positions or (K, 4, 4) camera-to-frame poses (better:
    their viewing directions decide which cameras could see a point); they orient the normals.
    Vertex colours are interpolated by Poisson from the input colours. Stage seconds are added to
    ``timings`` when given (``normals``, ``poisson``, ``trim``).
    """
    config = config or SurfaceConfig()
    xyz = np.asarray(points, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {xyz.shape}")
    finite = np.all(np.isfinite(xyz), axis=1)
    xyz = xyz[finite]
    if len(xyz) < MIN_SURFACE_POINTS:
        raise ValueError(f"a surface needs at least {MIN_SURFACE_POINTS} finite points, got {len(xyz)}")
    stage_times = timings if timings is not None else {}

    started = time.perf_counter()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    if colors is not None:
        rgb = np.asarray(colors)
        if rgb.shape != (len(finite), 3):
            raise ValueError(f"colors must be ({len(finite)}, 3) to match the points, got {rgb.shape}")
        rgb = rgb[finite].astype(np.float64)
        cloud.colors = o3d.utility.Vector3dVector(rgb / 255.0 if np.asarray(colors).dtype == np.uint8 else rgb)
    spacing = float(np.mean(np.asarray(cloud.compute_nearest_neighbor_distance())))
    radius = max(spacing, 1e-9) * config.normal_radius_factor
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=config.normal_max_neighbors))
    normals = orient_normals_to_cameras(xyz, np.asarray(cloud.normals), camera_centres)
    cloud.normals = o3d.utility.Vector3dVector(normals)
    stage_times["normals"] = stage_times.get("normals", 0.0) + time.perf_counter() - started

    low, high = xyz.min(axis=0), xyz.max(axis=0)
    margin = config.crop_margin * float(np.linalg.norm(high - low))
    bounds = o3d.geometry.AxisAlignedBoundingBox(low - margin, high + margin)

    max_distance = config.max_distance_factor * spacing
    mesh, poisson_seconds, trim_seconds = _poisson_once(cloud, config, bounds, cloud, max_distance)
    stage_times["poisson"] = stage_times.get("poisson", 0.0) + poisson_seconds
    stage_times["trim"] = stage_times.get("trim", 0.0) + trim_seconds
    if config.passes == 2 and len(mesh.vertices) >= MIN_SURFACE_POINTS:
        # ShowRoom's second pass: the first surface's vertices become the samples of a second solve.
        # Its own vertex normals are kept (re-estimating them would lose the camera orientation).
        mesh.compute_vertex_normals()
        resampled = o3d.geometry.PointCloud(mesh.vertices)
        resampled.normals = mesh.vertex_normals
        if mesh.has_vertex_colors():
            resampled.colors = mesh.vertex_colors
        mesh, poisson_seconds, trim_seconds = _poisson_once(resampled, config, bounds, cloud, max_distance)
        stage_times["poisson"] += poisson_seconds
        stage_times["trim"] += trim_seconds

    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    if mesh.has_vertex_colors():
        vertex_colors = np.clip(np.rint(np.asarray(mesh.vertex_colors) * 255.0), 0, 255).astype(np.uint8)
    else:
        vertex_colors = np.full((len(vertices), 3), 180, dtype=np.uint8)
    return TriangleMesh(vertices, np.asarray(mesh.triangles, dtype=np.int32), vertex_colors)


def surface_support(mesh: TriangleMesh, points: np.ndarray, cells: float, depth: int, scale: float) -> float:
    """Fraction of the mesh's area within ``cells`` Poisson cells of an input point (0 for no mesh).

    A triangle counts as supported when its centroid is that close to a point of the cloud. The cell
    is the octree's leaf size (``scale`` x the cloud's largest extent / 2**``depth``), so the rule has
    no unit and also holds for the non-metric clouds of learned backends. Where the cloud samples the
    surface at least as finely as Poisson resolves it almost all the area is supported; where a few
    points are spread over a room, almost all of it is Poisson's interpolation between them.

    Calibration at depth 9 (``benchmarks/bench_sfm.py --surface``, docs/benchmarks.md), support within
    2 / 4 / 8 cells: dense rgbd clouds of two 5-frame 7-Scenes groups 0.88-0.91 / 0.97-1.00 / 1.00;
    their sparse sfm clouds (RGB + known poses, 433-2237 points, old and new matching, 540 and
    640 px) 0.01-0.37 / 0.03-0.64 / 0.14-0.95. At 8 cells the two overlap; at 2 cells the default
    threshold 0.7 has a wide margin on both sides (:data:`SUPPORT_CELLS`, :data:`MIN_SUPPORT`).
    """
    if mesh.num_triangles == 0:
        return 0.0
    xyz = np.asarray(points, dtype=np.float64)
    xyz = xyz[np.all(np.isfinite(xyz), axis=1)]
    cell = scale * float(np.max(xyz.max(axis=0) - xyz.min(axis=0))) / 2**depth
    corners = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.triangles)]
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    tree = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(corners.mean(axis=1)))
    distance = np.asarray(tree.compute_point_cloud_distance(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))))
    total = float(areas.sum())
    return float(areas[distance <= cells * cell].sum() / total) if total > 0 else 0.0


def attach_mesh(reconstruction: Reconstruction, config: SurfaceConfig | None = None) -> Reconstruction:
    """A copy of ``reconstruction`` with its Poisson mesh (cameras orient the normals) and stage timings.

    When the cloud does not support a surface (:func:`surface_support` below ``min_support``, or
    fewer than ``MIN_SURFACE_POINTS`` points) the copy has no mesh and a note saying why and what
    would make it dense. No mesh at all rather than the supported triangles only: on a sparse cloud
    those are small patches around isolated points, whose shape and orientation come from a dozen
    noisy neighbours; a consumer cannot tell them from measured surface, and the points already say
    all that was measured.

    A mesh the backend built from depth (TSDF) is kept as it is when ``config.keep_backend_mesh``:
    it lies on measured depth by construction, so the support rule, which guards against Poisson
    interpolating between sparse points, does not apply to it.
    """
    config = config or SurfaceConfig()
    timings = dict(reconstruction.timings)
    notes = list(reconstruction.notes)
    if config.keep_backend_mesh and reconstruction.mesh is not None and reconstruction.mesh.num_triangles > 0:
        return replace(reconstruction, timings=timings, notes=notes)
    finite = int(np.all(np.isfinite(reconstruction.points), axis=1).sum())
    if finite < MIN_SURFACE_POINTS:
        notes.append(f"no mesh: {finite} points are too few for a surface; {DENSE_HINT}")
        return replace(reconstruction, mesh=None, timings=timings, notes=notes)
    cameras = reconstruction.camera_poses if len(reconstruction.camera_poses) else None
    mesh = reconstruct_surface(reconstruction.points, reconstruction.colors, cameras, config, timings)
    if config.min_support > 0:
        started = time.perf_counter()
        support = surface_support(mesh, reconstruction.points, config.support_cells, config.depth, config.poisson_scale)
        timings["support"] = time.perf_counter() - started
        if support < config.min_support:
            notes.append(
                f"sparse result, no mesh: {reconstruction.num_points} points cover only {support:.0%} of the "
                f"surface Poisson would fit through them (a mesh needs {config.min_support:.0%}); {DENSE_HINT}"
            )
            return replace(reconstruction, mesh=None, timings=timings, notes=notes)
    return replace(reconstruction, mesh=mesh, timings=timings, notes=notes)


def decimate_mesh(mesh: TriangleMesh, max_triangles: int) -> TriangleMesh:
    """At most ``max_triangles`` triangles, colours averaged, e.g. for an RViz marker.

    Vertex clustering rather than quadric decimation: far faster (quadric took 2.8 s for the 377k
    triangles of the sample kitchen), which matters on the trigger-to-mesh path; the saved mesh is
    never decimated. The cluster size starts from the mean edge length scaled to the wanted
    reduction and grows until the mesh fits. Returns ``mesh`` itself when it is already small enough
    or ``max_triangles`` <= 0 (no limit).
    """
    if max_triangles <= 0 or mesh.num_triangles <= max_triangles:
        return mesh
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    triangles = np.asarray(mesh.triangles, dtype=np.int32)
    legacy = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector3iVector(triangles))
    legacy.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertex_colors, dtype=np.float64) / 255.0)
    edge = float(np.linalg.norm(vertices[triangles[:, 0]] - vertices[triangles[:, 1]], axis=1).mean())
    voxel = max(edge, 1e-9) * np.sqrt(mesh.num_triangles / max_triangles)
    simplified = legacy.simplify_vertex_clustering(voxel, o3d.geometry.SimplificationContraction.Average)
    while len(simplified.triangles) > max_triangles:
        voxel *= 1.25
        simplified = legacy.simplify_vertex_clustering(voxel, o3d.geometry.SimplificationContraction.Average)
    simplified.remove_unreferenced_vertices()
    colors = np.clip(np.rint(np.asarray(simplified.vertex_colors) * 255.0), 0, 255).astype(np.uint8)
    if len(colors) != len(simplified.vertices):
        colors = np.full((len(simplified.vertices), 3), 180, dtype=np.uint8)
    return TriangleMesh(
        np.asarray(simplified.vertices, dtype=np.float32),
        np.asarray(simplified.triangles, dtype=np.int32),
        colors,
    )
