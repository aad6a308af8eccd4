"""nav2_map_server map files: generated grids written, read back, and checked against the format's rules."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from showroom_ros.io.map_files import read_nav2_map, write_nav2_map

SEEDS = [int(s) for s in np.random.default_rng(99).integers(0, 2**31 - 1, 8)]


def _grid(rng: np.random.Generator) -> np.ndarray:
    shape = (int(rng.integers(1, 90)), int(rng.integers(1, 90)))
    return rng.choice(np.array([-1, 0, 100], np.int8), size=shape, p=[0.5, 0.35, 0.15])


@pytest.mark.parametrize("seed", SEEDS)
def test_round_trip_and_the_spec(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(seed)
    data = _grid(rng)
    resolution = float(rng.choice([0.02, 0.05, 0.1]))
    origin = (float(rng.uniform(-50, 50)), float(rng.uniform(-50, 50)))
    yaml_path, pgm_path = write_nav2_map(tmp_path / "floor.yaml", data, resolution, origin)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["floor.pgm", "floor.yaml"], f"seed {seed}: temp files left"

    document = yaml.safe_load(yaml_path.read_text())
    assert document["image"] == "floor.pgm" and document["mode"] == "trinary" and document["negate"] == 0
    assert document["resolution"] == pytest.approx(resolution)
    assert document["origin"] == pytest.approx([origin[0], origin[1], 0.0])
    assert 0 < document["free_thresh"] < document["occupied_thresh"] < 1

    # An independent PGM reader (OpenCV): trinary values only, row 0 = max y.
    pixels = cv2.imread(str(pgm_path), cv2.IMREAD_UNCHANGED)
    assert pixels.dtype == np.uint8 and pixels.shape == data.shape, f"seed {seed}"
    expected = np.select([data == 100, data == 0], [0, 254], 205).astype(np.uint8)[::-1]
    np.testing.assert_array_equal(pixels, expected, err_msg=f"seed {seed}")
    # map_server's rule with the thresholds in the YAML gives back the grid.
    p = (255.0 - pixels) / 255.0
    decoded = np.select([p > document["occupied_thresh"], p < document["free_thresh"]], [100, 0], -1)[::-1]
    np.testing.assert_array_equal(decoded, data, err_msg=f"seed {seed}")

    loaded = read_nav2_map(yaml_path)
    np.testing.assert_array_equal(loaded.data, data, err_msg=f"seed {seed}")
    assert loaded.resolution == pytest.approx(resolution) and loaded.origin == pytest.approx((*origin, 0.0))


def test_top_image_row_is_the_largest_y(tmp_path: Path) -> None:
    data = np.full((4, 3), -1, np.int8)
    data[3, 0] = 100  # max y, min x
    data[0, 2] = 0  # min y, max x
    _, pgm = write_nav2_map(tmp_path / "m.yaml", data, 0.05, (0.0, 0.0))
    pixels = cv2.imread(str(pgm), cv2.IMREAD_UNCHANGED)
    assert pixels[0, 0] == 0 and pixels[3, 2] == 254 and (pixels == 205).sum() == 10


def test_overwrite_and_headers_with_comments(tmp_path: Path) -> None:
    write_nav2_map(tmp_path / "m.yaml", np.zeros((2, 2), np.int8), 0.05, (1.0, 2.0))
    write_nav2_map(tmp_path / "m.yaml", np.full((3, 5), 100, np.int8), 0.1, (0.0, 0.0))
    assert read_nav2_map(tmp_path / "m.yaml").data.shape == (3, 5)
    # A PGM with a comment line, as GIMP or map_saver variants write.
    body = np.array([[0, 254], [205, 254]], np.uint8)
    (tmp_path / "c.pgm").write_bytes(b"P5\n# CREATOR: test\n2 2\n255\n" + body.tobytes())
    (tmp_path / "c.yaml").write_text(
        "image: c.pgm\nmode: trinary\nresolution: 0.05\norigin: [0, 0, 0]\n"
        "negate: 0\noccupied_thresh: 0.65\nfree_thresh: 0.196\n"
    )
    np.testing.assert_array_equal(read_nav2_map(tmp_path / "c.yaml").data, [[-1, 0], [100, 0]])


def test_bad_grids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_nav2_map(tmp_path / "m.yaml", np.zeros((0, 3), np.int8), 0.05, (0.0, 0.0))
    with pytest.raises(ValueError):
        write_nav2_map(tmp_path / "m.yaml", np.zeros((2, 2), np.int8), 0.0, (0.0, 0.0))
    assert list(tmp_path.iterdir()) == []
