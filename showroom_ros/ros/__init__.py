"""The thin ROS 2 layer: message conversions, pose sources and the nodes. Imports rclpy.

May import every core folder; it is the only one that imports rclpy.
"""
