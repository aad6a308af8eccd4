"""RVL, the lossless depth codec behind image_transport's ``compressedDepth rvl``, in numpy.

RVL (Wilson, "Fast lossless depth image compression", 2017) is what robots pick when PNG costs too
much CPU. The stream this module reads and writes is the one ``compressed_depth_image_transport``'s
``RvlCodec`` produces (ros-perception/image_transport_plugins):

- the pixels, row-major, are cut into pairs of runs: a run of zeros (possibly empty at the start),
  then a run of non-zeros (possibly empty at the end); each pair is written as the two run lengths,
  followed by each non-zero pixel's difference to the previous non-zero pixel (0 before the first),
  zigzag-mapped to an unsigned number (``2d`` for ``d >= 0``, ``-2d - 1`` below);
- every number is written 3 bits at a time, least significant first, one 4-bit nibble each, whose
  top bit (8) says that another nibble of the same number follows; so 0 is one nibble;
- nibbles fill 32-bit words from the most significant end (the first nibble is bits 28-31), words
  are stored little-endian, and the last word is padded with zero nibbles.

The codec works on whole arrays (no Python loop per pixel); only the decoder's walk over run pairs
is a Python loop, and a valid stream has at most one pair per zero run.
"""

from __future__ import annotations

import numpy as np

MAX_NIBBLES = 11
"""Nibbles in the longest number a valid stream holds (a run of up to 2**32 pixels: 33 bits)."""
_MAX_ZIGZAG = 2 * 65_535
"""Largest zigzag-mapped difference between two 16-bit pixels."""
_NIBBLE_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)  # word bits of nibbles 0..7


class RvlError(ValueError):
    """An RVL stream that a valid encoder cannot have written (truncated, corrupt or hostile)."""


def rvl_encode(depth: np.ndarray) -> bytes:
    """The RVL stream of 16-bit depth values (any shape, read row-major); empty input gives b""."""
    values = np.asarray(depth)
    if values.dtype != np.uint16:
        raise ValueError(f"RVL codes 16-bit depth, got {values.dtype}")
    flat = values.reshape(-1)
    if flat.size == 0:
        return b""
    nonzero = flat != 0
    edges = np.flatnonzero(nonzero[1:] != nonzero[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size])))
    if nonzero[0]:  # every pair starts with a zero run, empty here
        runs = np.concatenate(([0], runs))
    if len(runs) % 2:  # and ends with a non-zero run, empty after trailing zeros
        runs = np.append(runs, 0)
    zeros, nonzeros = runs[0::2], runs[1::2]
    pixels = flat[nonzero].astype(np.int64)
    delta = np.diff(pixels, prepend=0)
    zigzag = np.where(delta >= 0, 2 * delta, -2 * delta - 1)
    # One number sequence: per pair its two counts, then its pixels' zigzag differences.
    count_at = 2 * np.arange(len(zeros)) + np.concatenate(([0], np.cumsum(nonzeros)[:-1]))
    numbers = np.empty(2 * len(zeros) + len(pixels), dtype=np.int64)
    is_count = np.zeros(len(numbers), dtype=bool)
    is_count[count_at] = is_count[count_at + 1] = True
    numbers[count_at], numbers[count_at + 1] = zeros, nonzeros
    numbers[~is_count] = zigzag
    return _pack_nibbles(_variable_length_nibbles(numbers))


