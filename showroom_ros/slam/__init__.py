"""The node's own camera poses (``pose_source: slam``): RGB-D tracking, a keyframe database with place
recognition, verified loop closures and a robust pose graph, without ROS (docs/slam.md)."""
