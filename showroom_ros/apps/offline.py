"""Offline inputs → keyframes: a folder of photos, a frames_c2w.txt folder, or a rosbag2 recording.

Not every user starts from a live robot. This module turns what they have on disk into the same
:class:`~showroom_ros.capture.keyframes.Keyframe` list the node builds from topics, choosing keyframes with
the node's own :class:`~showroom_ros.capture.keyframes.KeyframeSelector` (folders) or
:class:`~showroom_ros.capture.collector.KeyframeCollector` (bags), so ``showroom reconstruct`` and the node
reconstruct the same views. Bags are read with ``rosbags`` (no ROS install needed); camera poses come
from the bag's ``/tf`` and ``/tf_static`` through
:class:`~showroom_ros.geometry.transform_tree.TransformBuffer`, a small ROS-free TF buffer that
interpolates the camera frame's pose in a fixed frame at each image stamp. Messages are decoded by
:mod:`showroom_ros.io.sensor_messages`, the node's own decoder, and poses interpolated by
:func:`showroom_ros.geometry.poses.interpolate_pose`, the node's own rule.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from showroom_ros.capture.collector import CollectorConfig, KeyframeCollector
from showroom_ros.capture.keyframes import Keyframe, KeyframeBuffer, KeyframeSelector, KeyframeSelectorConfig
from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.geometry.poses import PoseHistory, rigid_pose
from showroom_ros.geometry.transform_tree import TransformBuffer, TransformError, strip_frame
from showroom_ros.io.console import ProgressFactory, silent
from showroom_ros.io.datasets import DatasetError, find_index, load_frame_folder, read_frame_index, read_rgb
from showroom_ros.io.sensor_messages import (
    MessageError,
    camera_info_to_intrinsics,
    compressed_depth_to_array,
    compressed_to_rgb,
    depth_image_to_array,
    image_to_rgb,
    stamp_to_ns,
)
from showroom_ros.reconstruction.rgbd import depth_to_metres

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # what datasets.load_frame_folder lists
BAG_SUFFIXES = (".mcap", ".db3")
MIN_VIEWS = 2
"""No backend can reconstruct from fewer views: refuse before loading anything else."""

class OfflineInputError(ValueError):
    """The path cannot be used as it is; the one-line message says why and what to change."""


@dataclass
class OfflineInput:
    """Keyframes read from a path, plus what a user should know about how they were chosen."""

    keyframes: list[Keyframe]
    kind: str  # "image folder", "frame folder" or "rosbag2"
    source: Path
    frames_considered: int
    notes: list[str] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    names: list[str] = field(default_factory=list)  # one label per keyframe (file name or topic@stamp)
    fixed_frame: str | None = None  # the frame the keyframe poses are in, when a bag said so


# --- what kind of path ---------------------------------------------------------------------------


def is_bag(path: Path) -> bool:
    """A rosbag2: an .mcap/.db3 file, or a directory with metadata.yaml or bag files."""
    if path.is_file():
        return path.suffix.lower() in BAG_SUFFIXES
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or any(
            p.suffix.lower() in BAG_SUFFIXES for p in path.iterdir() if p.is_file()
        )
    return False


def load_input(
    path: str | Path,
    *,
    use_all: bool = False,
    frames: Sequence[str] | None = None,
    selector: KeyframeSelectorConfig | None = None,
    with_depth: bool = True,
    with_poses: bool = True,
    bag: BagOptions | None = None,
    progress: ProgressFactory = silent,
) -> OfflineInput:
    """Keyframes from a folder of images, a frames_c2w.txt folder or a rosbag2 (MCAP or sqlite3)."""
    source = Path(path).expanduser()
    if not source.exists():
        raise OfflineInputError(f"{source} does not exist")
    if is_bag(source):
        if use_all or frames:
            raise OfflineInputError(
                "--all and --frames apply to folders; a bag's keyframes are chosen by the selector"
            )
        options = bag or BagOptions()
        options = replace(
            options, use_depth=with_depth and options.use_depth, use_poses=with_poses and options.use_poses
        )
        return load_bag(source, options, selector, progress)
    if source.is_dir():
        return load_folder(source, use_all, frames, selector, with_depth, with_poses, progress)
    raise OfflineInputError(
        f"{source} is neither a folder of images, a frames_c2w.txt folder "
        "nor a rosbag2 (.mcap/.db3 or bag folder)"
    )


# --- folders -------------------------------------------------------------------------------------


def _list_images(folder: Path) -> list[Path]:
    """Colour images of a plain folder in name order (files named *depth* are depth maps, not photos)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and "depth" not in p.name.lower()
    )


