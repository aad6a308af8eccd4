"""Mapping: what a robot keeps across reconstructions (the accumulated point map, and the volume grown from it).

May import ``geometry``, ``capture`` and ``reconstruction``; never ``io``, ``backends`` or higher.
"""
