"""Reconstruction: the result type, RGB-D fusion, registration, rendering, the surface and the pipeline.

May import ``geometry`` and ``capture``; never ``io``, ``models``, ``backends``, ``mapping`` or higher.
"""
