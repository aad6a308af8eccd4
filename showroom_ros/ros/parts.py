"""The parts a configured ``showroom`` node is made of, built in one place from its settings.

The node holds them as one object, so ``configure`` builds them all and ``cleanup`` drops them all;
each part is in its own module (see ros/showroom_node.py for the list) and knows only the parts it
is given here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from showroom_ros.backends import build_backends, model_holders
from showroom_ros.capture.collector import KeyframeCollector
from showroom_ros.capture.keyframes import KeyframeBuffer
from showroom_ros.generation.service import ViewGenerationService
from showroom_ros.reconstruction.pipeline import ReconstructionPipeline
from showroom_ros.ros.camera_inputs import CameraInputs, InputCounters
from showroom_ros.ros.entry import release_free_heap
from showroom_ros.ros.guard import CallbackGuard
from showroom_ros.ros.map_outputs import MapOutputs
from showroom_ros.ros.pose_sources import PoseSource, make_pose_source
from showroom_ros.ros.reconstruction_jobs import ReconstructionJobs
from showroom_ros.ros.result_outputs import ResultOutputs
from showroom_ros.ros.robot_mapping import RobotMapping
from showroom_ros.ros.scheduler import Scheduler
from showroom_ros.ros.services import NodeServices
from showroom_ros.ros.settings import NodeSettings
from showroom_ros.ros.slam_tracking import SlamTracking
from showroom_ros.ros.status import ModelWatch, StatusInputs
from showroom_ros.ros.window_poses import WindowPoses
from showroom_ros.ros.window_trigger import WindowTrigger


@dataclass
class NodeParts:
    settings: NodeSettings
    counters: InputCounters
    poses: PoseSource
    collector: KeyframeCollector
    models: ModelWatch
    scheduler: Scheduler
    mapping: RobotMapping
    jobs: ReconstructionJobs
    inputs: CameraInputs
    trigger: WindowTrigger
    services: NodeServices
    slam: SlamTracking | None = None

    def status_inputs(self, guard: CallbackGuard) -> StatusInputs:
        return StatusInputs(
            work=self.scheduler.snapshot,
            frames=self.counters.snapshot,
            keyframes=lambda: len(self.collector.buffer),
            last=lambda: self.jobs.last,
            map_state=self.mapping.snapshot,
            callback_errors=guard.snapshot,
            models=self.models.summary,
            slam=self.slam.snapshot if self.slam is not None else None,
        )


def build_parts(
    node: Any,
    s: NodeSettings,
    group: Any,
    publish_status: Callable[[], None],
    why_inactive: Callable[[], str],
    tf_failed: Callable[[str, str], None],
) -> NodeParts:
    """Every part, wired; learned models begin loading in the background here. ``tf_failed(key, message)``
    is told each failed TF lookup. Publishers are the node's lifecycle publishers."""
    logger, publisher, params = node.get_logger, node.create_lifecycle_publisher, s.values
    counters = InputCounters(logger)
    robot_map = s.robot_map if s["volumetric_map"] else None
    map_outputs = MapOutputs(node, publisher, node.guard.wrap)
    mapping = RobotMapping(
        robot_map,
        s.point_map,
        map_outputs,
        s.output_dir,
        s["accumulate_map"],
        logger,
        publish_rate_hz=s["map_publish_rate_hz"],
        queue_size=s["map_queue_size"],
    )
    slam: SlamTracking | None = None
    windows: WindowPoses | None = None
    if s["pose_source"] == "slam" and not s.topics.depth:  # a colour camera only: learned windows, chained
        windows = WindowPoses(s.slam, publisher, s["map_frame"], logger)
        mapping.windows = windows
        poses: PoseSource = windows
    elif s["pose_source"] == "slam":
        slam = SlamTracking(
            s.slam,
            node,
            publisher,
            s["map_frame"],
            mapping.offer,
            mapping.rebuild,
            logger,
            localization_only=s["slam_localization_only"],
            queue_size=s["slam_queue_size"],
            publish_tf=s["slam_publish_tf"],
            odom_frame=s["odom_frame"],
        )
        mapping.slam = slam
        poses = slam
    else:
        poses = make_pose_source(
            s["pose_source"], node, s.topics.poses, s["map_frame"], s.collector.sync_slop_ns, counters.reject, tf_failed
        )
    collector = KeyframeCollector(s.collector, KeyframeBuffer(s["max_keyframes"]), poses.lookup)
    backends = build_backends(s.backends, backend=s["backend"])
    scheduler = Scheduler(after_job=release_free_heap)
    outputs = ResultOutputs(node, publisher, params, s.output_dir)
    pipeline = ReconstructionPipeline(s.pipeline, backends)
    generator = ViewGenerationService(s.generation)
    stopping = lambda: not node.context.ok()  # noqa: E731
    jobs = ReconstructionJobs(
        pipeline, backends, scheduler, outputs, mapping, generator, params, logger, publish_status, stopping
    )
    if windows is not None:
        jobs.place_window = windows.place
    inputs = CameraInputs(s.topics, params, collector, counters)
    trigger = WindowTrigger(
        params, s.continuous, collector, inputs, scheduler, jobs.reconstruct, logger, publish_status
    )
    inputs.handle = trigger.handle
    trigger.keep_every_window = windows is not None
    # Every complete frame with depth (and pose), at the evaluation rate: to the map, or first to tracking.
    collector.map_sink = mapping.offer if slam is None else slam.offer
    services = NodeServices(node, group, scheduler, jobs, collector, poses, trigger.start, why_inactive, publish_status)
    models = ModelWatch(model_holders(backends), logger)
    return NodeParts(s, counters, poses, collector, models, scheduler, mapping, jobs, inputs, trigger, services, slam)
