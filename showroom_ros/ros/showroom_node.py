"""ROS 2 node ``showroom``: camera topics in, point cloud + mesh + keyframe poses out.

The node only converts messages and schedules work. Keyframe selection lives in
:mod:`showroom_ros.capture.collector`, reconstruction in :mod:`showroom_ros.reconstruction.pipeline`. Reconstructions
run on a single worker thread so the executor keeps receiving frames meanwhile; frames that
arrive while the buffer is full are dropped with a reason in ``~/status``.
"""

from __future__ import annotations

import re
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from rclpy.time import Time as RclpyTime
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from showroom_ros.apps.map_session import SAFE_NAME, load_map, map_file_paths, save_map
from showroom_ros.backends import BackendsConfig, LearnedConfig, build_backends, model_holders
from showroom_ros.capture.collector import CollectorConfig, KeyframeCollector, Outcome
from showroom_ros.capture.keyframes import KeyframeBuffer, KeyframeSelectorConfig
from showroom_ros.generation.service import GenerationSettings, ViewGenerationService
from showroom_ros.geometry.poses import PoseHistory
from showroom_ros.io.disk_space import SpaceMonitor, disk_warnings, worst_level
from showroom_ros.io.export import prune_saved, save_reconstruction
from showroom_ros.mapping.occupancy import OccupancyConfig
from showroom_ros.mapping.point_map import AccumulatedMap, MapAlignmentError, MapConfig
from showroom_ros.mapping.robot_map import MapInputError, RobotMap, RobotMapConfig
from showroom_ros.mapping.volume import VolumeConfig
from showroom_ros.msg import ReconstructionStatus
from showroom_ros.reconstruction.pipeline import PipelineConfig, ReconstructionError, ReconstructionPipeline
from showroom_ros.reconstruction.result import Reconstruction
from showroom_ros.reconstruction.rgbd import RGBDFusionConfig, depth_to_metres
from showroom_ros.reconstruction.surface import SurfaceConfig, decimate_mesh
from showroom_ros.ros import conversions as conv
from showroom_ros.ros.entry import release_free_heap, remove_own_temporaries, run_node
from showroom_ros.ros.input_node import InputNode, InputSpinner
from showroom_ros.ros.map_outputs import MapOutputs
from showroom_ros.ros.parameters import SHOWROOM_PARAMETERS, check_parameter, declare_parameters
from showroom_ros.srv import GenerateViews, LoadMap, Reconstruct, SaveReconstruction

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
GUARD_ATTR = "showroom_guarded"
"""Set on every callback the node registers: the original callback, run inside :meth:`ShowroomNode._guard`."""
AUTOSAVE_PREFIX = "reconstruction-"
REPORT_EVERY_S = 5.0


def describe_tf_failure(error: BaseException, target: str, source: str, stamp_ns: int) -> tuple[str, str]:
    """tf2's own reason for a failed lookup: (kind, one line with the frames and the stamp).

    tf2 says what is wrong (LookupException: a frame does not exist; ConnectivityException: no
    chain between them; ExtrapolationException: the stamp is outside the buffered span), which
    is the first thing a robot user debugs, so it is reported as is rather than as "no pose".
    """
    kind = type(error).__name__
    text = " ".join(str(error).split()) or "no message"
    frames = f"{target} -> {source or '<empty frame_id>'}"
    return kind, f"TF lookup {frames} at {stamp_ns / 1e9:.3f} s failed: {kind}: {text}"


def _reason_kind(reason: str) -> str:
    """A rejection reason without its numbers: the kind that is logged at info the first time."""
    return re.sub(r"[-+]?\d[\d.e+-]*", "#", reason)[:80]


def _listed(values: list[str]) -> list[str]:
    return [v for v in values if v]


class ShowroomNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        # Before Node.__init__: it already registers (guarded) parameter services.
        self._guard_lock = threading.Lock()
        self._callback_errors: dict[str, int] = {}
        self._last_callback_error = ""
        self._reported: dict[str, float] = {}
        super().__init__("showroom", **kwargs)
        p = declare_parameters(self, SHOWROOM_PARAMETERS)
        self.params = p
        self.image_topics = _listed(p["image_topics"])
        self.depth_topics = _listed(p["depth_topics"])
        self.info_topics = _listed(p["camera_info_topics"])
        self.depth_info_topics = _listed(p["depth_info_topics"])
        self.pose_topics = _listed(p["pose_topics"])
        self._check_topic_lists()
        self.map_frame = p["map_frame"]
        self.output_dir = Path(p["output_dir"]).expanduser().resolve()
        # Said in ~/status and /diagnostics while there is still room (io/disk_space.py).
        self.disk = SpaceMonitor({"output_dir": self.output_dir, "temporary folder": tempfile.gettempdir()})

        self.collector = KeyframeCollector(
            CollectorConfig(
                num_cameras=len(self.image_topics),
                use_depth=bool(self.depth_topics),
                separate_depth_camera=bool(self.depth_info_topics),
                require_pose=p["pose_source"] != "none",
                require_intrinsics=bool(self.info_topics),
                evaluation_period_ns=int(1e9 / p["evaluation_rate_hz"]),
                sync_slop_ns=int(p["sync_slop"] * 1e9),
                wait_timeout_ns=int(p["wait_timeout"] * 1e9),
                selector=KeyframeSelectorConfig(
                    blur_threshold=p["blur_threshold"],
                    min_translation=p["min_translation"],
                    min_rotation_deg=p["min_rotation_deg"],
                    min_image_motion=p["min_image_motion"],
                ),
            ),
            KeyframeBuffer(p["max_keyframes"]),
            self._lookup_pose,
        )
        fusion = RGBDFusionConfig(
            voxel_size=p["voxel_size"],
            min_depth=p["min_depth"],
            max_depth=p["max_depth"],
            tsdf_mesh=bool(p["build_mesh"]) and p["rgbd_surface"] == "tsdf",
            tsdf_voxel_size=p["tsdf_voxel_size"],
        )
        learned = {
            "device": p["model_device"],
            "dtype": p["model_dtype"],
            "input_size": p["model_input_size"],
            "conf_percentile": p["model_conf_percentile"],
            "min_confidence": p["model_min_confidence"],
            "image_idx_seed": p["model_image_idx_seed"],
            "engine": p["model_engine"],
            "engine_precision": p["model_engine_precision"],
            "engine_cache_dir": p["model_engine_cache_dir"],
            "engine_cache_max_gb": p["model_engine_cache_max_gb"],
        }
        self.backends = build_backends(
            BackendsConfig(
                fusion=fusion,
                fast3r=LearnedConfig(model=p["model"], **learned),
                showroom=LearnedConfig(model=p["student_model"], **learned),
            ),
            backend=p["backend"],
        )
        self.models = model_holders(self.backends)
        self._model_states = {name: "" for name in self.models}
        self.pipeline = ReconstructionPipeline(
            PipelineConfig(
                backend=p["backend"],
                build_mesh=p["build_mesh"],
                min_keyframes=p["min_keyframes"],
                surface=SurfaceConfig(depth=p["poisson_depth"]),
            ),
            self.backends,
        )
        self.map = AccumulatedMap(MapConfig(voxel_size=p["map_voxel_size"], max_points=p["map_max_points"]))
        self.map_config = self._robot_map_config(p)
        # The robot map (issue 12) is only touched on the worker thread: integration, save, load, clear.
        self.robot_map = RobotMap(self.map_config) if p["volumetric_map"] else None
        self._map_note = ""
        self._map_summary = "empty"  # the last map update, for /diagnostics (the map itself is the worker's)

        # State shared between executor threads and the worker (guarded by _lock).
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="showroom-worker")
        self._job: Future[Reconstruction] | None = None
        self._generation: Future | None = None  # the one ~/generate_views job, queued or running
        self._last: Reconstruction | None = None
        self._last_keyframes: list = []
        self._state = "collecting"
        self._progress = 0.0
        self._message = "waiting for keyframes"
        self._backend_reason = ""
        self._frames_received = 0
        self._frames_rejected = 0
        self._last_rejection = ""
        self._last_duration = 0.0
        self._warned: dict[str, float] = {}
        self._rejection_kinds: set[str] = set()
        self._last_keyframe_at = time.monotonic()
        self._autosaves = 0
        self._accepted_info: dict[tuple[int, bool], bytes] = {}  # last valid CameraInfo bytes after the stamp
        self._windows: list[Future] = []  # continuous mode: queued and running windows
        self._carried: list = []  # keyframes the next window shares with the last one (window_overlap)

        # Camera inputs and the collector's poll run on their own single-threaded node (ros/input_node.py).
        self.input_node = InputNode(
            f"{self.get_name()}_input",
            self._guard,
            namespace=self.get_namespace(),
            context=self.context,
            use_global_arguments=False,  # a launch file's __node:= rename would give it the main node's name
            enable_rosout=False,
        )
        self._input_spinner: InputSpinner | None = None
        self._service_group = ReentrantCallbackGroup()
        self.cloud_pub = self.create_publisher(PointCloud2, "~/cloud", LATCHED)
        self.mesh_pub = self.create_publisher(MarkerArray, "~/mesh", LATCHED)
        self.keyframes_pub = self.create_publisher(PoseArray, "~/keyframes", LATCHED)
        self.map_pub = self.create_publisher(PointCloud2, "~/map", LATCHED)
        self.map_outputs = MapOutputs(self, self.map_pub, self._guard)
        self._tf_broadcaster = self._make_tf_broadcaster() if p["publish_tf"] else None
        self.status_pub = self.create_publisher(ReconstructionStatus, "~/status", LATCHED)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.generated_image_pub = self.create_publisher(Image, "~/generated/image", 10)
        self.generated_mask_pub = self.create_publisher(Image, "~/generated/mask", 10)
        self.generator = ViewGenerationService(
            GenerationSettings(
                backend=p["generation_backend"],
                inpaint_model=p["inpaint_model"],
                device=None if p["generation_device"] == "auto" else p["generation_device"],
                layout_model=p["layout_model"],
            )
        )
        self._pose_histories = [PoseHistory(tolerance_ns=int(p["sync_slop"] * 1e9)) for _ in self.image_topics]
        self._tf_buffer = None
        self._setup_pose_source(p["pose_source"])
        self._subscribe_cameras()

        self.create_service(Reconstruct, "~/reconstruct", self._on_reconstruct, callback_group=self._service_group)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=self._service_group)
        self.create_service(SaveReconstruction, "~/save", self._on_save, callback_group=self._service_group)
        self.create_service(GenerateViews, "~/generate_views", self._on_generate, callback_group=self._service_group)
        self.create_service(SaveReconstruction, "~/save_map", self._on_save_map, callback_group=self._service_group)
        self.create_service(LoadMap, "~/load_map", self._on_load_map, callback_group=self._service_group)
        self.create_service(Trigger, "~/clear_map", self._on_clear_map, callback_group=self._service_group)
        self.input_node.create_timer(0.1, self._poll_pending)
        self.create_timer(1.0 / p["status_rate_hz"], self._publish_status, callback_group=self._service_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._guard_existing()
        try:
            self._input_spinner = InputSpinner(self.input_node, p["input_executor"])
        except RuntimeError as error:
            self.get_logger().warning(f"{error}; spinning the camera inputs with SingleThreadedExecutor")
            self._input_spinner = InputSpinner(self.input_node, "single")
        self.get_logger().info(f"camera inputs spun by {self._input_spinner.executor_name}")
        self._input_spinner.start()
        self.viewer = self._start_viewer() if p["viewer"] else None
        self._publish_status()
        self.get_logger().info(
            f"showroom ready: {len(self.image_topics)} camera(s), depth={'yes' if self.depth_topics else 'no'}, "
            f"poses from {p['pose_source']}, backend {p['backend']}, output_dir {self.output_dir}"
        )

    # --- one guard for every callback -------------------------------------------------------------
    # Every subscription, service, timer and parameter callback is registered through these overrides,
    # so a callback added later cannot forget the guard (test_ros_robustness enumerates them).
    def create_subscription(self, msg_type: Any, topic: str, callback: Callable, *args: Any, **kwargs: Any):
        guarded = self._guard("subscription", topic, callback)
        return super().create_subscription(msg_type, topic, guarded, *args, **kwargs)

    def create_service(self, srv_type: Any, srv_name: str, callback: Callable, *args: Any, **kwargs: Any):
        return super().create_service(srv_type, srv_name, self._guard("service", srv_name, callback), *args, **kwargs)

    def create_timer(self, timer_period_sec: float, callback: Callable, *args: Any, **kwargs: Any):
        name = getattr(callback, "__name__", "timer")
        return super().create_timer(timer_period_sec, self._guard("timer", name, callback), *args, **kwargs)

    def add_on_set_parameters_callback(self, callback: Callable) -> Any:
        return super().add_on_set_parameters_callback(self._guard("parameters", "set_parameters", callback))

    def _guard_existing(self) -> None:
        """Guard what rclpy registered itself, bypassing the overrides (its type-description service)."""
        for service in self.services:
            service.callback = self._guard("service", service.srv_name, service.callback)
        for subscription in self.subscriptions:
            subscription.callback = self._guard("subscription", subscription.topic_name, subscription.callback)
        for timer in self.timers:
            timer.callback = self._guard("timer", getattr(timer.callback, "__name__", "timer"), timer.callback)

    def _guard(self, kind: str, name: str, callback: Callable) -> Callable:
        """Wrap ``callback``: an exception is counted, reported once per kind every 5 s, and the node goes on.

        A service answers ``success=false`` with the reason; a parameter change is refused with it.
        No ``__wrapped__``: rclpy inspects the signature to decide whether to pass MessageInfo.
        """
        if callable(getattr(callback, GUARD_ATTR, None)):
            return callback

        def guarded(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as error:  # the one place that may catch everything
                reason = f"{type(error).__name__}: {error}"
                self._callback_failed(kind, name, error)
                if kind == "parameters":
                    return SetParametersResult(successful=False, reason=f"internal error: {reason}")
                if kind == "service" and len(args) >= 2:
                    response = args[1]
                    if hasattr(response, "success"):
                        response.success = False
                    if hasattr(response, "message"):
                        response.message = f"internal error: {reason}"
                    return response
                return None

        setattr(guarded, GUARD_ATTR, callback)
        guarded.__name__ = f"guarded_{getattr(callback, '__name__', kind)}"
        return guarded

    def _callback_failed(self, kind: str, name: str, error: BaseException) -> None:
        """Count the failure by kind; log it with its place and reason, once per kind every 5 s."""
        key = f"{kind} {name}: {type(error).__name__}"
        with self._guard_lock:
            count = self._callback_errors[key] = self._callback_errors.get(key, 0) + 1
            self._last_callback_error = f"{key}: {error}"
        message = (
            f"{kind} callback on {name} failed ({count} time(s) so far), the node goes on: "
            f"{type(error).__name__}: {error}"
        )
        if self._report_due(key):
            where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
            self.get_logger().error(message + (f" (at {where.filename}:{where.lineno})" if where else ""))
        else:
            self.get_logger().debug(message)

    def _report_due(self, key: str) -> bool:
        """True at most once every REPORT_EVERY_S per key (rclpy's throttle is per call site)."""
        now = time.monotonic()
        with self._guard_lock:
            if now - self._reported.get(key, -1e9) < REPORT_EVERY_S:
                return False
            self._reported[key] = now
        return True

    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        """Refuse wrong types, out-of-range values and read-only names with a reason; apply the rest."""
        changes: dict[str, Any] = {}
        for parameter in parameters:
            error = check_parameter(parameter.name, parameter.value)
            if error:
                return SetParametersResult(successful=False, reason=error)
            changes[parameter.name] = parameter.value
        if not hasattr(self, "params"):
            return SetParametersResult(successful=True)  # declaration, checked by declare_parameters
        self.params.update(changes)
        if "wait_timeout" in changes:
            self.collector.config.wait_timeout_ns = int(changes["wait_timeout"] * 1e9)
        if "evaluation_rate_hz" in changes:
            self.collector.config.evaluation_period_ns = int(1e9 / changes["evaluation_rate_hz"])
        if changes:
            self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    # --- set-up -----------------------------------------------------------------------------------
    def _check_topic_lists(self) -> None:
        n = len(self.image_topics)
        if n == 0:
            raise ValueError("image_topics is empty: name at least one colour image topic")
        for name, topics in (
            ("camera_info_topics", self.info_topics),
            ("depth_topics", self.depth_topics),
            ("depth_info_topics", self.depth_info_topics),
            ("pose_topics", self.pose_topics),
        ):
            if topics and len(topics) != n:
                raise ValueError(f"{name} has {len(topics)} entries but image_topics has {n}: lists align by index")
        if self.params["pose_source"] == "topic" and not self.pose_topics:
            raise ValueError("pose_source is 'topic' but pose_topics is empty")
        if self.params["min_keyframes"] > self.params["max_keyframes"]:
            raise ValueError("min_keyframes must not exceed max_keyframes")

    def _setup_pose_source(self, source: str) -> None:
        if source == "topic":
            for camera, topic in enumerate(self.pose_topics):
                self.input_node.create_subscription(
                    PoseStamped,
                    topic,
                    lambda msg, c=camera: self._on_pose(c, msg),
                    50,
                )
        elif source == "tf":
            try:
                from tf2_ros import Buffer, TransformListener
            except ImportError:
                self._fail_setup(
                    "pose_source 'tf' needs tf2_ros, which is not installed here; "
                    "use pose_source:=topic (PoseStamped per camera) or pose_source:=none"
                )
                return
            self._tf_buffer = Buffer()
            self._tf_listener = TransformListener(self._tf_buffer, self, spin_thread=False)

    def _start_viewer(self):
        from showroom_ros.apps.viewer import ReconstructionViewer, ViewerError

        viewer = ReconstructionViewer()
        try:
            url = viewer.start(self.params["viewer_host"], self.params["viewer_port"])
        except ViewerError as error:
            self._fail_setup(f"web viewer not started: {error}")
            return None
        self.get_logger().info(f"web viewer at {url}")
        return viewer

    def _make_tf_broadcaster(self):
        try:
            from tf2_ros import StaticTransformBroadcaster
        except ImportError:
            self.get_logger().warning("publish_tf is true but tf2_ros is not installed: no keyframe TF frames")
            return None
        return StaticTransformBroadcaster(self)

    def _watch_models(self) -> None:
        """Log each learned model's state once when it changes (loading, ready, failed)."""
        for name, holder in self.models.items():
            state = holder.state
            if state != self._model_states[name]:
                self._model_states[name] = state
                # One call site per severity: rclpy refuses to change a call site's severity.
                if state == "failed":
                    self.get_logger().error(f"{name} model: {holder.reason}")
                elif state != "not configured":
                    self.get_logger().info(f"{name} model: {holder.reason}")

    def _models_summary(self) -> str:
        return "; ".join(f"{name}: {holder.reason}" for name, holder in self.models.items())

    def _fail_setup(self, message: str) -> None:
        self.get_logger().error(message)
        self._state, self._message = "error", message

    def _subscribe_cameras(self) -> None:
        compressed = self.params["image_transport"] == "compressed"
        qos = qos_profile_sensor_data
        if self.params["input_reliability"] == "reliable":
            qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        for camera, topic in enumerate(self.image_topics):
            # raw=True: frames the throttle drops are never deserialised (the node's main CPU saving).
            if compressed:
                self.input_node.create_subscription(
                    CompressedImage,
                    topic + "/compressed",
                    lambda data, c=camera: self._on_image(c, data, CompressedImage),
                    qos,
                    raw=True,
                )
            else:
                self.input_node.create_subscription(
                    Image,
                    topic,
                    lambda data, c=camera: self._on_image(c, data, Image),
                    qos,
                    raw=True,
                )
            if self.info_topics:
                self.input_node.create_subscription(
                    CameraInfo,
                    self.info_topics[camera],
                    lambda data, c=camera: self._on_info(c, data, depth=False),
                    qos,
                    raw=True,
                )
            if self.depth_topics:
                depth_type = CompressedImage if compressed else Image
                depth_topic = self.depth_topics[camera] + ("/compressedDepth" if compressed else "")
                self.input_node.create_subscription(
                    depth_type,
                    depth_topic,
                    lambda data, c=camera, t=depth_type: self._on_depth(c, data, t),
                    qos,
                    raw=True,
                )
            if self.depth_info_topics:
                self.input_node.create_subscription(
                    CameraInfo,
                    self.depth_info_topics[camera],
                    lambda data, c=camera: self._on_info(c, data, depth=True),
                    qos,
                    raw=True,
                )

    # --- inputs -----------------------------------------------------------------------------------
    def _now_ns(self) -> int:
        return time.monotonic_ns()

    def _reject(self, reason: str, warn: bool = False) -> None:
        kind = _reason_kind(reason)
        with self._lock:
            self._frames_rejected += 1
            self._last_rejection = reason
            first = kind not in self._rejection_kinds
            self._rejection_kinds.add(kind)
        # Every rejection at debug (`--log-level debug` explains every photo), each kind once at info.
        self.get_logger().debug(f"frame rejected: {reason}")
        if first:
            self.get_logger().info(f"frame rejected: {reason} (first of its kind; each one is logged at debug)")
        if warn:
            # One line per kind of problem every 5 s (rclpy's own throttle is per call site,
            # which would hide a second, different problem behind the first).
            key, now = reason[:48], time.monotonic()
            if now - self._warned.get(key, -1e9) >= 5.0:
                self._warned[key] = now
                self.get_logger().warning(reason)

    def _on_image(self, camera: int, data: bytes, msg_type: type) -> None:
        with self._lock:
            self._frames_received += 1
        now = self._now_ns()
        if not self.collector.should_evaluate(camera, now):
            return
        topic = self.image_topics[camera]
        try:
            msg = deserialize_message(data, msg_type)
            rgb = conv.compressed_to_rgb(msg) if msg_type is CompressedImage else conv.image_to_rgb(msg)
        except Exception as error:
            self._reject(f"bad image on {topic}: {error}", warn=True)
            return
        # A missing CameraInfo, depth or pose is waited for (bounded by wait_timeout) in the collector.
        outcome = self.collector.add_image(camera, conv.stamp_to_ns(msg.header.stamp), rgb, msg.header.frame_id, now)
        self._handle(outcome)

    def _on_depth(self, camera: int, data: bytes, msg_type: type) -> None:
        """Keep the serialized depth image; it is decoded only if a colour frame pairs with it (the
        collector calls the decoder), so a 30 Hz depth stream costs a stamp read per message."""
        try:
            stamp_ns = conv.serialized_stamp_ns(data)
        except conv.MessageError as error:
            self._reject(f"bad depth image on {self.depth_topics[camera]}: {error}", warn=True)
            return
        scale = float(self.params["depth_scale"])

        def decode() -> np.ndarray:
            msg = deserialize_message(data, msg_type)
            raw = conv.compressed_depth_to_array(msg) if msg_type is CompressedImage else conv.depth_image_to_array(msg)
            return depth_to_metres(raw, scale)

        for outcome in self.collector.add_depth(camera, stamp_ns, decode, self._now_ns()):
            self._handle(outcome)

    def _on_info(self, camera: int, data: bytes, depth: bool) -> None:
        """CameraInfo arrives with every frame but rarely changes: bytes equal to the last accepted ones
        (all but the stamp) are not decoded and checked again."""
        key = (camera, depth)
        if self._accepted_info.get(key) == data[12:]:
            return
        try:
            intrinsics = conv.camera_info_to_intrinsics(deserialize_message(data, CameraInfo))
        except Exception as error:  # malformed bytes (rclpy raises several kinds) or invalid fields
            topic = (self.depth_info_topics if depth else self.info_topics)[camera]
            self._reject(f"bad CameraInfo on {topic}: {error}", warn=True)
            return
        self._accepted_info[key] = data[12:]
        # Frames that waited for this CameraInfo complete now, not at the next poll.
        for outcome in self.collector.set_intrinsics(camera, intrinsics, depth=depth, now_ns=self._now_ns()):
            self._handle(outcome)

    def _on_pose(self, camera: int, msg: PoseStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self.map_frame:
            self._reject(
                f"pose on {self.pose_topics[camera]} is in '{msg.header.frame_id}', "
                f"expected map_frame '{self.map_frame}'",
                warn=True,
            )
            return
        try:
            self._pose_histories[camera].add(conv.stamp_to_ns(msg.header.stamp), conv.pose_to_matrix(msg.pose))
        except ValueError as error:
            self._reject(f"bad pose on {self.pose_topics[camera]}: {error}", warn=True)

    def _lookup_pose(self, camera: int, stamp_ns: int, frame_id: str) -> np.ndarray | None:
        source = self.params["pose_source"]
        if source == "topic":
            return self._pose_histories[camera].lookup(stamp_ns)
        if source == "tf" and self._tf_buffer is not None:
            try:
                transform = self._tf_buffer.lookup_transform(self.map_frame, frame_id, RclpyTime(nanoseconds=stamp_ns))
            except Exception as error:  # tf2's exceptions share no importable base here
                self._report_tf_failure(error, frame_id, stamp_ns)
                return None
            return conv.transform_to_matrix(transform)
        return None

    def _report_tf_failure(self, error: BaseException, frame_id: str, stamp_ns: int) -> None:
        """tf2's own reason, once per kind every 5 s at warning, every time at debug."""
        kind, message = describe_tf_failure(error, self.map_frame, frame_id, stamp_ns)
        with self._lock:
            self._last_rejection = message
        if self._report_due(f"tf {kind} {frame_id}"):
            self.get_logger().warning(message)
        else:
            self.get_logger().debug(message)

    def _poll_pending(self) -> None:
        for outcome in self.collector.poll(self._now_ns()):
            self._handle(outcome)
        self._reconstruct_if_idle()

    def _reconstruct_if_idle(self) -> None:
        """A robot that takes 3-5 photos and stops still gets a map (``idle_reconstruct_s``)."""
        idle = float(self.params["idle_reconstruct_s"])
        if idle <= 0 or not self.params["auto_reconstruct"]:
            return
        count = len(self.collector.buffer)
        if count < self.params["min_keyframes"] or time.monotonic() - self._last_keyframe_at < idle:
            return
        with self._lock:
            if self._busy():
                return
        why = f"{count} keyframes and no new one for {idle:g} s"
        if self._start_job(why) is not None:
            self.get_logger().info(f"reconstructing: {why} (idle_reconstruct_s)")

    def _handle(self, outcome: Outcome) -> None:
        if outcome.kind == "rejected":
            self._reject(f"camera {outcome.camera}: {outcome.reason}", warn=outcome.reason.startswith("no "))
            return
        if outcome.kind != "accepted":
            return
        count = len(self.collector.buffer)
        self._last_keyframe_at = time.monotonic()
        self.get_logger().info(f"keyframe {count}/{self.params['max_keyframes']} from camera {outcome.camera}")
        with self._lock:
            self._message = f"{count} keyframe(s) buffered"
        if self.params["auto_reconstruct"] and self.collector.buffer.is_full:
            self._start_job("buffer full")
        else:
            self._publish_status()

    # --- reconstruction ---------------------------------------------------------------------------
    def _busy(self) -> bool:
        """A reconstruction or generation is running (call with ``_lock`` held)."""
        return self._job is not None and not self._job.done()

    def _submit(self, state: str | None, message: str, work: Any, *args: Any) -> Future:
        """Queue ``work`` on the single worker (call with ``_lock`` held, after :meth:`_busy`); ``state``
        None keeps the state of the job running now (``work`` waits behind it and sets its own)."""
        if state is not None:
            self._state, self._progress = state, 0.0
        self._message = message
        self._job = self._worker.submit(work, *args)
        self._job.add_done_callback(lambda _: release_free_heap())
        return self._job

    @staticmethod
    def _wait(job: Future, timeout: float, still_running: str) -> tuple[Any, str | None]:
        """The job's result, or None and the message a service answers with."""
        try:
            return job.result(timeout=timeout), None
        except TimeoutError:
            return None, still_running
        except Exception as error:
            return None, str(error)

    def _continuous(self) -> bool:
        """Windows queue behind a running reconstruction (poses known: each window lands in map_frame)."""
        return bool(self.params["continuous"]) and self.params["pose_source"] != "none"

    def _start_job(self, why: str) -> Future[Reconstruction] | None:
        """Reconstruct the buffered keyframes; None when refused (busy, queue full, nothing new).

        Continuous mode queues the window even while another runs, and keeps its last
        ``window_overlap`` keyframes buffered as the start of the next window.
        """
        with self._lock:
            continuous = self._continuous()
            self._windows = [window for window in self._windows if not window.done()]
            if not continuous and self._busy():
                return None
            if continuous and len(self._windows) >= self.params["max_pending_windows"]:
                return None
            keyframes = list(self.collector.buffer)
            if not any(all(k is not c for c in self._carried) for k in keyframes):
                return None  # only keyframes the last window already had
            self.collector.buffer.clear()
            self._carried = []
            if continuous:
                overlap = min(int(self.params["window_overlap"]), len(keyframes) - 1)
                self._carried = keyframes[len(keyframes) - overlap :] if overlap > 0 else []
                for keyframe in self._carried:
                    self.collector.buffer.add(keyframe)
            job = self._submit("reconstructing", f"reconstructing ({why})", self._reconstruct, keyframes)
            if continuous:
                self._windows.append(job)
        self._publish_status()
        return job

    def _report(self, fraction: float, stage: str) -> None:
        with self._lock:
            self._progress, self._message = fraction, stage
            if fraction == 0.0:
                self._backend_reason = stage
        self._publish_status()

    def _reconstruct(self, keyframes: list) -> Reconstruction:
        started = time.perf_counter()
        with self._lock:  # it may have waited behind a generation, which left the state at "collecting"
            if self._state != "reconstructing":
                self._state, self._progress = "reconstructing", 0.0
                self._message = f"reconstructing {len(keyframes)} keyframes"
        try:
            result = self.pipeline.run(keyframes, self._report)
            if result.frame_id == "map":
                result.frame_id = self.map_frame
            registration = getattr(self.backends.get(result.backend), "last_registration", None)
            if registration is not None:
                self.get_logger().info(f"registration: {registration.summary()}")
            if result.frame_id != self.map_frame:
                self.get_logger().warning(
                    f"no camera poses: published in frame '{result.frame_id}' anchored at the first keyframe"
                    f" ({'metric, from depth' if result.metric else 'arbitrary scale'})"
                )
            self._publish_result(result, keyframes)
            self._update_map(result, keyframes)
            if self.params["autosave"]:
                self._autosave(result)
        except Exception as error:
            if not self.context.ok():
                raise  # the node is stopping: abandoned work is not an error, and publishing would fail
            with self._lock:
                self._state, self._message = "error", f"reconstruction failed: {error}"
            if not isinstance(error, (ReconstructionError, ValueError)):
                self.get_logger().error(traceback.format_exc())
            self.get_logger().error(f"reconstruction failed: {error}")
            self._publish_status()
            raise
        seconds = time.perf_counter() - started
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        self.get_logger().info(
            f"reconstructed {result.num_points} points, "
            f"{result.mesh.num_triangles if result.mesh else 0} triangles in {seconds:.2f}s "
            f"({stages})"
        )
        for note in result.notes:
            self.get_logger().warning(f"{result.backend} result: {note}")
        with self._lock:
            self._last, self._last_duration, self._last_keyframes = result, seconds, list(keyframes)
            self._state, self._progress = "collecting", 1.0
            self._message = f"reconstruction done with backend {result.backend} in {seconds:.2f}s" + "".join(
                f"; {note}" for note in result.notes
            )
        self._publish_status()
        if self.params["auto_reconstruct"] and self.collector.buffer.is_full and not self._continuous():
            # The buffer filled up while this one ran: its trigger was refused then, so run it now.
            self._worker.submit(self._start_job, "buffer filled during the last reconstruction")
        return result

    def _autosave(self, result: Reconstruction) -> None:
        """Save, then prune the oldest autosaves (``autosave_keep``, ``autosave_max_mb``); a full disk is a warning."""
        self._autosaves += 1
        name = f"{AUTOSAVE_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{self._autosaves:04d}"
        try:
            save_reconstruction(result, self.output_dir, name)
            pruned = prune_saved(
                self.output_dir,
                AUTOSAVE_PREFIX,
                keep=int(self.params["autosave_keep"]),
                max_bytes=int(self.params["autosave_max_mb"] * 1e6),
            )
        except OSError as error:
            self.get_logger().warning(f"autosave under {self.output_dir} failed, the node goes on: {error}")
            return
        if pruned:
            message = f"autosave: pruned {len(pruned)} old reconstruction(s): {', '.join(pruned)}"
            self.get_logger().info(message)
            with self._lock:
                self._message = message

    @staticmethod
    def _robot_map_config(p: dict[str, Any]) -> RobotMapConfig:
        return RobotMapConfig(
            frame_id=p["map_frame"],
            volume=VolumeConfig(
                voxel_size=p["map_voxel_size"],
                trunc_voxel_multiplier=p["map_truncation_voxels"],
                depth_min=p["min_depth"],
                depth_max=p["map_max_depth"],
                block_budget=p["map_block_budget"],
            ),
            chunk_size_m=p["map_chunk_size"],
            occupancy=OccupancyConfig(
                resolution=p["occupancy_resolution"],
                floor_z=p["floor_z"],
                min_height=p["occupancy_min_height"],
                max_height=p["occupancy_max_height"],
            ),
        )

    def _update_map(self, result: Reconstruction, keyframes: list) -> None:
        """Integrate into the robot map when the result is in map_frame at metric scale; else merge clouds."""
        if self.robot_map is None:
            self._merge_into_map(result)
            return
        try:
            self.robot_map.check(result)  # not metric, another frame, or sparse: why, in one line
        except MapInputError as error:
            self._map_note = f"not in the robot map (~/map_mesh, ~/occupancy): {error}"
            self.get_logger().warning(self._map_note)
            if self.robot_map.block_count == 0:  # ~/map shows merged clouds until the robot map has a surface
                self._merge_into_map(result)
            return
        update = self.robot_map.integrate(result, keyframes)
        self._map_note = "" if update.occupancy is not None else f"no occupancy grid: {update.occupancy_reason}"
        for message in update.messages:
            self.get_logger().info(f"map: {message}")
        self.get_logger().info(f"map: {update.summary}")
        self._map_summary = update.summary
        self.map_outputs.publish(
            self.map_frame, update.chunks, self.robot_map.surface() if update.integrated else None, update.occupancy
        )

    def _merge_into_map(self, result: Reconstruction) -> None:
        if not self.params["accumulate_map"]:
            return
        try:
            merged = self.map.merge(result)
        except (MapAlignmentError, ValueError) as error:
            self.get_logger().warning(f"reconstruction not added to ~/map: {error}")
            return
        self.get_logger().info(f"map: {self.map.last_report.summary()}")
        header = Header(frame_id=merged.frame_id, stamp=self.get_clock().now().to_msg())
        self.map_pub.publish(conv.points_to_cloud_serialized(merged.points, merged.colors, header))

    def _publish_result(self, result: Reconstruction, keyframes: list) -> None:
        if self.viewer is not None:
            self.viewer.show(result, keyframe_images=[k.image for k in keyframes])
        header = Header(frame_id=result.frame_id, stamp=self.get_clock().now().to_msg())
        self.cloud_pub.publish(conv.points_to_cloud_serialized(result.points, result.colors, header))
        self.keyframes_pub.publish(conv.poses_to_pose_array(result.camera_poses, header))
        if self._tf_broadcaster is not None:
            self._tf_broadcaster.sendTransform(
                [
                    conv.pose_to_transform(pose, header, f"showroom_keyframe_{i}")
                    for i, pose in enumerate(result.camera_poses)
                ]
            )
        if result.mesh is not None:
            display = decimate_mesh(result.mesh, self.params["mesh_max_triangles"])
            self.mesh_pub.publish(conv.mesh_to_markers_serialized(display, header))

    # --- services ---------------------------------------------------------------------------------
    def _on_reconstruct(self, request: Reconstruct.Request, response: Reconstruct.Response) -> Reconstruct.Response:
        count = len(self.collector.buffer)
        if count < self.params["min_keyframes"]:
            response.success = False
            response.message = f"need at least {self.params['min_keyframes']} keyframes, have {count}"
            return response
        job = self._start_job("service call")
        if job is None:
            response.success, response.message = False, "a reconstruction is already running; try again when done"
            return response
        result, error = self._wait(
            job, self.params["reconstruct_timeout"], "still running; its result will be published on ~/cloud"
        )
        if error is not None:
            response.success, response.message = False, f"reconstruction: {error}"
            return response
        response.success = True
        response.num_points = result.num_points
        response.num_triangles = result.mesh.num_triangles if result.mesh else 0
        response.seconds = float(self._last_duration)
        response.message = f"backend {result.backend}: {response.num_points} points, {response.num_triangles} triangles"
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self._busy():
                response.success, response.message = False, "a reconstruction is running; reset when it is done"
                return response
            self.collector.clear()
            for history in self._pose_histories:
                history.clear()
            self._last = None
            self._carried = []
            self._state, self._progress = "collecting", 0.0
            self._message = "reset: keyframe buffer and last reconstruction cleared (the map is kept: ~/clear_map)"
        header = Header(frame_id=self.map_frame, stamp=self.get_clock().now().to_msg())
        empty = np.zeros((0, 3))
        self.cloud_pub.publish(conv.points_to_cloud_serialized(empty, empty.astype(np.uint8), header))
        self.keyframes_pub.publish(PoseArray(header=header))
        self.mesh_pub.publish(conv.mesh_to_markers_serialized(None, header))
        if self.viewer is not None:
            self.viewer.clear()
        self._publish_status()
        response.success = True
        response.message = "keyframe buffer and last reconstruction cleared; the map is kept (~/clear_map clears it)"
        return response

    def _checked_name(self, requested: str, default_prefix: str, response: Any) -> str | None:
        """The file base name a service request gives (or a timestamped default), or None with the
        refusal already in ``response``: names are confined to output_dir."""
        name = requested.strip() or (f"{default_prefix}-{time.strftime('%Y%m%d-%H%M%S')}" if default_prefix else "")
        if SAFE_NAME.match(name) and ".." not in name:
            return name
        response.success = False
        response.message = (
            f"invalid name '{requested}': 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"without '..' (files are written under {self.output_dir})"
        )
        return None

    def _on_save(self, request: SaveReconstruction.Request, response: SaveReconstruction.Response):
        name = self._checked_name(request.name, "reconstruction", response)
        if name is None:
            return response
        with self._lock:
            result = self._last
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

    # --- robot map services (run on the worker: the map is only touched there) ------------------
    def _map_job(self, work: Callable[[], str], response: Any, what: str) -> Any:
        """Run ``work`` on the worker after any queued reconstruction; answer with its message or error."""
        if self.robot_map is None:
            response.success, response.message = False, "volumetric_map is off: there is no robot map"
            return response
        job = self._worker.submit(work)
        job.add_done_callback(lambda _: release_free_heap())
        message, error = self._wait(job, self.params["reconstruct_timeout"], f"{what} is still running")
        response.success = error is None
        response.message = message if error is None else f"{what}: {error}"
        return response

    def _on_save_map(self, request: SaveReconstruction.Request, response: SaveReconstruction.Response):
        name = self._checked_name(request.name, "map", response)
        if name is None:
            return response

        def work() -> str:
            assert self.robot_map is not None
            if self.robot_map.block_count == 0:
                raise ValueError("nothing to save yet: the map is empty")
            files = save_map(self.robot_map, self.output_dir, name)
            response.files = [str(path) for path in files.values()]
            return f"saved the map ({self.robot_map.block_count} blocks) in {len(files)} files under {self.output_dir}"

        return self._map_job(work, response, "save_map")

    def _on_load_map(self, request: LoadMap.Request, response: LoadMap.Response):
        name = self._checked_name(request.name, "", response)  # no default: it must name a saved map
        if name is None:
            return response

        def work() -> str:
            loaded, update = load_map(map_file_paths(self.output_dir, name)["volume"], self.map_config)
            self.robot_map = loaded
            response.num_blocks = loaded.block_count
            self.map_outputs.publish(
                self.map_frame,
                self.map_outputs.replace_all(update.chunks),
                loaded.surface(),
                update.occupancy,
            )
            self._map_note = "" if update.occupancy is not None else f"no occupancy grid: {update.occupancy_reason}"
            self._map_summary = f"loaded '{name}': {update.summary}"
            return f"loaded map '{name}': {loaded.block_count} blocks, {len(update.chunks.changed)} chunks"

        return self._map_job(work, response, "load_map")

    def _on_clear_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        def work() -> str:
            assert self.robot_map is not None
            self.robot_map.clear()
            self.map.clear()
            self.map_outputs.clear(self.map_frame)
            self._map_note = ""
            self._map_summary = "empty (cleared)"
            return "map cleared (~/map, ~/map_mesh, ~/occupancy)"

        return self._map_job(work, response, "clear_map")

    def _on_generate(self, request: GenerateViews.Request, response: GenerateViews.Response):
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
        with self._lock:
            # One generation at a time; it queues behind a running reconstruction (and behind the windows
            # already queued in continuous mode, at most max_pending_windows), never in front of one.
            already = self._generation is not None and not self._generation.done()
            if not already:
                state, message = (
                    (None, "generation queued behind the running reconstruction")
                    if self._busy()
                    else ("generating", "generating views")
                )
                job = self._submit(state, message, self._generate, generation, request.add_to_reconstruction)
                self._generation = job
        if already:
            response.success = False
            response.message = "a generation is already queued or running; call again when it is done"
            return response
        self._publish_status()
        outcome, error = self._wait(
            job, p["generate_timeout"], "generation is queued or running; its views will be published"
        )
        if error is not None:
            response.success, response.message = False, error
            return response
        views, status, result = outcome
        header = Header(frame_id=result.frame_id if result else self.map_frame, stamp=self.get_clock().now().to_msg())
        for view in views:
            response.images.append(conv.rgb_to_image(view.image, header))
            response.masks.append(conv.mono_to_image(view.mask.astype(np.uint8) * 255, header))
            response.poses.append(conv.matrix_to_pose_stamped(view.pose_c2w, header))
            response.accepted.append(bool(view.accepted))
            response.reasons.append(view.reason)
        accepted = sum(v.accepted for v in views)
        response.success = True
        response.message = f"{len(views)} view(s), {accepted} accepted; {status}"
        return response

    def _generate(self, request, add_to_reconstruction: bool):
        with self._lock:
            reconstruction, keyframes = self._last, list(self._last_keyframes)
            self._state, self._progress, self._message = "generating", 0.0, "generating views"
        self._publish_status()
        try:
            images = [k.image for k in keyframes] if keyframes else None
            views, status = self.generator.run(request, reconstruction, images, self._report)
            header = Header(frame_id=reconstruction.frame_id, stamp=self.get_clock().now().to_msg())
            for view in views:
                self.generated_image_pub.publish(conv.rgb_to_image(view.image, header))
                self.generated_mask_pub.publish(conv.mono_to_image(view.mask.astype(np.uint8) * 255, header))
            result = reconstruction
            if add_to_reconstruction:
                from showroom_ros.generation.generate import generated_views_to_keyframes

                extra = generated_views_to_keyframes(views, only_accepted=True, frame_id=reconstruction.frame_id)
                if extra:
                    self._report(0.0, f"3D generate: reconstructing with {len(extra)} generated view(s)")
                    result = self._reconstruct(keyframes + extra)
                    status += f"; reconstructed with {len(extra)} generated keyframe(s)"
                else:
                    status += "; no view was accepted, so the reconstruction is unchanged"
        except Exception as error:
            if not self.context.ok():
                raise  # stopping: see _reconstruct
            with self._lock:
                self._state, self._message = "collecting", f"generation failed: {error}"
            self._publish_status()
            raise
        with self._lock:
            self._state, self._progress, self._message = "collecting", 1.0, f"generated {len(views)} view(s)"
        self._publish_status()
        return views, status, result

    # --- status -----------------------------------------------------------------------------------
    def _publish_status(self) -> None:
        self._watch_models()
        disk = self.disk.reports()
        disk_notes = [f"disk: {line}" for line in disk_warnings(disk)]
        with self._lock:
            last = self._last
            status = ReconstructionStatus(
                state=self._state,
                backend=last.backend if last else self.params["backend"],
                backend_reason=self._backend_reason or self._models_summary(),
                num_keyframes=len(self.collector.buffer),
                max_keyframes=self.params["max_keyframes"],
                frames_received=self._frames_received,
                frames_rejected=self._frames_rejected,
                last_rejection=self._last_rejection,
                progress=float(self._progress),
                message=self._message,
                num_points=last.num_points if last else 0,
                num_triangles=last.mesh.num_triangles if last and last.mesh else 0,
                last_duration_s=float(self._last_duration),
                frame_id=last.frame_id if last else self.map_frame,
                metric=bool(last.metric) if last else False,
                notes=(list(last.notes) if last else []) + ([self._map_note] if self._map_note else []) + disk_notes,
            )
        status.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(status)
        level = {"error": DiagnosticStatus.ERROR}.get(
            status.state, DiagnosticStatus.WARN if status.notes else DiagnosticStatus.OK
        )
        diagnostic = DiagnosticStatus(
            level=level,
            name="showroom: reconstruction",
            hardware_id=self.get_name(),
            message=status.message,
            values=[
                KeyValue(key=k, value=str(getattr(status, k)))
                for k in (
                    "state",
                    "backend",
                    "num_keyframes",
                    "frames_received",
                    "frames_rejected",
                    "last_rejection",
                    "num_points",
                    "num_triangles",
                )
            ]
            + [
                KeyValue(key="callback_errors", value=str(sum(self._callback_errors.values()))),
                KeyValue(key="last_callback_error", value=self._last_callback_error),
                KeyValue(key="notes", value=" | ".join(status.notes)),
                KeyValue(key="map", value=self._map_summary),
            ],
        )
        disk_levels = {"critical": DiagnosticStatus.ERROR, "low": DiagnosticStatus.WARN}
        disk_diagnostic = DiagnosticStatus(
            level=disk_levels.get(worst_level(disk), DiagnosticStatus.OK),
            name="showroom: disk",
            hardware_id=self.get_name(),
            message="; ".join(report.message for report in disk),
            values=[KeyValue(key=f"{report.label} free GB", value=report.free_gb) for report in disk],
        )
        self.diagnostics_pub.publish(DiagnosticArray(header=status.header, status=[diagnostic, disk_diagnostic]))

    def destroy_node(self) -> None:
        """Stop at once (docs/shutdown.md): queued work is cancelled, running work (a model download,
        a reconstruction, a generation, a save) is abandoned, and the temporary files of an
        unfinished save are removed; ``run_node`` then ends the process without joining those threads.
        """
        spinner = getattr(self, "_input_spinner", None)
        if spinner is not None:
            spinner.stop()
        viewer = getattr(self, "viewer", None)
        if viewer is not None:
            viewer.stop()
        worker = getattr(self, "_worker", None)  # absent when the constructor failed on bad parameters
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)
        output_dir = getattr(self, "output_dir", None)
        if output_dir is not None:
            remove_own_temporaries(output_dir)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    # Three threads for services waiting on the worker and the status timer; camera inputs have their own.
    return run_node(ShowroomNode, "showroom", args, threads=3, abandon=_abandon)


def _abandon(node: ShowroomNode) -> None:
    """Last clean-up when a service callback (a save) still runs at shutdown: no rcl handle is
    destroyed under it; queued work is cancelled and unfinished temporaries are removed."""
    if node._input_spinner is not None:
        node._input_spinner.stop(timeout=0.2)
    node._worker.shutdown(wait=False, cancel_futures=True)
    remove_own_temporaries(node.output_dir)


if __name__ == "__main__":
    sys.exit(main())
