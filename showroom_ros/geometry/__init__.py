"""Geometry: pinhole camera intrinsics, rigid poses (validation, interpolation, distances) and
similarity transforms with their Umeyama fit.

The bottom layer: imports only numpy/scipy, never another showroom_ros folder.
"""
