"""Capture: choosing keyframes from a camera stream and holding them until a reconstruction.

May import ``geometry`` only.
"""
