"""The node's settings: parameter values (ros/parameters.py's table) -> the core's config objects.

Free of rclpy, so every rule here is unit-tested without a ROS graph (test/test_ros_settings.py). A
bad combination raises :class:`SettingsError` with one line that says what to change; the node turns
it into a configuration error (exit 2 at start, a failed ``configure`` transition when managed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from showroom_ros.backends import BackendsConfig, LearnedConfig
from showroom_ros.capture.collector import CollectorConfig
from showroom_ros.capture.keyframes import KeyframeSelectorConfig
from showroom_ros.generation.service import GenerationSettings
from showroom_ros.mapping.occupancy import OccupancyConfig
from showroom_ros.mapping.point_map import MapConfig
from showroom_ros.mapping.robot_map import RobotMapConfig
from showroom_ros.mapping.volume import VolumeConfig
from showroom_ros.reconstruction.pipeline import PipelineConfig
from showroom_ros.reconstruction.rgbd import RGBDFusionConfig
from showroom_ros.reconstruction.surface import SurfaceConfig
from showroom_ros.slam.config import SlamConfig


class SettingsError(ValueError):
    """The parameters do not fit together; the message says which and how."""


@dataclass(frozen=True)
class Topics:
    """Per-camera topic lists, aligned by index ('' entries dropped: an empty list means none)."""

    images: list[str]
    depth: list[str] = field(default_factory=list)
    camera_info: list[str] = field(default_factory=list)
    depth_info: list[str] = field(default_factory=list)
    poses: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node's parts are built from; ``values`` keeps the raw parameters by name."""

    values: dict[str, Any]
    topics: Topics
    output_dir: Path
    collector: CollectorConfig
    backends: BackendsConfig
    pipeline: PipelineConfig
    point_map: MapConfig
    robot_map: RobotMapConfig
    generation: GenerationSettings
    slam: SlamConfig = field(default_factory=SlamConfig)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def continuous(self) -> bool:
        """Windows queue behind a running one: only with poses, so each window lands in map_frame."""
        return bool(self.values["continuous"]) and self.values["pose_source"] != "none"


def _listed(values: list[str]) -> list[str]:
    return [value for value in values if value]


def check_topics(topics: Topics, pose_source: str) -> None:
    """Lists align by index: each non-empty list has one entry per colour camera."""
    n = len(topics.images)
    if n == 0:
        raise SettingsError("image_topics is empty: name at least one colour image topic")
    for name, listed in (
        ("camera_info_topics", topics.camera_info),
        ("depth_topics", topics.depth),
        ("depth_info_topics", topics.depth_info),
        ("pose_topics", topics.poses),
    ):
        if listed and len(listed) != n:
            raise SettingsError(f"{name} has {len(listed)} entries but image_topics has {n}: lists align by index")
    if pose_source == "topic" and not topics.poses:
        raise SettingsError("pose_source is 'topic' but pose_topics is empty")
    if pose_source == "slam" and n != 1:
        raise SettingsError(f"pose_source 'slam' follows one camera, but image_topics has {n}")


def robot_map_config(p: dict[str, Any]) -> RobotMapConfig:
    return RobotMapConfig(
        frame_id=p["map_frame"],
        volume=VolumeConfig(
            voxel_size=p["map_voxel_size"],
            trunc_voxel_multiplier=p["map_truncation_voxels"],
            depth_min=p["min_depth"],
            depth_max=p["map_max_depth"],
            block_budget=p["map_block_budget"],
            spill_dir=str(Path(p["output_dir"]).expanduser() / "map_blocks") if p["map_spill_max_gb"] > 0 else None,
            spill_max_bytes=max(1, int(p["map_spill_max_gb"] * 1e9)),
        ),
        chunk_size_m=p["map_chunk_size"],
        redundant_translation_m=p["map_redundant_translation"],
        redundant_rotation_deg=p["map_redundant_rotation_deg"],
        occupancy=OccupancyConfig(
            resolution=p["occupancy_resolution"],
            floor_z=p["floor_z"],
            min_height=p["occupancy_min_height"],
            max_height=p["occupancy_max_height"],
        ),
    )


def slam_config(p: dict[str, Any]) -> SlamConfig:
    return SlamConfig(
        gravity=p["slam_gravity"],
        camera_height=p["slam_camera_height"],
        keyframe_translation=p["slam_keyframe_translation"],
        keyframe_rotation_deg=p["slam_keyframe_rotation_deg"],
        max_speed=p["slam_max_speed"],
        keyframe_memory_mb=p["slam_keyframe_memory_mb"],
        min_depth=max(0.1, p["min_depth"]),
    )