def rvl_decode(stream: bytes, pixel_count: int) -> np.ndarray:
    """``pixel_count`` 16-bit values (flat) from an RVL stream; raises :class:`RvlError` on bad data.

    Bytes after the last needed word are ignored, as the C++ decoder does. Anything a valid encoder
    cannot write is refused rather than guessed: a pair of empty runs, runs past the image's end,
    a number longer than :data:`MAX_NIBBLES`, a difference no 16-bit pair has, a zero in a non-zero run.
    """
    if pixel_count <= 0:
        raise RvlError(f"an RVL image needs pixels, got {pixel_count}")
    # A valid stream needs at most 6 nibbles per pixel's difference and 2 x 11 per run pair (one pair per
    # zero run, so at most pixel_count / 2 + 1 pairs): reading more than that only costs memory.
    max_nibbles = 6 * pixel_count + MAX_NIBBLES * (pixel_count + 2)
    words = np.frombuffer(stream, dtype="<u4", count=min(len(stream) // 4, max_nibbles // 8 + 1))
    nibbles = ((words[:, None] >> _NIBBLE_SHIFTS) & 0xF).reshape(-1).astype(np.int64)
    ends = np.flatnonzero(nibbles < 8)  # the last nibble of every complete number
    if len(ends) == 0:
        raise RvlError("RVL stream holds no complete number")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    owner = np.repeat(np.arange(len(ends)), lengths)
    position = np.arange(len(owner)) - np.repeat(starts, lengths)
    shifted = (nibbles[: len(owner)] & 7) << np.minimum(3 * position, 60)
    numbers = np.bitwise_or.reduceat(shifted, starts)
    numbers[lengths > MAX_NIBBLES] = -1  # longer than any valid number: refused if it is ever used
    listed = numbers.tolist()

    index, remaining = 0, pixel_count
    count_at: list[int] = []
    run_lengths: list[int] = []
    while remaining:
        if index + 1 >= len(listed):
            raise RvlError(f"RVL stream ends with {remaining} of {pixel_count} pixels still to decode")
        zeros, nonzeros = listed[index], listed[index + 1]
        if zeros < 0 or nonzeros < 0 or zeros + nonzeros == 0 or zeros + nonzeros > remaining:
            raise RvlError(
                f"corrupt RVL stream: runs of {zeros} zeros and {nonzeros} non-zeros with {remaining} pixels left"
            )
        count_at.append(index)
        run_lengths += (zeros, nonzeros)
        index += 2 + nonzeros
        remaining -= zeros + nonzeros
    if index > len(listed):
        raise RvlError(f"RVL stream ends inside a run of non-zero pixels ({pixel_count} pixels)")
    used = np.asarray(listed[:index], dtype=np.int64)
    is_count = np.zeros(index, dtype=bool)
    counts = np.asarray(count_at, dtype=np.int64)
    is_count[counts] = is_count[counts + 1] = True
    zigzag = used[~is_count]
    if np.any((zigzag < 0) | (zigzag > _MAX_ZIGZAG)):
        raise RvlError("corrupt RVL stream: a pixel difference beyond 16 bits")
    values = np.cumsum((zigzag >> 1) ^ -(zigzag & 1)) & 0xFFFF  # uint16 wrap-around, as in C++
    if np.any(values == 0):
        raise RvlError("corrupt RVL stream: a run of non-zero pixels holds a zero")
    nonzero = np.repeat(np.tile([False, True], len(count_at)), run_lengths)
    out = np.zeros(pixel_count, dtype=np.uint16)
    out[nonzero] = values
    return out


def _variable_length_nibbles(numbers: np.ndarray) -> np.ndarray:
    """Each non-negative number as 3-bit groups, least significant first, 8 set on all but its last."""
    groups = np.ones(len(numbers), dtype=np.int64)
    rest = numbers >> 3
    while np.any(rest):
        groups += rest > 0
        rest >>= 3
    starts = np.concatenate(([0], np.cumsum(groups)[:-1]))
    owner = np.repeat(np.arange(len(numbers)), groups)
    position = np.arange(len(owner)) - np.repeat(starts, groups)
    nibbles = (numbers[owner] >> (3 * position)) & 7
    return nibbles | np.where(position < groups[owner] - 1, 8, 0)


def _pack_nibbles(nibbles: np.ndarray) -> bytes:
    """Nibbles into little-endian 32-bit words, first nibble most significant, last word zero-padded."""
    padded = np.zeros(-(-len(nibbles) // 8) * 8, dtype=np.uint32)
    padded[: len(nibbles)] = nibbles
    words = np.bitwise_or.reduce(padded.reshape(-1, 8) << _NIBBLE_SHIFTS, axis=1)
    return words.astype("<u4").tobytes()
