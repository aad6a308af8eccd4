"""Which way is up in the SLAM map: the map frame is z-up (REP-103) so that the occupancy grid's
height band means "above the floor".

``first_camera``: the first camera is level (its image "down" is gravity), mounted ``camera_height``
  above the floor; the map origin is the floor point below it.
``floor_plane``: the largest plane in the first frame facing the camera's "up" within 30° is the floor
  (RANSAC, Open3D); its normal is up and the camera's height above it is measured. Without such a
  plane in view, ``first_camera`` is used and the reason is said.
``none``: the map frame is the first camera's optical frame (z forward, y down): no occupancy "up".
"""

from __future__ import annotations

import numpy as np
import open3d as o3d

from showroom_ros.slam.config import SlamConfig
from showroom_ros.slam.frames import SlamFrame

# Camera optical axes (x right, y down, z forward) in a z-up map: x -> x, y -> -z, z -> y.
LEVEL_CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
MAX_FLOOR_TILT_DEG = 30.0


def level_pose(camera_height: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = LEVEL_CAMERA
    pose[2, 3] = camera_height
    return pose


def floor_pose(points: np.ndarray) -> tuple[np.ndarray | None, str]:
    """The first camera's pose over a floor plane fitted in its own points, or (None, why not)."""
    if len(points) < 500:
        return None, "too few depth points for a floor fit"
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    down_in_camera = np.array([0.0, 1.0, 0.0])
    for _ in range(3):
        if len(cloud.points) < 300:
            break
        plane, inliers = cloud.segment_plane(distance_threshold=0.02, ransac_n=3, num_iterations=200)
        normal = np.asarray(plane[:3], dtype=np.float64)
        normal /= np.linalg.norm(normal)
        # Point the normal up (against the camera's "down"), and measure the camera's height over it.
        if normal @ down_in_camera > 0:
            normal, offset = -normal, -plane[3]
        else:
            offset = plane[3]
        tilt = np.degrees(np.arccos(np.clip(-normal @ down_in_camera, -1, 1)))
        height = float(offset)  # signed distance of the camera centre above the plane
        if tilt <= MAX_FLOOR_TILT_DEG and height > 0.1 and len(inliers) >= 300:
            up = normal
            forward = np.array([0.0, 0.0, 1.0]) - up * up[2]
            forward /= np.linalg.norm(forward)
            right = np.cross(forward, up)
            R_map_camera = np.stack([right, forward, up])  # rows: map axes in camera coordinates
            pose = np.eye(4)
            pose[:3, :3] = R_map_camera
            pose[2, 3] = height
            return pose, f"floor plane {height:.2f} m below the first camera, tilt {tilt:.0f} deg"
        cloud = cloud.select_by_index(inliers, invert=True)
    return None, "no floor plane in the first view"


def initial_pose(frame: SlamFrame, config: SlamConfig) -> np.ndarray:
    """The first keyframe's camera-to-map pose: the map frame's definition."""
    if config.gravity == "none":
        return np.eye(4)
    if config.gravity == "floor_plane":
        pose, _why = floor_pose(frame.cloud_points)
        if pose is not None:
            return pose
    return level_pose(config.camera_height)
