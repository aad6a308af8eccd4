"""The launch file, checked without `launch` (not installable here): it parses, and every
executable and file it names is one the CMake install really provides."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "showroom.launch.py"


def _cmake_installs() -> tuple[set[str], set[str]]:
    cmake = (REPO / "CMakeLists.txt").read_text()
    programs = re.search(r"install\(\s*PROGRAMS\s+(.*?)\s+DESTINATION\s+lib/\$\{PROJECT_NAME\}", cmake, re.S)
    directories = re.search(r"install\(\s*DIRECTORY\s+((?:\w+\s+)+)DESTINATION\s+share/\$\{PROJECT_NAME\}", cmake)
    assert programs and directories, "CMakeLists.txt must install the executables and launch/config/rviz"
    executables = {Path(p).name for p in programs.group(1).split()}
    for program in programs.group(1).split():
        assert (REPO / program).is_file(), f"CMake installs missing {program}"
    return executables, set(directories.group(1).split())


def test_launch_file_names_only_installed_things():
    tree = ast.parse(LAUNCH.read_text())
    executables, share_dirs = _cmake_installs()
    assert {"launch", "config", "rviz", "data"} <= share_dirs
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions

    constants = {
        n.targets[0].id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)
    }

    def literal(value: ast.AST):
        if isinstance(value, ast.Constant):
            return value.value
        return constants.get(getattr(value, "id", None))

    # Dict literals assigned to a name (``common = {"package": ...}``), for ``Node(**common)``.
    dicts = {
        n.targets[0].id: {literal(k): literal(v) for k, v in zip(n.value.keys, n.value.values, strict=True)}
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Dict)
    }
    nodes = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        name = getattr(call.func, "id", getattr(call.func, "attr", ""))
        if name in ("Node", "LifecycleNode"):
            node = {}
            for keyword in call.keywords:
                if keyword.arg is None:  # **mapping
                    node.update(dicts.get(getattr(keyword.value, "id", None), {}))
                else:
                    node[keyword.arg] = literal(keyword.value)
            nodes.append(node)
    # Plain and managed start the same executable.
    assert {"Node", "LifecycleNode"} <= {getattr(c.func, "id", "") for c in ast.walk(tree) if isinstance(c, ast.Call)}
    ours = [n for n in nodes if n.get("package") == "showroom_ros"]
    assert ours and all(n["executable"] in executables for n in ours)
    assert any(n.get("package") == "rviz2" and n.get("executable") == "rviz2" for n in nodes)

    # Every file joined onto the package share directory exists in the source tree.
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "join"):
        parts = [a.value for a in call.args if isinstance(a, ast.Constant)]
        if parts:
            assert parts[0] in share_dirs and (REPO.joinpath(*parts)).is_file(), parts


def test_launch_arguments_cover_topics_backend_output_and_rviz():
    source = LAUNCH.read_text()
    tree = ast.parse(source)
    declared = {
        c.args[0].value
        for c in ast.walk(tree)
        if isinstance(c, ast.Call)
        and getattr(c.func, "id", "") == "DeclareLaunchArgument"
        and c.args
        and isinstance(c.args[0], ast.Constant)
    }
    overrides = next(
        n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "OVERRIDES"
    )
    declared |= {k.value for k in overrides.value.keys}
    for argument in (
        "image_topic",
        "depth_topic",
        "camera_info_topic",
        "backend",
        "output_dir",
        "rviz",
        "lifecycle",
        "autostart",
    ):
        assert argument in declared, argument
    # Overridden parameters exist on the node.
    from showroom_ros.ros.parameters import SHOWROOM_PARAMETERS

    names = {p.name for p in SHOWROOM_PARAMETERS}
    for value in overrides.value.values:
        assert value.elts[0].value in names


def test_every_parameter_is_declared_once():
    """One table drives all: a name declared twice would be declared with the first entry's default and
    description only (this happened: publish_tf for keyframe frames and for SLAM)."""
    from collections import Counter

    from showroom_ros.ros.parameters import SHOWROOM_PARAMETERS

    twice = [name for name, count in Counter(p.name for p in SHOWROOM_PARAMETERS).items() if count > 1]
    assert twice == []


def test_parameter_file_matches_declared_parameters():
    from showroom_ros.ros.parameters import SHOWROOM_PARAMETERS

    params = yaml.safe_load((REPO / "config" / "showroom.yaml").read_text())["/**"]["ros__parameters"]
    declared = {p.name: p for p in SHOWROOM_PARAMETERS}
    assert set(params) <= set(declared), set(params) - set(declared)
    for name, value in params.items():
        param = declared[name]
        assert type(value) is type(param.default) or (isinstance(value, list) and isinstance(param.default, list)), name
        if param.choices:
            assert value in param.choices, name
        if param.range and not isinstance(value, bool):
            assert param.range[0] <= value <= param.range[1], name


def test_rviz_config_reads_the_latched_topics():
    config = yaml.safe_load((REPO / "rviz" / "showroom.rviz").read_text())
    displays = {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}
    for name, topic in (
        ("Showroom cloud", "/showroom/cloud"),
        ("Showroom mesh", "/showroom/mesh"),
        ("Keyframe cameras", "/showroom/keyframes"),
        ("Map mesh", "/showroom/map_mesh"),
        ("Map cloud", "/showroom/map"),
        ("Occupancy", "/showroom/occupancy"),
        ("SLAM trajectory", "/showroom/trajectory"),
    ):
        assert displays[name]["Topic"]["Value"] == topic
        assert displays[name]["Topic"]["Durability Policy"] == "Transient Local"
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
    assert displays["Occupancy"]["Class"] == "rviz_default_plugins/Map" and displays["Occupancy"]["Enabled"]
    assert displays["Map mesh"]["Namespaces"] == {"showroom_map_mesh": True} and not displays["Map cloud"]["Enabled"]
