"""Camera messages to numpy without ROS: Image, CompressedImage, compressedDepth and CameraInfo.

The one decoder of camera input. The node (rclpy messages, through ``ros/conversions.py``) and the bag
reader (``rosbags`` messages, ``apps/offline.py``) both call it: the two kinds of message object share
their field names (``encoding``, ``height``, ``width``, ``step``, ``is_bigendian``, ``data``; ``format``;
``k``, ``d``, ``r``, ``p``), so one set of rules decides what a frame is, and a frame a bag gives the
CLI is a frame the node would accept. cv_bridge is not installable from PyPI (the PyPI ``cv-bridge`` is
a broken ROS 1 port), so the encodings cameras publish are decoded with numpy and OpenCV.

Every decoder checks every field it reads before using it and raises only :class:`MessageError`, with a
message a user can act on: hostile or corrupt input never escapes as another exception.

``compressedDepth`` is read as ros-perception/image_transport_plugins' ``compressed_depth_image_transport``
(``codec.cpp``) writes it: ``format`` is ``"<encoding>; compressedDepth png"`` or ``"...; compressedDepth rvl"``
(older publishers: ``"<encoding>; compressedDepth"`` or the encoding alone, both PNG), and ``data`` is a
12-byte ``ConfigHeader`` (int32 format, 0 = inverse depth; float32 ``depthParam[2]``), then the payload:
a PNG, or ``uint32 cols, uint32 rows`` and an RVL stream (:mod:`showroom_ros.io.rvl`). 16UC1 depth is
stored as it is; 32FC1 depth ``d`` (metres) as quantised inverse depth ``q = A / d + B`` (truncated to
uint16), decoded ``d = A / (q - B)``, with ``q = 0`` for no depth and ``A, B = depthParam``.
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

from showroom_ros.geometry.camera import CameraIntrinsics
from showroom_ros.io.rvl import RvlError, rvl_decode, rvl_encode


class MessageError(ValueError):
    """A message that cannot be used as it is (bad encoding, truncated data, no calibration)."""


MAX_IMAGE_SIDE = 65_536
"""Largest image width/height accepted from a message: larger is a corrupt or hostile header."""
MAX_DECODED_PIXELS = 1 << 25
"""Largest image a compressed depth payload may expand to (an 8K frame): a few bytes of RVL or PNG
can claim gigapixels, and the decoder would allocate them before finding out."""
MAX_FOCAL_PX = 1e7

# encoding -> (channels, numpy dtype, OpenCV conversion to RGB: None for rgb8 and depth)
_IMAGE_LAYOUTS: dict[str, tuple[int, np.dtype, int | None]] = {
    "rgb8": (3, np.dtype(np.uint8), None),
    "bgr8": (3, np.dtype(np.uint8), cv2.COLOR_BGR2RGB),
    "8UC3": (3, np.dtype(np.uint8), cv2.COLOR_BGR2RGB),  # cv_bridge's reading: OpenCV's own order
    "rgba8": (4, np.dtype(np.uint8), cv2.COLOR_RGBA2RGB),
    "bgra8": (4, np.dtype(np.uint8), cv2.COLOR_BGRA2RGB),
    "8UC4": (4, np.dtype(np.uint8), cv2.COLOR_BGRA2RGB),
    "mono8": (1, np.dtype(np.uint8), cv2.COLOR_GRAY2RGB),
    "8UC1": (1, np.dtype(np.uint8), cv2.COLOR_GRAY2RGB),
    "yuv422": (2, np.dtype(np.uint8), cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, np.dtype(np.uint8), cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, np.dtype(np.uint8), cv2.COLOR_YUV2RGB_YUYV),
    "yuyv": (2, np.dtype(np.uint8), cv2.COLOR_YUV2RGB_YUYV),
    # OpenCV names a Bayer pattern by its second row's middle pixels: ROS's RGGB is OpenCV's "BG".
    "bayer_rggb8": (1, np.dtype(np.uint8), cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, np.dtype(np.uint8), cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, np.dtype(np.uint8), cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, np.dtype(np.uint8), cv2.COLOR_BayerGB2RGB),
    "mono16": (1, np.dtype(np.uint16), None),
    "16UC1": (1, np.dtype(np.uint16), None),
    "32FC1": (1, np.dtype(np.float32), None),
}
DEPTH_ENCODINGS = frozenset({"16UC1", "mono16", "32FC1"})
"""Depth images: 16-bit integers (``depth_scale`` units per metre) or 32-bit float metres."""


def stamp_to_ns(stamp: Any) -> int:
    """A builtin_interfaces/Time (rclpy or rosbags) as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# --- raw images ----------------------------------------------------------------------------------


