"""The one camera-message decoder (io/sensor_messages) and its RVL codec (io/rvl), without ROS.

Messages are duck-typed here (``SimpleNamespace`` with the fields rclpy and rosbags messages share). RVL
is checked against streams worked out by hand from the C++ codec's definition (so the encoder and the
decoder cannot share a mistake), then round-tripped over generated depth images; compressedDepth
messages are round-tripped and attacked with mutated and random payloads.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace as Message

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from showroom_ros.io.rvl import RvlError, rvl_decode, rvl_encode
from showroom_ros.io.sensor_messages import (
    DEFAULT_DEPTH_MAX,
    DEFAULT_DEPTH_QUANTIZATION,
    MAX_DECODED_PIXELS,
    MessageError,
    compressed_depth_format,
    compressed_depth_to_array,
    encode_compressed_depth,
    image_to_rgb,
)

# --- RVL against hand-computed streams -------------------------------------------------------------
# Each number is 3-bit groups, least significant first, one nibble each with 8 set when another follows;
# nibbles fill 32-bit words from the top; words are little-endian.
HAND_COMPUTED = [
    # zeros 2 -> 2; non-zeros 3 -> 3; 5: +5 -> zigzag 10 = 0o12 -> A 1; 7: +2 -> 4; 7: +0 -> 0;
    # zeros 1 -> 1; non-zeros 0 -> 0.  Nibbles 2 3 A 1 4 0 1 0 = word 0x23A14010.
    ([0, 0, 5, 7, 7, 0], "1040a123"),
    # zeros 0 -> 0; non-zeros 2 -> 2; 300: +300 -> 600 = 0o1130 -> 8 B 9 1; 1: -299 -> 597 = 0o1125
    # -> D A 9 1.  Nibbles 0 2 8 B 9 1 D A | 9 1 (padded) = words 0x028B91DA, 0x91000000.
    ([300, 1], "da918b0200000091"),
    # One run of 5 zeros and an empty non-zero run: nibbles 5 0, padded = 0x50000000.
    ([0, 0, 0, 0, 0], "00000050"),
    # 65535 first: +65535 -> 131070 = 0o377776 -> E F F F F 3; then 1: -65534 -> 131067 = 0o377773 -> B F F F F 3.
    # Nibbles 0 2 E F F F F 3 | B F F F F 3 (padded) = words 0x02EFFFF3, 0xBFFFF300.
    ([65535, 1], "f3ffef0200f3ffbf"),
]


@pytest.mark.parametrize("pixels, stream", HAND_COMPUTED)
def test_rvl_matches_streams_computed_by_hand(pixels: list[int], stream: str) -> None:
    values = np.array(pixels, dtype=np.uint16)
    assert rvl_encode(values).hex() == stream
    np.testing.assert_array_equal(rvl_decode(bytes.fromhex(stream), len(pixels)), values)


def test_compressed_depth_message_matches_bytes_computed_by_hand() -> None:
    """32FC1 [2 m, none, 5 m] as RVL with the publisher's defaults: A = 100 x 101 = 10100, B = 1 - A / 10 = -1009,
    so q = A / d + B is 4041 and 1011, and A / (q - B) gives 2 and 5 back exactly."""
    header = "00000000" + "00d01d46" + "00407cc4"  # INV_DEPTH, 10100.0f, -1009.0f (little-endian)
    size = "03000000" + "01000000"  # cols 3, rows 1
    # zeros 0 -> 0; non-zeros 1 -> 1; 4041: zigzag 8082 = 0o17622 -> A A E F 1; zeros 1 -> 1; non-zeros 1 -> 1;
    # 1011: -3030 -> 6059 = 0o13653 -> B D E B 1.  Words 0x01AAEF11, 0x1BDEB100.
    stream = "11efaa01" + "00b1de1b"
    data = bytes.fromhex(header + size + stream)
    image_format, encoded = encode_compressed_depth(np.array([[2.0, np.nan, 5.0]], np.float32), "rvl")
    assert (image_format, encoded) == ("32FC1; compressedDepth rvl", data)
    decoded = compressed_depth_to_array(Message(format=image_format, data=data))
    np.testing.assert_array_equal(decoded, np.array([[2.0, np.nan, 5.0]], np.float32))


@st.composite
def depth_images(draw: st.DrawFn) -> np.ndarray:
    """(H, W) uint16 depth: anything hypothesis picks, all zeros, saturated, smooth, or noisy with holes."""
    shape = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    kind = draw(st.sampled_from(["any", "zeros", "max", "smooth", "holes"]))
    if kind == "any":
        return draw(arrays(np.uint16, shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "zeros":
        return np.zeros(shape, np.uint16)
    if kind == "max":
        return np.where(rng.random(shape) < 0.1, 0, 65535).astype(np.uint16)
    if kind == "smooth":
        ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * rng.integers(1, 50) + rng.integers(1, 60000)
        return np.clip(ramp + rng.integers(-3, 4, shape), 1, 65535).astype(np.uint16)
    values = rng.integers(1, 65536, shape)
    return np.where(rng.random(shape) < rng.random(), 0, values).astype(np.uint16)


@settings(max_examples=300, deadline=None)
@given(depth_images())
def test_rvl_round_trips_generated_depth(depth: np.ndarray) -> None:
    stream = rvl_encode(depth)
    assert len(stream) % 4 == 0
    np.testing.assert_array_equal(rvl_decode(stream, depth.size).reshape(depth.shape), depth)
    np.testing.assert_array_equal(rvl_decode(stream + b"\xff" * 8, depth.size).reshape(depth.shape), depth)


@settings(max_examples=150, deadline=None)
@given(depth_images(), st.sampled_from(["png", "rvl"]))
def test_16_bit_compressed_depth_round_trips_exactly(depth: np.ndarray, compression: str) -> None:
    image_format, data = encode_compressed_depth(depth, compression)
    assert image_format == f"16UC1; compressedDepth {compression}"
    decoded = compressed_depth_to_array(Message(format=image_format, data=data))
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, depth)


@settings(max_examples=150, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    seed=st.integers(0, 2**32 - 1),
    depth_max=st.floats(1.0, 50.0),
    quantization=st.floats(10.0, 200.0),
    compression=st.sampled_from(["png", "rvl"]),
)
def test_32_bit_compressed_depth_round_trips_within_one_quantisation_step(
    shape: tuple[int, int], seed: int, depth_max: float, quantization: float, compression: str
) -> None:
    """Inverse depth is quantised in steps of 1/A: the depth comes back with |1/d - 1/d'| <= 1/A; no depth
    (NaN, 0, negative, inf, at or beyond depth_max) comes back NaN; nearer than q = 65535 comes back as that."""
    rng = np.random.default_rng(seed)
    a = np.float32(quantization) * (np.float32(quantization) + 1)
    b = 1 - a / np.float32(depth_max)
    nearest = float(a / (np.float32(65535) - b))
    depth = rng.uniform(nearest * 1.01, depth_max * 0.999, shape).astype(np.float32)
    invalid = rng.random(shape) < 0.2
    depth[invalid] = rng.choice(
        np.array([np.nan, 0.0, -1.0, np.inf, depth_max, depth_max * 2], np.float32), invalid.sum()
    )
    too_near = ~invalid & (rng.random(shape) < 0.05)
    depth[too_near] = nearest * rng.uniform(0.01, 0.9, too_near.sum())
    image_format, data = encode_compressed_depth(depth, compression, depth_max, quantization)
    decoded = compressed_depth_to_array(Message(format=image_format, data=data))
    assert decoded.dtype == np.float32 and decoded.shape == shape
    assert np.all(np.isnan(decoded[invalid]))
    np.testing.assert_allclose(decoded[too_near], nearest, rtol=1e-5)
    kept = ~invalid & ~too_near
    assert np.all(np.abs(1 / decoded[kept] - 1 / depth[kept]) <= 1.01 / a)


def test_formats_are_read_as_codec_cpp_reads_them() -> None:
    for encoding in ("16UC1", "mono16", "32FC1"):
        assert compressed_depth_format(f"{encoding}; compressedDepth png") == (encoding, "png")
        assert compressed_depth_format(f"{encoding}; compressedDepth rvl") == (encoding, "rvl")
        assert compressed_depth_format(f"{encoding}; compressedDepth") == (encoding, "png")  # before rvl existed
        assert compressed_depth_format(encoding) == (encoding, "png")  # the oldest publishers
        for unknown in ("compressedDepth jpeg", "jpeg compressed bgr8", "compressedDepth  png", ""):
            with pytest.raises(MessageError, match="no known compression"):
                compressed_depth_format(f"{encoding}; {unknown}")
    for not_depth in ("rgb8; compressedDepth png", "png", "", "8UC1; compressedDepth rvl"):
        with pytest.raises(MessageError, match="depth encoding"):
            compressed_depth_format(not_depth)


def test_decompression_bombs_are_refused_before_allocating() -> None:
    """A few bytes can claim gigapixels; the size is checked before anything is decoded."""
    header = struct.pack("<iff", 0, 0.0, 0.0)
    zeros_run = rvl_encode(np.zeros(1, np.uint16))  # any stream: the size is refused first
    for width, height in ((65_536, 65_536), (MAX_DECODED_PIXELS // 1000 + 1, 1000), (0, 5), (5, 0)):
        data = header + struct.pack("<II", width, height) + zeros_run
        with pytest.raises(MessageError, match=r"claims|empty"):
            compressed_depth_to_array(Message(format="16UC1; compressedDepth rvl", data=data))
    _, png = encode_compressed_depth(np.ones((2, 3), np.uint16), "png")
    ihdr = 12 + 16  # ConfigHeader, PNG signature, chunk length and type
    bomb = png[:ihdr] + struct.pack(">II", 100_000, 100_000) + png[ihdr + 8 :]
    with pytest.raises(MessageError, match="claims"):
        compressed_depth_to_array(Message(format="16UC1; compressedDepth png", data=bomb))


def test_streams_no_encoder_writes_are_refused() -> None:
    with pytest.raises(RvlError, match="runs of 0 zeros and 0 non-zeros"):  # would never end in C++
        rvl_decode(bytes(64), 4)
    with pytest.raises(RvlError, match="runs of 5 zeros"):  # past the image's end
        rvl_decode(bytes.fromhex("00000050"), 4)
    with pytest.raises(RvlError, match="no complete number"):
        rvl_decode(b"\xff" * 16, 4)
    with pytest.raises(RvlError, match="ends inside"):  # 0 2 2 F F F F F: 2 non-zeros, one complete difference
        rvl_decode(bytes.fromhex("ffff2f02"), 2)
    with pytest.raises(RvlError, match="holds a zero"):  # 0 2 2 1: +1 then -1, a zero inside a non-zero run
        rvl_decode(bytes.fromhex("00002102"), 2)


_FORMATS = (
    "16UC1; compressedDepth png",
    "16UC1; compressedDepth rvl",
    "32FC1; compressedDepth png",
    "32FC1; compressedDepth rvl",
    "mono16; compressedDepth",
    "16UC1",
    "rgb8; jpeg compressed bgr8",
    "",
)


def _mutated(rng: np.random.Generator, data: bytes) -> bytes:
    """A valid message's bytes truncated, with flipped bytes, a rewritten RVL size, or garbage appended."""
    data = bytearray(data)
    mutation = int(rng.integers(5))
    if mutation == 0:
        return bytes(data[: int(rng.integers(0, len(data) + 1))])
    if mutation == 1:
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    elif mutation == 2 and len(data) >= 20:
        data[12:20] = struct.pack("<II", *(int(v) for v in rng.choice([0, 1, 7, 40, 65_536, 2**32 - 1], 2)))
    elif mutation == 3:
        data[4:12] = struct.pack("<ff", *rng.choice(np.array([np.nan, np.inf, 0.0, -1.0, 1e30], np.float32), 2))
    else:
        data += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return bytes(data)


