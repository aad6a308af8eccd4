"""The node's parameters, declared from one table (name, default, description, range)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from showroom_ros.io.message_layout import DISPLAY_MAX_TRIANGLES
from showroom_ros.models.names import (
    DEFAULT_ENGINE,
    DEVICES,
    DTYPES,
    ENGINE_CACHE_MAX_GB,
    ENGINE_PRECISION_CHOICES,
    ENGINES,
    FAST3R_RELEASE_REPO,
)
from showroom_ros.ros.input_node import INPUT_EXECUTORS
from showroom_ros.ros.pose_sources import POSE_SOURCES
from showroom_ros.slam.config import GRAVITY_SOURCES


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = True


SHOWROOM_PARAMETERS: tuple[Param, ...] = (
    # inputs
    Param("image_topics", ["/camera/color/image_raw"], "Colour image topics, one per camera (lists align by index)"),
    Param("depth_topics", [""], "Depth image topics aligned with image_topics; empty list or '' = no depth"),
    Param("camera_info_topics", ["/camera/color/camera_info"], "CameraInfo of each colour camera"),
    Param("depth_info_topics", [""], "CameraInfo of each depth camera; '' = depth is registered to colour"),
    Param(
        "image_transport",
        "raw",
        "raw: sensor_msgs/Image; compressed: <topic>/compressed and <depth>/compressedDepth",
        choices=("raw", "compressed"),
    ),
    Param(
        "input_reliability",
        "best_effort",
        "QoS reliability of the camera subscriptions (best_effort matches every publisher)",
        choices=("best_effort", "reliable"),
    ),
    Param(
        "input_executor",
        "auto",
        "Executor spinning the camera subscriptions: events (rclpy's C++ EventsExecutor, Kilted and later; "
        "about half the idle CPU), single (SingleThreadedExecutor), auto (events where rclpy has it)",
        choices=INPUT_EXECUTORS,
    ),
    Param(
        "pose_source",
        "tf",
        "Where camera poses come from: tf (map -> image frame_id), topic (pose_topics), slam (the node's own "
        "RGB-D tracking and loop closure, docs/slam.md), none",
        choices=POSE_SOURCES,
    ),
    Param(
        "pose_topics",
        [""],
        "geometry_msgs/PoseStamped of each camera's optical frame in map_frame (pose_source: topic)",
    ),
    Param("map_frame", "map", "Fixed frame the outputs are published in when poses are known"),
    # pose_source: slam (docs/slam.md)
    Param(
        "slam_gravity",
        "first_camera",
        "Where the SLAM map's 'up' (z, for ~/occupancy) comes from: first_camera (a level camera, "
        "slam_camera_height above the floor), floor_plane (fitted in the first view), none (first camera frame)",
        choices=GRAVITY_SOURCES,
    ),
    Param(
        "slam_camera_height",
        1.0,
        "Height of the first camera above the floor (m; slam_gravity first_camera)",
        range=(-10.0, 10.0),
    ),
    Param(
        "slam_localization_only",
        False,
        "After ~/load_map, relocalise and track in the loaded map without adding keyframes to it",
    ),
    Param("slam_keyframe_translation", 0.12, "A new SLAM keyframe after this much motion (m)", range=(0.02, 2.0)),
    Param("slam_keyframe_rotation_deg", 12.0, "A new SLAM keyframe after this much rotation (deg)", range=(1.0, 90.0)),
    Param("slam_max_speed", 1.5, "Faster camera motion is not believed: tracking is lost (m/s)", range=(0.1, 20.0)),
    Param(
        "slam_keyframe_memory_mb",
        2048.0,
        "Memory for kept keyframe images (map rebuilds after a closure); beyond it the oldest images go",
        range=(16.0, 1e6),
    ),
    Param("slam_publish_tf", True, "pose_source slam: publish TF map_frame -> the camera (or -> odom_frame)"),
    Param(
        "odom_frame",
        "",
        "pose_source slam: when set (and TF has odom_frame -> camera), TF carries map_frame -> odom_frame "
        "(REP-105) instead of map_frame -> camera",
    ),
    Param("slam_queue_size", 4, "Frames waiting for tracking; the oldest is dropped beyond this", range=(1, 64)),
    Param("depth_scale", 1000.0, "16UC1 depth units per metre", range=(1.0, 100000.0)),
    # keyframe selection
    Param("min_keyframes", 3, "Fewest keyframes a reconstruction runs on", range=(2, 16)),
    Param("max_keyframes", 5, "Buffer size; auto_reconstruct fires when it is full", range=(2, 16)),
    Param("auto_reconstruct", True, "Reconstruct as soon as max_keyframes are buffered", read_only=False),
    Param(
        "idle_reconstruct_s",
        5.0,
        "Also reconstruct when >= min_keyframes are buffered and no keyframe came for this long (s); 0 = off",
        range=(0.0, 3600.0),
        read_only=False,
    ),
    Param(
        "evaluation_rate_hz",
        5.0,
        "Frames per second and camera considered as keyframes (the rest are dropped before decoding)",
        range=(0.1, 60.0),
        read_only=False,
    ),
    Param("blur_threshold", 30.0, "Minimum sharpness (variance of the Laplacian on a thumbnail)", range=(0.0, 1e5)),
    Param(
        "min_translation",
        0.15,
        "Metres the camera must move away from every buffered keyframe (poses known)",
        range=(0.0, 10.0),
    ),
    Param("min_rotation_deg", 10.0, "Or degrees it must turn (poses known)", range=(0.0, 180.0)),
    Param(
        "min_image_motion",
        0.08,
        "Image change from every buffered keyframe when poses are unknown (0..1)",
        range=(0.0, 1.0),
    ),
    Param("sync_slop", 0.05, "Seconds between colour and depth stamps that still make a pair", range=(0.0, 1.0)),
    Param(
        "wait_timeout",
        1.0,
        "Seconds a frame may wait for its CameraInfo, depth or pose",
        range=(0.0, 30.0),
        read_only=False,
    ),
    # reconstruction
    Param("backend", "auto", "Reconstruction backend", choices=("auto", "rgbd", "fast3r", "showroom", "sfm")),
    Param("voxel_size", 0.01, "Fusion voxel size in metres", range=(0.001, 0.5)),
    Param("min_depth", 0.1, "Nearest valid depth (m)", range=(0.0, 100.0)),
    Param("max_depth", 6.0, "Farthest valid depth (m)", range=(0.1, 100.0)),
    Param(
        "model",
        FAST3R_RELEASE_REPO,
        "Fast3R weights: Hugging Face repo id or local path "
        "(config.json + model.safetensors, .safetensors or .pth); '' = none. Loads in the background",
    ),
    Param("student_model", "", "ShowRoom student weights (backend showroom); '' = none"),
    Param("model_device", "auto", "Device of the learned models", choices=DEVICES),
    Param(
        "model_dtype",
        "auto",
        "auto (bf16 on CUDA and on CPUs with native bf16, else fp32), fp32, bf16, fp16",
        choices=DTYPES,
    ),
    Param(
        "model_engine",
        DEFAULT_ENGINE,
        "Inference engine of the learned network on CPU: torch (eager), auto (the fastest installed engine "
        "within 1e-3 of eager fp32), compile, onnxruntime, openvino. Built at the first run of each image "
        "size, cached on disk",
        choices=ENGINES,
    ),
    Param(
        "model_engine_precision",
        "auto",
        "auto (= the compute dtype), fp32, bf16, int8 (onnxruntime only; not gated: docs/fast3r.md)",
        choices=ENGINE_PRECISION_CHOICES,
    ),
    Param(
        "model_engine_cache_dir",
        "",
        "Engine artefact cache; '' = $SHOWROOM_ENGINE_CACHE or ~/.cache/showroom_ros/engines",
    ),
    Param(
        "model_engine_cache_max_gb",
        ENGINE_CACHE_MAX_GB,
        "Engine cache size limit: the least recently used artefacts (each a copy of the weights, 2.6 GB for "
        "the ViT-L release in fp32) are removed beyond it; 0 = no limit",
        range=(0.0, 10000.0),
    ),
    Param(
        "model_input_size",
        512,
        "Long side fed to the model: 512 (512x384, the release) or 256 (ShowRoom's 256x192)",
        range=(256, 512),
    ),
    Param(
        "model_conf_percentile",
        50.0,
        "Per view, keep points at or above this confidence percentile",
        range=(0.0, 100.0),
    ),
    Param(
        "model_min_confidence", 1.0, "And at or above this absolute confidence (Fast3R's is >= 1)", range=(0.0, 1000.0)
    ),
    Param(
        "model_image_idx_seed",
        -1,
        "-1: deterministic image indices 0..N-1; else upstream's random draw, seeded",
        range=(-1, 2**31 - 1),
    ),
    Param("accumulate_map", True, "Merge successive reconstructions into ~/map instead of replacing it"),
    Param("map_voxel_size", 0.02, "Voxel size of the accumulated map (m)", range=(0.001, 1.0)),
    Param("map_max_points", 2000000, "Memory bound of the accumulated map", range=(1000, 50000000)),
    # robot mapping (issue 12): one TSDF map in map_frame, fed by every reconstruction with known poses
    Param(
        "volumetric_map",
        True,
        "Integrate reconstructions that are in map_frame at metric scale into a TSDF map: ~/map is its "
        "surface, ~/map_mesh its chunked mesh, ~/occupancy its 2D grid (off: ~/map merges clouds)",
    ),
    Param(
        "continuous",
        True,
        "Keep collecting keyframes while a reconstruction runs; windows of max_keyframes overlap by "
        "window_overlap keyframes (used when poses are known)",
    ),
    Param("window_overlap", 1, "Keyframes a window shares with the previous one (< max_keyframes)", range=(0, 8)),
    Param(
        "max_pending_windows",
        3,
        "Windows queued behind a running reconstruction; beyond that new keyframes are refused (and said why)",
        range=(1, 100),
    ),
    Param("map_truncation_voxels", 4.0, "TSDF truncation in voxels of map_voxel_size", range=(1.0, 32.0)),
    Param("map_max_depth", 4.0, "Farthest depth integrated into the TSDF map (m)", range=(0.2, 50.0)),
    Param(
        "map_block_budget",
        60000,
        "TSDF blocks kept in memory (8^3 voxels each, ~10 KB); beyond it the blocks farthest from the camera go to "
        "disk (output_dir/map_blocks, map_spill_max_gb) and come back when the camera nears them again",
        range=(100, 10000000),
    ),
    Param(
        "map_spill_max_gb",
        16.0,
        "Disk the map's blocks beyond map_block_budget may use (GB, under output_dir/map_blocks); 0 = erase them "
        "instead (the first rooms of a large floor are then lost)",
        range=(0.0, 100000.0),
    ),
    Param(
        "map_redundant_translation",
        0.02,
        "A frame whose camera is within this distance (m) and map_redundant_rotation_deg of a frame already in "
        "the map is not fused again (a static scene stays flat: docs/mapping.md); 0 = off",
        range=(0.0, 10.0),
    ),
    Param(
        "map_redundant_rotation_deg",
        2.0,
        "Angle (deg) for map_redundant_translation; 0 = off",
        range=(0.0, 180.0),
    ),
    Param(
        "map_publish_rate_hz",
        2.0,
        "Most map updates per second (~/map_mesh changed chunks, ~/occupancy, ~/map), sent only when the map changed",
        range=(0.1, 30.0),
    ),
    Param(
        "map_queue_size",
        8,
        "Keyframes waiting for keyframe-rate integration; beyond it the oldest is dropped (the newest wins), counted",
        range=(1, 1000),
    ),
    Param(
        "map_chunk_size",
        1.0,
        "Edge of the ~/map_mesh chunks (m, rounded to whole TSDF blocks): one marker each, resent only when changed",
        range=(0.2, 10.0),
    ),
    Param("occupancy_resolution", 0.05, "Cell size of ~/occupancy (m)", range=(0.01, 1.0)),
    Param("floor_z", 0.0, "Height of the floor in map_frame (z up, REP-103) (m)", range=(-100.0, 100.0)),
    Param(
        "occupancy_min_height",
        0.1,
        "Surfaces above floor_z + this are obstacles in ~/occupancy (m)",
        range=(-10.0, 10.0),
    ),
    Param(
        "occupancy_max_height",
        1.5,
        "Surfaces above floor_z + this (overhangs the robot passes under) are not obstacles (m)",
        range=(-10.0, 100.0),
    ),
    Param("publish_tf", False, "Broadcast a TF frame per keyframe camera (needs tf2_ros)"),
    Param("build_mesh", True, "Run screened Poisson reconstruction after fusion"),
    Param("poisson_depth", 9, "Octree depth of screened Poisson", range=(5, 12)),
    Param(
        "rgbd_surface",
        "tsdf",
        "Surface of RGB-D reconstructions: tsdf (TSDF fusion of the depth images + marching cubes, ~5x faster "
        "than Poisson here, as accurate: docs/surface.md) or poisson (screened Poisson of the fused cloud)",
        choices=("tsdf", "poisson"),
    ),
    Param(
        "tsdf_voxel_size",
        0.016,
        "Voxel of a window's RGB-D TSDF surface (m): 16 mm makes about mesh_max_triangles on a room (~100k), "
        "as accurate as 8 mm within 0.1 cm and 3x cheaper (docs/benchmarks.md); the robot map is separate "
        "(map_voxel_size). The CLI keeps 8 mm for saved meshes",
        range=(0.002, 0.1),
    ),
    Param(
        "mesh_max_triangles",
        DISPLAY_MAX_TRIANGLES,
        "Triangles published to RViz (the saved mesh is not decimated)",
        range=(1000, 5000000),
    ),
    Param("reconstruct_timeout", 120.0, "Seconds ~/reconstruct waits for a result", range=(1.0, 3600.0)),
    # view generation (~/generate_views)
    Param(
        "generation_backend",
        "auto",
        "Inpainting: auto (diffusers when inpaint_model is set, else opencv), opencv, diffusers",
        choices=("auto", "opencv", "diffusers"),
    ),
    Param(
        "inpaint_model",
        "",
        "Stable Diffusion 2 inpainting: hub id (e.g. stabilityai/stable-diffusion-2-inpainting) "
        "or local directory; '' = none",
    ),
    Param("layout_model", "", "ST-RoomNet Keras .h5 weights for the layout discriminator; '' = none"),
    Param("generation_device", "auto", "Device for inpainting and layout models", choices=("auto", "cpu", "cuda")),
    Param("generation_steps", 30, "Default diffusion steps", range=(1, 200)),
    Param("generation_guidance", 7.5, "Default classifier-free guidance scale", range=(0.0, 30.0)),
    Param("generation_max_yaw_deg", 30.0, "Yaw of generated views when only a count is given", range=(1.0, 90.0)),
    Param("generate_timeout", 900.0, "Seconds ~/generate_views waits for its result", range=(1.0, 36000.0)),
    # outputs
    Param("output_dir", "~/.ros/showroom", "Where ~/save and autosave write (nothing is written elsewhere)"),
    Param("autosave", True, "Save every reconstruction under output_dir (cloud, mesh, GLB, PNG, NPZ)", read_only=False),
    Param(
        "autosave_keep",
        20,
        "Autosaved reconstructions kept; older ones are deleted (the map is what lasts)",
        range=(1, 100000),
        read_only=False,
    ),
    Param(
        "autosave_max_mb",
        1000.0,
        "Disk budget of the autosaves (MB); the oldest are deleted beyond it (the newest is always kept)",
        range=(1.0, 1e7),
        read_only=False,
    ),
    Param("viewer", False, "Serve a viser web viewer of the latest reconstruction"),
    Param("viewer_host", "127.0.0.1", "Viewer address (0.0.0.0 to reach it from other machines)"),
    Param("viewer_port", 8080, "Viewer port", range=(1, 65535)),
    Param(
        "lifecycle",
        False,
        "Managed node: wait in 'unconfigured' for ~/change_state (ros2 lifecycle, nav2's lifecycle_manager, the "
        "launch file's autostart); false: configure and activate at start",
    ),
    Param("status_rate_hz", 1.0, "Status and diagnostics publish rate", range=(0.1, 50.0)),
)


def declare_parameters(node: Node, table: tuple[Param, ...]) -> dict[str, Any]:
    """Declare every parameter with its description and range; return their values by name."""
    values: dict[str, Any] = {}
    for param in table:
        descriptor = ParameterDescriptor(description=param.description, read_only=param.read_only)
        if param.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(param.choices)
        if param.range is not None:
            low, high = param.range
            if isinstance(param.default, bool):
                pass
            elif isinstance(param.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
            elif isinstance(param.default, float):
                descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
        value = node.declare_parameter(param.name, param.default, descriptor).value
        if param.choices and value not in param.choices:
            raise ValueError(f"parameter '{param.name}' must be one of {list(param.choices)}, got '{value}'")
        values[param.name] = value
    return values


_BY_NAME: dict[str, Param] = {param.name: param for param in SHOWROOM_PARAMETERS}


def check_parameter(name: str, value: Any) -> str:
    """Why setting ``name`` to ``value`` at run time is refused, or '' when it may be applied."""
    param = _BY_NAME.get(name)
    if param is None:
        return ""  # not ours (use_sim_time, qos_overrides.*): rclpy declared it and checks it
    if param.read_only:
        return f"'{name}' is read-only: it is used at start-up; restart the node with the new value"
    expected = type(param.default)
    ok = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
    if not ok:
        return f"'{name}' must be {expected.__name__}, got {type(value).__name__} {value!r}"
    if param.choices and value not in param.choices:
        return f"'{name}' must be one of {list(param.choices)}, got {value!r}"
    if param.range is not None and not isinstance(value, bool):
        low, high = param.range
        if not low <= value <= high:  # NaN fails this too
            return f"'{name}' must be within [{low:g}, {high:g}], got {value!r}"
    return ""