def load_folder(
    folder: Path,
    use_all: bool = False,
    frames: Sequence[str] | None = None,
    selector: KeyframeSelectorConfig | None = None,
    with_depth: bool = True,
    with_poses: bool = True,
    progress: ProgressFactory = silent,
) -> OfflineInput:
    """Choose 3-5 keyframes of a folder as the node's selector would (``use_all``: every frame)."""
    config = selector or KeyframeSelectorConfig()
    try:
        index = find_index(folder)
        if index is not None:
            records = read_frame_index(index)
            kind = "frame folder"
            candidates = [(r.rgb, r.pose if with_poses else None) for r in records]
        else:
            kind = "image folder"
            candidates = [(p, None) for p in _list_images(folder)]
    except DatasetError as error:
        raise OfflineInputError(str(error)) from None
    if not candidates:
        raise OfflineInputError(
            f"{folder} has no images ({', '.join(IMAGE_SUFFIXES)}) and no frames_c2w.txt: "
            "nothing to reconstruct"
        )
    if len(candidates) < MIN_VIEWS:
        raise OfflineInputError(
            f"{folder} has only {len(candidates)} image: a reconstruction needs at least {MIN_VIEWS} views "
            "(3-5 recommended)"
        )
    base = index.parent if index is not None else folder
    names_all = [str(p.relative_to(base)) if p.is_relative_to(base) else str(p) for p, _ in candidates]
    rejections: Counter[str] = Counter()
    if frames:
        chosen = list(frames)
        notes = [f"frames given with --frames: {', '.join(chosen)}"]
        if len(chosen) < MIN_VIEWS:
            raise OfflineInputError(
                f"--frames names {len(chosen)} frame: a reconstruction needs at least {MIN_VIEWS}"
            )
    elif use_all:
        chosen = names_all
        notes = [f"all {len(names_all)} frames (--all)"]
    else:
        chosen, notes, rejections = _select_from_files(candidates, names_all, config, progress)
        if len(chosen) < config.min_keyframes:
            raise OfflineInputError(
                f"only {len(chosen)} of {len(candidates)} images in {folder} passed keyframe selection "
                f"(need {config.min_keyframes}; rejected: {_top_reasons(rejections)}); "
                "use --all to reconstruct from every image"
            )
    bar = progress(len(chosen), "loading keyframes")
    try:
        keyframes = load_frame_folder(
            folder, names=chosen, with_depth=with_depth, with_poses=with_poses, index=index
        )
    except DatasetError as error:
        raise OfflineInputError(str(error)) from None
    finally:
        bar.update(len(chosen))
        bar.close()
    with_d = sum(k.depth is not None for k in keyframes)
    with_p = sum(k.pose is not None for k in keyframes)
    with_k = sum(k.intrinsics is not None for k in keyframes)
    notes.append(
        f"{len(keyframes)} keyframes: {with_d} with depth, {with_p} with poses, {with_k} with intrinsics"
    )
    return OfflineInput(
        keyframes, kind, folder, len(candidates), notes, rejections, [Path(n).name for n in chosen]
    )


def _select_from_files(
    candidates: list[tuple[Path, np.ndarray | None]],
    names: list[str],
    config: KeyframeSelectorConfig,
    progress: ProgressFactory,
) -> tuple[list[str], list[str], Counter[str]]:
    """Run the keyframe selector over the frames in order until it has ``max_keyframes``."""
    selector = KeyframeSelector(config)
    reference: Keyframe | None = None
    chosen: list[str] = []
    rejections: Counter[str] = Counter()
    bar = progress(len(candidates), "selecting keyframes")
    try:
        for (image_path, pose), name in zip(candidates, names, strict=True):
            bar.update(1)
            try:
                image = read_rgb(image_path)
            except DatasetError as error:
                raise OfflineInputError(str(error)) from None
            decision = selector.evaluate(image, pose=pose, reference=reference)
            if not decision.accepted:
                rejections[_reason_kind(decision.reason)] += 1
                continue
            reference = Keyframe(image=image, pose=pose)
            chosen.append(name)
            if len(chosen) >= config.max_keyframes:
                break
    finally:
        bar.close()
    note = f"selected {len(chosen)} of {len(candidates)} frames with the keyframe selector"
    if rejections:
        note += f" (rejected: {_top_reasons(rejections)})"
    return chosen, [note], rejections