def test_any_compressed_depth_payload_decodes_or_raises_message_error() -> None:
    """1,500 seeded cases: valid messages (both encodings, both compressions), mutated ones, random bytes under
    any format. Each decodes to (H, W) uint16/float32 or raises MessageError; unmutated ones decode right."""
    converted = 0
    for seed in range(1_500):
        rng = np.random.default_rng(seed)
        shape = (int(rng.integers(1, 24)), int(rng.integers(1, 24)))
        depth = np.where(rng.random(shape) < 0.3, 0, rng.integers(1, 65536, shape)).astype(np.uint16)
        if rng.random() < 0.5:
            depth = (depth.astype(np.float32) / 6000.0).astype(np.float32)
        image_format, data = encode_compressed_depth(depth, ("png", "rvl")[seed % 2])
        intact = rng.random() < 0.3
        if not intact:
            if rng.random() < 0.2:
                data = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
            else:
                data = _mutated(rng, data)
            if rng.random() < 0.3:
                image_format = _FORMATS[int(rng.integers(len(_FORMATS)))]
        try:
            decoded = compressed_depth_to_array(Message(format=image_format, data=data))
        except MessageError as error:
            assert str(error) and not intact, f"seed {seed}: {error}"
            continue
        except Exception as error:  # exactly what the property forbids
            raise AssertionError(f"seed {seed}: {type(error).__name__}: {error}") from error
        assert decoded.ndim == 2 and decoded.dtype in (np.uint16, np.float32), seed
        if intact:
            expected = depth if depth.dtype == np.uint16 else decoded  # float: the round-trip test's business
            np.testing.assert_array_equal(decoded, expected)
        converted += 1
    assert converted >= 0.3 * 1_500, f"only {converted} compressedDepth messages decoded"


@settings(max_examples=60, deadline=None)
@given(
    colour=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    pattern=st.sampled_from(["rggb", "bggr", "gbrg", "grbg"]),
    shape=st.tuples(st.integers(3, 12), st.integers(3, 12)),
)
def test_bayer_images_demosaic_to_their_colour(
    colour: tuple[int, int, int], pattern: str, shape: tuple[int, int]
) -> None:
    """A flat colour photographed through each ROS Bayer pattern decodes to that colour away from the border."""
    height, width = shape[0] * 2, shape[1] * 2
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty((height, width), np.uint8)
    for row in range(2):
        for column in range(2):
            mosaic[row::2, column::2] = colour[channel[pattern[2 * row + column]]]
    msg = Message(
        encoding=f"bayer_{pattern}8", height=height, width=width, step=width, is_bigendian=0, data=mosaic.tobytes()
    )
    rgb = image_to_rgb(msg)
    assert rgb.shape == (height, width, 3)
    assert np.all(rgb[2:-2, 2:-2] == np.array(colour, np.uint8))


def test_publisher_defaults_are_codec_cpp_s() -> None:
    assert (DEFAULT_DEPTH_MAX, DEFAULT_DEPTH_QUANTIZATION) == (10.0, 100.0)
