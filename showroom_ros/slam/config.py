"""Every SLAM setting in one dataclass: the node's ``slam_*`` parameters map onto it (ros/parameters.py)."""

from __future__ import annotations

from dataclasses import dataclass

GRAVITY_SOURCES = ("first_camera", "floor_plane", "none")


@dataclass
class SlamConfig:
    # --- frames ---------------------------------------------------------------------------------
    orb_features: int = 1000  # ORB keypoints per frame (tracking, closures, relocalisation)
    cloud_voxel: float = 0.03  # m: downsampling of each frame's cloud for GICP
    min_depth: float = 0.2
    max_depth: float = 4.0
    min_valid_depth: float = 0.15  # share of pixels with depth below which a frame cannot be tracked
    # --- tracking -------------------------------------------------------------------------------
    max_correspondence: float = 0.06  # m: GICP correspondence distance
    min_pnp_inliers: int = 25
    min_fitness: float = 0.55  # share of the frame's cloud within max_correspondence of the keyframe's
    max_speed: float = 1.5  # m/s: faster is not believed (the camera moved too fast, or a wrong match)
    max_angular_speed_deg: float = 180.0  # deg/s
    keyframe_translation: float = 0.12  # m from the reference keyframe: a new keyframe
    keyframe_rotation_deg: float = 12.0
    keyframe_min_fitness: float = 0.7  # overlap with the reference keyframe below this: a new keyframe
    # --- loop closure ---------------------------------------------------------------------------
    local_edges: int = 3  # also register each new keyframe to this many previous keyframes
    recent_excluded: int = 8  # keyframes this recent are not loop-closure candidates
    proximity_radius: float = 0.6  # m: candidates near the current estimate
    proximity_angle_deg: float = 45.0
    proximity_candidates: int = 3  # the nearest this many are verified
    appearance_candidates: int = 3  # top keyframes by place-recognition score
    min_appearance_score: float = 0.75
    closure_min_inliers: int = 40
    closure_min_fitness: float = 0.6
    closure_max_rmse: float = 0.03  # m: GICP inlier error after verification
    # --- pose graph -----------------------------------------------------------------------------
    odometry_sigma_m: float = 0.01
    odometry_sigma_deg: float = 0.5
    closure_sigma_m: float = 0.02
    closure_sigma_deg: float = 1.0
    robust_kernel: float = 3.0  # Cauchy scale (in sigmas) on closure edges
    # --- map ------------------------------------------------------------------------------------
    gravity: str = "first_camera"  # where "up" comes from: GRAVITY_SOURCES (slam/gravity.py)
    camera_height: float = 1.0  # m above the floor of the first camera (gravity first_camera)
    keyframe_memory_mb: float = 2048.0  # kept keyframes (for closures, relocalisation, map rebuilds)
    rebuild_threshold: float = 0.02  # m: rebuild the map when a keyframe moved more than this (a voxel)
    rebuild_period_s: float = 10.0  # at most one map rebuild per this many seconds (closures come in runs)

    def __post_init__(self) -> None:
        if self.gravity not in GRAVITY_SOURCES:
            raise ValueError(f"slam gravity must be one of {GRAVITY_SOURCES}, got {self.gravity!r}")
        for name in ("cloud_voxel", "max_correspondence", "max_speed", "keyframe_translation", "proximity_radius"):
            if not getattr(self, name) > 0:
                raise ValueError(f"slam {name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"slam needs 0 <= min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        for name in ("min_fitness", "keyframe_min_fitness", "closure_min_fitness", "min_valid_depth"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"slam {name} must be in [0, 1], got {getattr(self, name)}")
