"""Geometry: pinhole camera intrinsics and rigid poses (validation, interpolation, distances).

The bottom layer: imports only numpy/scipy, never another showroom_ros folder.
"""