def image_to_array(msg: Any) -> np.ndarray:
    """Decode an Image into (H, W, C) or (H, W) numpy data in its own encoding, validating its layout."""
    encoding = msg.encoding.strip()
    if encoding not in _IMAGE_LAYOUTS:
        raise MessageError(
            f"unsupported image encoding '{msg.encoding}' (supported: {', '.join(sorted(_IMAGE_LAYOUTS))})"
        )
    channels, dtype, _ = _IMAGE_LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise MessageError(f"image is empty ({width}x{height})")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
        raise MessageError(f"image size {width}x{height} is implausible (max side {MAX_IMAGE_SIDE})")
    if channels == 2 and width % 2:
        raise MessageError(f"{encoding} packs two pixels per 4 bytes: the width must be even, got {width}")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise MessageError(f"image step {step} is smaller than width x pixel size = {row_bytes} ({encoding})")
    data = msg.data
    buffer = data if isinstance(data, (bytes, bytearray, memoryview)) else memoryview(data)
    if len(buffer) < step * (height - 1) + row_bytes:
        raise MessageError(
            f"image data is truncated: {len(buffer)} bytes for {width}x{height} {encoding} with step {step}"
        )
    rows = np.frombuffer(buffer, dtype=np.uint8, count=step * (height - 1) + row_bytes)
    rows = np.lib.stride_tricks.as_strided(rows, shape=(height, row_bytes), strides=(step, 1))
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    pixels = pixels.astype(dtype.newbyteorder("="), copy=False)
    return pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)


def image_to_rgb(msg: Any) -> np.ndarray:
    """A colour Image as (H, W, 3) uint8 RGB (8-bit colour, grey, YUV 4:2:2 and Bayer encodings)."""
    encoding = msg.encoding.strip()
    if encoding in DEPTH_ENCODINGS:
        raise MessageError(f"expected a colour image, got depth encoding '{encoding}'")
    pixels = image_to_array(msg)
    code = _IMAGE_LAYOUTS[encoding][2]  # None: already RGB
    if code is None:
        return np.ascontiguousarray(pixels)
    try:
        return cv2.cvtColor(pixels, code)
    except cv2.error as error:  # OpenCV refuses a layout the checks above did not foresee
        raise MessageError(f"could not convert a {pixels.shape} {encoding} image to RGB: {error}") from error


def depth_image_to_array(msg: Any) -> np.ndarray:
    """A depth Image as raw (H, W) uint16 (16UC1/mono16) or float32 (32FC1) values."""
    if msg.encoding.strip() not in DEPTH_ENCODINGS:
        raise MessageError(f"expected a depth image (16UC1, mono16 or 32FC1), got encoding '{msg.encoding}'")
    return image_to_array(msg)


# --- compressed images ---------------------------------------------------------------------------


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """Decode a CompressedImage (JPEG/PNG, as image_transport's ``compressed`` plugin sends) as RGB."""
    if len(msg.data) == 0:
        raise MessageError("compressed image has no data")
    buffer = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise MessageError(f"could not decode compressed image (format '{msg.format}'): {error}") from error
    if bgr is None or bgr.ndim != 3 or bgr.size == 0:
        raise MessageError(f"could not decode compressed image (format '{msg.format}', {len(buffer)} bytes)")
    # image_transport records the source encoding first ("rgb8; jpeg compressed bgr8");
    # OpenCV always hands back BGR, whatever the source order was.
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")
"""compressed_depth_image_transport's ConfigHeader: format (0 = inverse depth), depthParam A and B."""
_INVERSE_DEPTH = 0
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_DEPTH_MAX = 10.0
DEFAULT_DEPTH_QUANTIZATION = 100.0
"""The publisher's ``depth_max`` (m) and ``depth_quantization`` parameters' defaults."""


