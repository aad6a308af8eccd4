"""I/O: reading frame folders and rosbag2 bags, writing exports (PLY, GLB, PNG, NPZ) and bags, message layouts,
and what the command-line tools print where (``console``: results on stdout, progress on stderr).

May import ``geometry``, ``capture`` and ``reconstruction``; never ``backends``, ``apps`` or ``ros``.
"""
