"""I/O: reading frame folders and rosbag2 bags, writing exports (PLY, GLB, PNG, NPZ) and bags, message layouts.

May import ``geometry``, ``capture`` and ``reconstruction``; never ``backends``, ``apps`` or ``ros``.
"""