def compressed_depth_format(image_format: str) -> tuple[str, str]:
    """(depth encoding, "png" or "rvl") of a compressedDepth ``format`` string, as codec.cpp reads it."""
    encoding, separator, rest = image_format.partition(";")
    encoding = encoding.strip()
    if not separator or "compressedDepth png" in rest:
        compression = "png"  # the oldest publishers wrote the encoding alone
    elif "compressedDepth rvl" in rest:
        compression = "rvl"
    elif "compressedDepth" in rest and "compressedDepth " not in rest:
        compression = "png"  # "<encoding>; compressedDepth", before rvl existed
    else:
        raise MessageError(f"compressedDepth format '{image_format}' names no known compression (png, rvl)")
    if encoding not in DEPTH_ENCODINGS:
        raise MessageError(
            f"compressedDepth format '{image_format}' does not name a depth encoding (16UC1, mono16, 32FC1)"
        )
    return encoding, compression


def compressed_depth_to_array(msg: Any) -> np.ndarray:
    """Decode a ``compressedDepth`` CompressedImage (PNG or RVL) into raw depth values, as
    :func:`depth_image_to_array` gives them: (H, W) uint16 for 16UC1/mono16, float32 metres (NaN: none)
    for 32FC1."""
    encoding, compression = compressed_depth_format(msg.format)
    data = bytes(msg.data)
    if len(data) <= COMPRESSED_DEPTH_HEADER.size:
        raise MessageError(f"compressedDepth message of {len(data)} bytes is too short to hold its header and image")
    # The header's format field is not read, as codec.cpp does not read it: refusing a value it ignores
    # would refuse messages every ROS subscriber accepts. A and B only matter (and are checked) for 32FC1;
    # older publishers left them uninitialised for 16-bit depth.
    _, quant_a, quant_b = COMPRESSED_DEPTH_HEADER.unpack_from(data)
    if encoding == "32FC1" and not (np.isfinite(quant_a) and np.isfinite(quant_b)):
        raise MessageError(f"compressedDepth quantisation parameters are not finite (a={quant_a}, b={quant_b})")
    payload = data[COMPRESSED_DEPTH_HEADER.size :]
    stored = _decode_png_depth(payload) if compression == "png" else _decode_rvl_depth(payload)
    if encoding != "32FC1":
        return stored
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth = np.float32(quant_a) / (stored.astype(np.float32) - np.float32(quant_b))
    depth[stored == 0] = np.nan
    return depth


def _check_decoded_size(width: int, height: int, what: str) -> None:
    if width == 0 or height == 0:
        raise MessageError(f"{what} is empty ({width}x{height})")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_DECODED_PIXELS:
        raise MessageError(
            f"{what} claims {width}x{height} pixels (max side {MAX_IMAGE_SIDE}, max {MAX_DECODED_PIXELS} pixels)"
        )


def _decode_png_depth(payload: bytes) -> np.ndarray:
    # The PNG header's size is checked before decoding: a small PNG can inflate to gigabytes.
    if len(payload) < 24 or payload[:8] != _PNG_SIGNATURE or payload[12:16] != b"IHDR":
        raise MessageError(f"compressedDepth png payload is not a PNG ({len(payload)} bytes)")
    width, height = struct.unpack_from(">II", payload, 16)
    _check_decoded_size(width, height, "compressedDepth PNG")
    try:
        stored = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise MessageError(f"could not decode compressedDepth PNG: {error}") from error
    if stored is None or stored.ndim != 2 or stored.shape != (height, width):
        raise MessageError(f"could not decode compressedDepth PNG ({width}x{height}, {len(payload)} bytes)")
    if stored.dtype != np.uint16:
        raise MessageError(f"compressedDepth PNG must be 16-bit grey, got {stored.dtype}")
    return stored


def _decode_rvl_depth(payload: bytes) -> np.ndarray:
    if len(payload) < 8:
        raise MessageError(f"compressedDepth rvl payload of {len(payload)} bytes has no image size")
    width, height = struct.unpack_from("<II", payload)
    _check_decoded_size(width, height, "compressedDepth RVL image")
    try:
        return rvl_decode(payload[8:], width * height).reshape(height, width)
    except RvlError as error:
        raise MessageError(f"could not decode compressedDepth RVL image ({width}x{height}): {error}") from error


