"""The node's seven services: reconstruct, reset, save, generate_views, save_map, load_map, clear_map.

Each answers ``success`` and a message that says what happened or why not; none blocks the camera
inputs (they spin on their own thread) and the long ones wait on the scheduler's worker, bounded by
``reconstruct_timeout`` / ``generate_timeout``. While the node is not active every service refuses
with the lifecycle state, so a client is told rather than left waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from std_srvs.srv import Trigger

from showroom_ros.capture.collector import KeyframeCollector
from showroom_ros.io.export import save_reconstruction
from showroom_ros.io.file_names import checked_name
from showroom_ros.ros.pose_sources import PoseSource
from showroom_ros.ros.reconstruction_jobs import ReconstructionJobs, generated_view_messages
from showroom_ros.ros.scheduler import Scheduler, wait_for
from showroom_ros.srv import GenerateViews, LoadMap, Reconstruct, SaveReconstruction

SAVE_PREFIX = "saved"
"""Default name prefix of ``~/save``: never the autosaves' (those are pruned, a user's saves are not)."""


class NodeServices:
    """Creates the services on ``node`` (in ``group``) and answers them; ``inactive()`` returns why the
    node cannot serve now ('' when active)."""

    def __init__(
        self,
        node: Any,
        group: Any,
        scheduler: Scheduler,
        jobs: ReconstructionJobs,
        collector: KeyframeCollector,
        poses: PoseSource,
        start_window: Callable[[str], Any],
        inactive: Callable[[], str],
        publish_status: Callable[[], None] = lambda: None,
    ) -> None:
        self.node = node
        self.scheduler = scheduler
        self.jobs = jobs
        self.collector = collector
        self.poses = poses
        self.params = jobs.params
        self._start_window = start_window
        self._inactive = inactive
        self._publish_status = publish_status
        table = (
            (Reconstruct, "~/reconstruct", self.reconstruct),
            (Trigger, "~/reset", self.reset),
            (SaveReconstruction, "~/save", self.save),
            (GenerateViews, "~/generate_views", self.generate),
            (SaveReconstruction, "~/save_map", self.save_map),
            (LoadMap, "~/load_map", self.load_map),
            (Trigger, "~/clear_map", self.clear_map),
        )
        self.services = [
            node.create_service(srv_type, name, self._gated(callback), callback_group=group)
            for srv_type, name, callback in table
        ]

    def _gated(self, callback: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def gated(request: Any, response: Any) -> Any:
            why = self._inactive()
            if why:
                response.success, response.message = False, why
                return response
            return callback(request, response)

        gated.__name__ = callback.__name__
        return gated

    @property
    def output_dir(self) -> Any:
        return self.jobs.outputs.output_dir

    def _name(self, requested: str, default_prefix: str, response: Any) -> str | None:
        name, refusal = checked_name(requested, default_prefix, self.output_dir)
        if name is None:
            response.success, response.message = False, refusal
        return name

    def reconstruct(self, request: Reconstruct.Request, response: Reconstruct.Response) -> Reconstruct.Response:
        count = len(self.collector.buffer)
        if count < self.params["min_keyframes"]:
            response.success = False
            response.message = f"need at least {self.params['min_keyframes']} keyframes, have {count}"
            return response
        job = self._start_window("service call")
        if job is None:
            response.success, response.message = False, "a reconstruction is already running; try again when done"
            return response
        result, error = wait_for(
            job, self.params["reconstruct_timeout"], "still running; its result will be published on ~/cloud"
        )
        if error is not None:
            response.success, response.message = False, f"reconstruction: {error}"
            return response
        response.success = True
        response.num_points = result.num_points
        response.num_triangles = result.mesh.num_triangles if result.mesh else 0
        response.seconds = float(self.jobs.last.seconds)
        response.message = f"backend {result.backend}: {response.num_points} points, {response.num_triangles} triangles"
        return response

    def reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.scheduler.busy():
            response.success, response.message = False, "a reconstruction is running; reset when it is done"
            return response
        self.collector.clear()
        self.poses.clear()
        self.jobs.forget()
        self.scheduler.forget_window_overlap()
        self.scheduler.set(
            state="collecting",
            progress=0.0,
            message="reset: keyframe buffer and last reconstruction cleared (the map is kept: ~/clear_map)",
        )
        self.jobs.outputs.clear(self.params["map_frame"])
        response.success = True
        response.message = "keyframe buffer and last reconstruction cleared; the map is kept (~/clear_map clears it)"
        return response

    def save(self, request: SaveReconstruction.Request, response: SaveReconstruction.Response):
        # Not "reconstruction-": that prefix is the autosaves', which are pruned (ros/result_outputs.py).
        name = self._name(request.name, SAVE_PREFIX, response)
        if name is None:
            return response
        result = self.jobs.last.result
        if result is None:
            response.success, response.message = False, "nothing to save yet: no reconstruction has run"
            return response
        try:
            files = save_reconstruction(result, self.output_dir, name)
        except OSError as error:
            response.success, response.message = False, f"could not write under {self.output_dir}: {error}"
            return response
        response.success = True
        response.files = [str(path) for path in files.values()]
        response.message = f"saved {len(files)} files under {self.output_dir}"
        return response

    # --- robot map (the work runs on the worker: the map is only touched there) --------------------
    def _map_job(self, work: Callable[[], str], response: Any, what: str) -> Any:
        if self.jobs.mapping.robot_map is None and self.jobs.mapping.config is None:
            response.success, response.message = False, "volumetric_map is off: there is no robot map"
            return response
        job = self.jobs.mapping.submit(work)  # on the map's thread: it never waits behind a reconstruction
        message, error = wait_for(job, self.params["reconstruct_timeout"], f"{what} is still running")
        response.success = error is None
        response.message = message if error is None else f"{what}: {error}"
        return response

    def save_map(self, request: SaveReconstruction.Request, response: SaveReconstruction.Response):
        name = self._name(request.name, "map", response)
        if name is None:
            return response

        def work() -> str:
            message, response.files = self.jobs.mapping.save(name)
            return message

        return self._map_job(work, response, "save_map")

    def load_map(self, request: LoadMap.Request, response: LoadMap.Response):
        name = self._name(request.name, "", response)  # no default: it must name a saved map
        if name is None:
            return response

        def work() -> str:
            message, response.num_blocks = self.jobs.mapping.load(name)
            return message

        return self._map_job(work, response, "load_map")

    def clear_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        return self._map_job(self.jobs.mapping.clear, response, "clear_map")

    # --- view generation --------------------------------------------------------------------------
    def generate(self, request: GenerateViews.Request, response: GenerateViews.Response):
        from showroom_ros.generation.generate import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT, GenerationRequest

        p = self.params
        generation = GenerationRequest(
            keyframe_index=int(request.keyframe_index),
            yaw_angles_deg=[float(a) for a in request.yaw_degrees],
            num_views=int(request.num_views),
            max_yaw_deg=p["generation_max_yaw_deg"],
            prompt=request.prompt or DEFAULT_PROMPT,
            negative_prompt=request.negative_prompt or DEFAULT_NEGATIVE_PROMPT,
            steps=int(request.steps) or p["generation_steps"],
            guidance_scale=float(request.guidance_scale) if request.guidance_scale > 0 else p["generation_guidance"],
            seed=int(request.seed) if request.seed >= 0 else -1,
            backend=request.backend or p["generation_backend"],
        )
        # One generation at a time; it queues behind a running reconstruction (and behind the windows
        # already queued in continuous mode, at most max_pending_windows), never in front of one.
        job, refusal = self.scheduler.submit_generation(self.jobs.generate, generation, request.add_to_reconstruction)
        if job is None:
            response.success, response.message = False, refusal
            return response
        self._publish_status()  # "queued behind the running reconstruction" or "generating", said now
        outcome, error = wait_for(
            job, p["generate_timeout"], "generation is queued or running; its views will be published"
        )
        if error is not None:
            response.success, response.message = False, error
            return response
        views, status, result = outcome
        header = self.jobs.outputs.header(result.frame_id if result else p["map_frame"], 0)
        for view in views:
            image, mask, pose = generated_view_messages(view, header)
            response.images.append(image)
            response.masks.append(mask)
            response.poses.append(pose)
            response.accepted.append(bool(view.accepted))
            response.reasons.append(view.reason)
        accepted = sum(v.accepted for v in views)
        response.success = True
        response.message = f"{len(views)} view(s), {accepted} accepted; {status}"
        return response
