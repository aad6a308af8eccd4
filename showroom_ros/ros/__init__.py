"""The thin ROS 2 layer: message conversions, pose sources and the nodes. Imports rclpy."""