def encode_compressed_depth(
    depth: np.ndarray,
    compression: str = "png",
    depth_max: float = DEFAULT_DEPTH_MAX,
    depth_quantization: float = DEFAULT_DEPTH_QUANTIZATION,
) -> tuple[str, bytes]:
    """``(format, data)`` of the CompressedImage compressed_depth_image_transport publishes for (H, W) depth.

    uint16 is sent as 16UC1, as it is. float32 metres are sent as 32FC1 quantised inverse depth, with
    ``A = z0 (z0 + 1)``, ``B = 1 - A / depth_max`` (``z0 = depth_quantization``): depths at or beyond
    ``depth_max``, zero, negative or NaN become 0 (no depth); depths so near that ``q`` would pass 65535
    are stored as 65535 (the C++ leaves that undefined). The round trip keeps ``|1/d - 1/d'| <= 1/A``.
    """
    values = np.asarray(depth)
    if values.ndim != 2 or values.size == 0 or values.dtype not in (np.uint16, np.float32):
        raise ValueError(f"expected (H, W) uint16 or float32 depth, got {values.shape} {values.dtype}")
    if compression not in ("png", "rvl"):
        raise ValueError(f"compressedDepth compression is 'png' or 'rvl', got {compression!r}")
    if values.dtype == np.uint16:
        encoding, stored, quant_a, quant_b = "16UC1", values, np.float32(0), np.float32(0)
    else:
        encoding = "32FC1"
        z0 = np.float32(depth_quantization)
        quant_a = z0 * (z0 + np.float32(1))
        quant_b = np.float32(1) - quant_a / np.float32(depth_max)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            inverse = quant_a / values + quant_b
            valid = (values > 0) & (values < np.float32(depth_max))
        stored = np.where(valid, np.floor(np.clip(inverse, 1, 65_535)), 0).astype(np.uint16)
    if compression == "png":
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(stored))
        if not ok:
            raise ValueError("OpenCV could not encode the depth image as PNG")
        payload = encoded.tobytes()
    else:
        payload = struct.pack("<II", stored.shape[1], stored.shape[0]) + rvl_encode(stored)
    header = COMPRESSED_DEPTH_HEADER.pack(_INVERSE_DEPTH, quant_a, quant_b)
    return f"{encoding}; compressedDepth {compression}", header + payload


# --- calibration ---------------------------------------------------------------------------------


def camera_info_to_intrinsics(msg: Any) -> CameraIntrinsics:
    """CameraInfo's K as intrinsics, every used field checked; bad input raises only MessageError.

    An all-zero K (uncalibrated camera) is an error; so are NaN/inf anywhere in K, D, R or P (a driver
    that sends them is broken, and one NaN would poison every back-projection).
    """
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise MessageError("CameraInfo has zero width or height")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise MessageError(f"CameraInfo size {width}x{height} is implausible (max side {MAX_IMAGE_SIDE})")
    k = np.asarray(msg.k, dtype=np.float64)
    if k.shape != (9,):
        raise MessageError(f"CameraInfo K must hold 9 values, got {k.size}")
    for name in ("k", "d", "r", "p"):
        values = np.asarray(getattr(msg, name), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise MessageError(f"CameraInfo {name.upper()} holds NaN or infinite values")
    if np.all(k == 0) or k[0] <= 0 or k[4] <= 0:
        raise MessageError("CameraInfo has no calibration (K is zero): calibrate the camera or set its intrinsics")
    if k[0] > MAX_FOCAL_PX or k[4] > MAX_FOCAL_PX:
        raise MessageError(f"CameraInfo focal length fx={k[0]:g}, fy={k[4]:g} is implausible (> {MAX_FOCAL_PX:g} px)")
    if abs(k[2]) > 4 * MAX_IMAGE_SIDE or abs(k[5]) > 4 * MAX_IMAGE_SIDE:
        raise MessageError(f"CameraInfo principal point ({k[2]:g}, {k[5]:g}) lies far outside the image")
    try:
        return CameraIntrinsics.from_matrix(k.reshape(3, 3), width, height)
    except ValueError as error:  # belt and braces: the core's own checks, reported as a message error
        raise MessageError(f"CameraInfo is not a valid pinhole camera: {error}") from error