def _reason_kind(reason: str) -> str:
    """A rejection reason without its numbers, so identical causes are counted together."""
    return reason.split(" (")[0].split(":")[0].strip()


def _top_reasons(rejections: Counter[str]) -> str:
    if not rejections:
        return "none rejected"
    return "; ".join(f"{reason} x{count}" for reason, count in rejections.most_common(3))


# --- bags ----------------------------------------------------------------------------------------

COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = ("sensor_msgs/msg/Image", COMPRESSED_TYPE)
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
POSE_TYPES = ("geometry_msgs/msg/PoseStamped",)


@dataclass
class BagOptions:
    """Which topics of a bag to use; None means found automatically (and said so in the notes)."""

    image_topic: str | None = None
    depth_topic: str | None = None
    camera_info_topic: str | None = None
    depth_info_topic: str | None = None
    pose_topic: str | None = None  # geometry_msgs/PoseStamped of the camera instead of TF
    fixed_frame: str | None = None  # default: the root of the camera frame's TF tree
    camera_frame: str | None = None  # default: the image messages' header.frame_id
    depth_scale: float = 1000.0
    use_depth: bool = True
    use_poses: bool = True
    max_keyframes: int | None = None  # default: the selector's max_keyframes


def _sibling(topic: str, name: str) -> str:
    return topic.rsplit("/", 1)[0] + "/" + name if "/" in topic.strip("/") else "/" + name


def _resolve_topics(topics: dict[str, str], options: BagOptions, path: Path) -> tuple[BagOptions, list[str]]:
    """Fill in the topics the user left out, checking the named ones exist with a usable type."""
    notes: list[str] = []
    listing = ", ".join(f"{t} ({m.split('/')[-1]})" for t, m in sorted(topics.items())) or "no topics"

    def check(topic: str | None, types: Sequence[str], option: str) -> None:
        if topic is None:
            return
        if topic not in topics:
            raise OfflineInputError(
                f"bag {path} has no topic {topic} (given with {option}); it has: {listing}"
            )
        if topics[topic] not in types:
            raise OfflineInputError(
                f"topic {topic} in {path} is {topics[topic]}, expected {' or '.join(types)} for {option}"
            )

    check(options.image_topic, IMAGE_TYPES, "--image-topic")
    check(options.depth_topic, IMAGE_TYPES, "--depth-topic")
    check(options.camera_info_topic, (INFO_TYPE,), "--camera-info-topic")
    check(options.depth_info_topic, (INFO_TYPE,), "--depth-info-topic")
    check(options.pose_topic, POSE_TYPES, "--pose-topic")

    image_topics = [t for t, m in topics.items() if m in IMAGE_TYPES]
    resolved = options
    if resolved.image_topic is None:
        colour = [t for t in image_topics if "depth" not in t.lower()]
        preferred = [t for t in colour if "/compressed" not in t] or colour
        if len(preferred) != 1:
            what = (
                "no colour image topic" if not preferred else f"several image topics ({', '.join(preferred)})"
            )
            raise OfflineInputError(f"bag {path} has {what}; name one with --image-topic (topics: {listing})")
        resolved = replace(resolved, image_topic=preferred[0])
        notes.append(f"image topic {preferred[0]} (found automatically)")
    if resolved.use_depth and resolved.depth_topic is None:
        depth = [t for t in image_topics if "depth" in t.lower()]
        raw = [t for t in depth if "compressed" not in t] or depth
        if len(raw) == 1:
            resolved = replace(resolved, depth_topic=raw[0])
            notes.append(f"depth topic {raw[0]} (found automatically)")
        elif len(raw) > 1:
            notes.append(f"several depth topics ({', '.join(raw)}): none used; pick one with --depth-topic")
    if not resolved.use_depth:
        resolved = replace(resolved, depth_topic=None, depth_info_topic=None)
    assert resolved.image_topic is not None
    if resolved.camera_info_topic is None:
        sibling = _sibling(resolved.image_topic.removesuffix("/compressed"), "camera_info")
        infos = [t for t, m in topics.items() if m == INFO_TYPE and "depth" not in t.lower()]
        if sibling in topics and topics[sibling] == INFO_TYPE:
            resolved = replace(resolved, camera_info_topic=sibling)
        elif len(infos) == 1:
            resolved = replace(resolved, camera_info_topic=infos[0])
        if resolved.camera_info_topic:
            notes.append(f"camera info topic {resolved.camera_info_topic} (found automatically)")
        else:
            notes.append("no CameraInfo topic found: keyframes have no intrinsics (pass --camera-info-topic)")
    if resolved.depth_topic and resolved.depth_info_topic is None:
        sibling = _sibling(resolved.depth_topic.removesuffix("/compressedDepth"), "camera_info")
        if sibling in topics and topics[sibling] == INFO_TYPE and sibling != resolved.camera_info_topic:
            resolved = replace(resolved, depth_info_topic=sibling)
            notes.append(f"depth camera info topic {sibling} (depth not registered to colour)")
    return resolved, notes


