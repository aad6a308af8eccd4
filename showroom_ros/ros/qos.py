"""QoS profiles the node's outputs share (one definition, imported where publishers are made)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Reliable + transient local: a subscriber that joins later still gets the last result."""
