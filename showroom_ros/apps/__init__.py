"""Apps: the ROS-free ``showroom`` command line, offline reconstruction of folders and bags, the viser viewer.

May import every core folder (geometry … generation, distillation); never ``ros``.
"""