def add_tf_message(tf: TransformBuffer, message: Any, static: bool = False) -> int:
    """Add the transforms of a tf2_msgs/TFMessage (rosbags or rclpy); returns how many were valid."""
    added = 0
    for transform in message.transforms:
        translation = transform.transform.translation
        rotation = transform.transform.rotation
        added += tf.add(
            transform.header.frame_id,
            transform.child_frame_id,
            stamp_to_ns(transform.header.stamp),
            (translation.x, translation.y, translation.z),
            (rotation.x, rotation.y, rotation.z, rotation.w),
            static=static,
        )
    return added


def _decode_depth(message: Any, msgtype: str, depth_scale: float) -> np.ndarray:
    """A depth Image or compressedDepth message in metres (NaN: no depth)."""
    raw = compressed_depth_to_array(message) if msgtype == COMPRESSED_TYPE else depth_image_to_array(message)
    return depth_to_metres(raw, depth_scale)


def load_bag(
    path: Path,
    options: BagOptions | None = None,
    selector: KeyframeSelectorConfig | None = None,
    progress: ProgressFactory = silent,
    on_full: Callable[[list[Keyframe]], Sequence[Keyframe]] | None = None,
) -> OfflineInput:
    """Keyframes of a rosbag2 chosen as the node would: throttled, sharp, new, with depth and pose.

    Pass 1 reads the small topics (CameraInfo, /tf, /tf_static, pose topic) in full, so a pose can
    be interpolated at any image stamp; pass 2 streams colour and depth through the node's
    :class:`KeyframeCollector` in recording order until its buffer is full. With ``on_full``
    (continuous mapping) the whole bag is read instead: each full buffer goes to ``on_full``, the
    buffer restarts from the keyframes it returns (the overlap), and the last partial buffer is returned.
    """
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    options = options or BagOptions()
    config = selector or KeyframeSelectorConfig()
    if options.max_keyframes is not None:
        config = replace(
            config,
            max_keyframes=options.max_keyframes,
            min_keyframes=min(config.min_keyframes, options.max_keyframes),
        )
    typestore = get_typestore(Stores.ROS2_KILTED)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # rosbags raises several types for a bad bag
        raise OfflineInputError(f"cannot open {path} as a rosbag2: {str(error).splitlines()[0]}") from None
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        options, notes = _resolve_topics(topics, options, path)
        notes.insert(0, f"rosbag2 with {reader.message_count} messages on {len(topics)} topics")

        def deserialize(data: bytes, msgtype: str, topic: str) -> Any:
            try:
                return typestore.deserialize_cdr(data, msgtype)
            except Exception as error:
                raise OfflineInputError(f"cannot decode a {msgtype} message on {topic}: {error}") from None

        # Pass 1: calibration and poses.
        tf = TransformBuffer()
        pose_history = PoseHistory(max_samples=1_000_000)
        intrinsics: CameraIntrinsics | None = None
        depth_intrinsics: CameraIntrinsics | None = None
        pose_frames: Counter[str] = Counter()
        pose_samples: list[tuple[int, np.ndarray]] = []
        info_errors: dict[str, str] = {}
        small = {options.camera_info_topic, options.depth_info_topic, options.pose_topic}
        if options.use_poses and options.pose_topic is None:
            small |= {t for t, m in topics.items() if m == TF_TYPE}
        small.discard(None)
        connections = [c for c in reader.connections if c.topic in small]
        total = sum(c.msgcount for c in connections)
        bar = progress(total or None, "reading TF and calibration", "msg")
        try:
            for connection, _, data in reader.messages(connections=connections):
                bar.update(1)
                message = deserialize(data, connection.msgtype, connection.topic)
                # As the node does, a bad CameraInfo is skipped and the first valid one is used.
                if connection.topic == options.camera_info_topic and intrinsics is None:
                    try:
                        intrinsics = camera_info_to_intrinsics(message)
                    except MessageError as error:
                        info_errors[connection.topic] = str(error)
                elif connection.topic == options.depth_info_topic and depth_intrinsics is None:
                    try:
                        depth_intrinsics = camera_info_to_intrinsics(message)
                    except MessageError as error:
                        info_errors[connection.topic] = str(error)
                elif connection.topic == options.pose_topic:
                    pose_frames[strip_frame(message.header.frame_id)] += 1
                    p, q = message.pose.position, message.pose.orientation
                    t, r = np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])
                    if np.all(np.isfinite(t)) and np.all(np.isfinite(r)) and np.linalg.norm(r) > 1e-6:
                        pose_samples.append((stamp_to_ns(message.header.stamp), rigid_pose(t, r)))
                elif connection.msgtype == TF_TYPE:
                    add_tf_message(tf, message, static="static" in connection.topic)
        finally:
            bar.close()
        # Recording order is not stamp order: the history is filled sorted, so it never restarts.
        for stamp_ns, pose in sorted(pose_samples, key=lambda sample: sample[0]):
            pose_history.add(stamp_ns, pose)
        for topic, found, what in (
            (options.camera_info_topic, intrinsics, "intrinsics"),
            (options.depth_info_topic, depth_intrinsics, "depth intrinsics"),
        ):
            if topic and found is None:
                why = f"no valid CameraInfo ({info_errors[topic]})" if topic in info_errors else "no message"
                notes.append(f"{why} on {topic}: keyframes have no {what}")
        if tf.invalid_transforms:
            notes.append(f"ignored {tf.invalid_transforms} invalid TF transforms (zero quaternion or NaN)")

        pose_state: dict[str, Any] = {"fixed": options.fixed_frame, "error": "", "frame": None}
        if options.pose_topic and pose_frames:
            pose_frame = pose_frames.most_common(1)[0][0]
            if len(pose_frames) > 1 or (options.fixed_frame and strip_frame(options.fixed_frame) != pose_frame):
                raise OfflineInputError(
                    f"poses on {options.pose_topic} are in frame(s) {', '.join(sorted(pose_frames))}, "
                    f"not one fixed frame{f' {options.fixed_frame}' if options.fixed_frame else ''}"
                )
            pose_state["fixed"] = pose_frame or None
        if not options.use_poses:
            pose_source = "none (--no-poses)"
        elif options.pose_topic:
            pose_source = f"pose topic {options.pose_topic}"
        elif len(tf):
            pose_source = "TF"
        else:
            pose_source = "none (the bag has no /tf or /tf_static)"
            notes.append("no TF in the bag: keyframes have no poses")

        def pose_lookup(camera: int, stamp_ns: int, frame_id: str) -> np.ndarray | None:
            if pose_source.startswith("none"):
                return None
            if options.pose_topic:
                pose = pose_history.lookup(stamp_ns)
                if pose is None:
                    pose_state["error"] = f"no pose on {options.pose_topic} near {stamp_ns / 1e9:.3f} s"
                return pose
            frame = strip_frame(options.camera_frame or frame_id)
            if not frame:
                raise OfflineInputError(
                    f"images on {options.image_topic} have no header.frame_id: "
                    "name the camera frame with --camera-frame"
                )
            pose_state["frame"] = frame
            if pose_state["fixed"] is None:
                pose_state["fixed"] = tf.root(frame) if frame in tf.frames else "map"
            try:
                return tf.lookup(pose_state["fixed"], frame, stamp_ns)
            except TransformError as error:
                pose_state["error"] = str(error)
                return None

        collector_config = CollectorConfig(
            use_depth=options.depth_topic is not None,
            require_pose=not pose_source.startswith("none"),
            selector=config,
        )
        buffer = KeyframeBuffer(config.max_keyframes)
        collector = KeyframeCollector(collector_config, buffer, pose_lookup)
        if intrinsics is not None:
            collector.set_intrinsics(0, intrinsics)
        if depth_intrinsics is not None:
            collector.set_intrinsics(0, depth_intrinsics, depth=True)

        # Pass 2: colour and depth, in recording order, through the node's collector.
        stream = [c for c in reader.connections if c.topic in {options.image_topic, options.depth_topic}]
        images_seen = 0
        windows = 0
        rejections: Counter[str] = Counter()
        bar = progress(sum(c.msgcount for c in stream) or None, "choosing keyframes", "msg")
        try:
            for connection, log_ns, data in reader.messages(connections=stream):
                bar.update(1)
                outcomes = []
                if connection.topic == options.depth_topic:
                    message = deserialize(data, connection.msgtype, connection.topic)
                    try:
                        depth = _decode_depth(message, connection.msgtype, options.depth_scale)
                    except ValueError as error:  # MessageError, or a depth_scale depth_to_metres refuses
                        rejections[f"bad depth image: {error}"] += 1
                        continue
                    outcomes = collector.add_depth(0, stamp_to_ns(message.header.stamp), depth, log_ns)
                else:
                    images_seen += 1
                    if not collector.should_evaluate(0, log_ns):
                        outcomes = collector.poll(log_ns)
                    else:
                        message = deserialize(data, connection.msgtype, connection.topic)
                        try:
                            compressed = connection.msgtype == COMPRESSED_TYPE
                            image = compressed_to_rgb(message) if compressed else image_to_rgb(message)
                        except MessageError as error:
                            rejections[f"bad image: {error}"] += 1
                            continue
                        frame_id = options.camera_frame or message.header.frame_id
                        outcomes = [
                            collector.add_image(0, stamp_to_ns(message.header.stamp), image, frame_id, log_ns)
                        ]
                for outcome in outcomes:
                    if outcome.kind == "rejected" and "buffer is full" not in outcome.reason:
                        rejections[_reason_kind(outcome.reason)] += 1
                if buffer.is_full:
                    if on_full is None:
                        break
                    kept = list(on_full(buffer.keyframes))
                    windows += 1
                    buffer.clear()
                    for keyframe in kept:
                        buffer.add(keyframe)
        finally:
            bar.close()
    finally:
        reader.close()

    keyframes = buffer.keyframes
    if pose_state["error"] and rejections.get("no camera pose at its stamp"):
        notes.append(f"pose lookups failed: {pose_state['error']}")
    if pose_source == "TF" and pose_state["frame"]:
        pose_source = f"TF {pose_state['fixed']} -> {pose_state['frame']}"
    notes.append(f"poses from {pose_source}")
    if images_seen == 0:
        raise OfflineInputError(f"bag {path} has no messages on {options.image_topic}")
    if len(keyframes) < config.min_keyframes and windows == 0:
        detail = f"; camera pose lookup: {pose_state['error']}" if pose_state["error"] else ""
        raise OfflineInputError(
            f"only {len(keyframes)} of {images_seen} images on {options.image_topic} became keyframes "
            f"(need {config.min_keyframes}; rejected: {_top_reasons(rejections)}){detail}"
        )
    note = f"selected {len(keyframes)} keyframes from {images_seen} images on {options.image_topic}"
    if windows:
        note = f"{windows} full windows, then {note[len('selected ') :]}"
    if rejections:
        note += f" (rejected: {_top_reasons(rejections)})"
    notes.append(note)
    names = [f"{options.image_topic}@{k.stamp_ns / 1e9:.3f}" for k in keyframes]
    fixed = pose_state["fixed"] if any(k.pose is not None for k in keyframes) else None
    return OfflineInput(keyframes, "rosbag2", path, images_seen, notes, rejections, names, fixed)
