"""showroom_ros: a few keyframes of a room in, a 3D model a robot can use out.

The top-level package is the ROS-free core: importing it never imports rclpy.
The ROS layer lives in :mod:`showroom_ros.ros`.
"""

__version__ = "0.1.0"