def _backends_config(p: dict[str, Any]) -> BackendsConfig:
    fusion = RGBDFusionConfig(
        voxel_size=p["voxel_size"],
        min_depth=p["min_depth"],
        max_depth=p["max_depth"],
        tsdf_mesh=bool(p["build_mesh"]) and p["rgbd_surface"] == "tsdf",
        tsdf_voxel_size=p["tsdf_voxel_size"],
    )
    learned = {
        "device": p["model_device"],
        "dtype": p["model_dtype"],
        "input_size": p["model_input_size"],
        "conf_percentile": p["model_conf_percentile"],
        "min_confidence": p["model_min_confidence"],
        "image_idx_seed": p["model_image_idx_seed"],
        "engine": p["model_engine"],
        "engine_precision": p["model_engine_precision"],
        "engine_cache_dir": p["model_engine_cache_dir"],
        "engine_cache_max_gb": p["model_engine_cache_max_gb"],
    }
    return BackendsConfig(
        fusion=fusion,
        fast3r=LearnedConfig(model=p["model"], **learned),
        showroom=LearnedConfig(model=p["student_model"], **learned),
    )


def node_settings(values: dict[str, Any]) -> NodeSettings:
    """Check the parameters together and build every config object the node's parts need. ``values`` is
    kept (not copied): run-time parameter changes the node writes into it are seen by every part."""
    p = values
    topics = Topics(
        images=_listed(p["image_topics"]),
        depth=_listed(p["depth_topics"]),
        camera_info=_listed(p["camera_info_topics"]),
        depth_info=_listed(p["depth_info_topics"]),
        poses=_listed(p["pose_topics"]),
    )
    check_topics(topics, p["pose_source"])
    if p["min_keyframes"] > p["max_keyframes"]:
        raise SettingsError("min_keyframes must not exceed max_keyframes")
    if p["pose_source"] == "slam" and not topics.depth and (p["window_overlap"] < 2 or not p["continuous"]):
        raise SettingsError(
            "pose_source 'slam' without depth_topics chains learned windows: it needs continuous true and "
            "window_overlap >= 2 (the scale between windows comes from the keyframes they share)"
        )
    collector = CollectorConfig(
        num_cameras=len(topics.images),
        use_depth=bool(topics.depth),
        separate_depth_camera=bool(topics.depth_info),
        require_pose=p["pose_source"] not in ("none", "slam"),  # slam: the pose comes after the frame
        sink_rejected=p["pose_source"] == "slam",  # tracking sees a covered lens (and says "lost")
        require_intrinsics=bool(topics.camera_info),
        evaluation_period_ns=int(1e9 / p["evaluation_rate_hz"]),
        sync_slop_ns=int(p["sync_slop"] * 1e9),
        wait_timeout_ns=int(p["wait_timeout"] * 1e9),
        selector=KeyframeSelectorConfig(
            blur_threshold=p["blur_threshold"],
            min_translation=p["min_translation"],
            min_rotation_deg=p["min_rotation_deg"],
            min_image_motion=p["min_image_motion"],
        ),
    )
    return NodeSettings(
        values=p,
        topics=topics,
        output_dir=Path(p["output_dir"]).expanduser().resolve(),
        collector=collector,
        backends=_backends_config(p),
        pipeline=PipelineConfig(
            backend=p["backend"],
            build_mesh=p["build_mesh"],
            min_keyframes=p["min_keyframes"],
            surface=SurfaceConfig(depth=p["poisson_depth"]),
        ),
        point_map=MapConfig(voxel_size=p["map_voxel_size"], max_points=p["map_max_points"]),
        robot_map=robot_map_config(p),
        generation=GenerationSettings(
            backend=p["generation_backend"],
            inpaint_model=p["inpaint_model"],
            device=None if p["generation_device"] == "auto" else p["generation_device"],
            layout_model=p["layout_model"],
        ),
        slam=slam_config(p),
    )


def apply_runtime_change(collector: CollectorConfig, name: str, value: Any) -> None:
    """The run-time parameters the collector reads (the others are read where used, from ``values``)."""
    if name == "wait_timeout":
        collector.wait_timeout_ns = int(value * 1e9)
    elif name == "evaluation_rate_hz":
        collector.evaluation_period_ns = int(1e9 / value)
