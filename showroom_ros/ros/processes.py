"""Start the package's nodes as separate processes without `ros2 launch`.

`launch`/`launch_ros` are not installable from PyPI, so the demo and the tests start the same
installed executables that launch/showroom.launch.py names, with the same parameter file and
Fast DDS profile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
MODULES = {"showroom_node": "showroom_ros.ros.showroom_node", "showroom_replay": "showroom_ros.ros.replay_node"}


def find_share_file(*parts: str) -> Path:
    """A file of the package (config/, data/...): the source tree first, then the installed share."""
    candidate = PACKAGE_ROOT.joinpath(*parts)
    if candidate.exists():
        return candidate
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("showroom_ros")).joinpath(*parts)
    except (ImportError, LookupError):
        return candidate


def ros_environment(isolated: bool = True) -> dict[str, str]:
    """The environment the nodes run in; ``isolated`` keeps discovery on this machine."""
    env = dict(os.environ)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(find_share_file("config", "fastdds_shm.xml")))
    if isolated:
        env.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def export_ros_environment(isolated: bool = True) -> dict[str, str]:
    """Put :func:`ros_environment`'s ROS settings into this process too (before ``rclpy.init``), so a
    client here and the nodes it starts share one isolated graph."""
    env = ros_environment(isolated)
    for key in (
        "ROS_DOMAIN_ID",
        "ROS_AUTOMATIC_DISCOVERY_RANGE",
        "RMW_IMPLEMENTATION",
        "FASTDDS_DEFAULT_PROFILES_FILE",
    ):
        if key in env:
            os.environ[key] = env[key]
    return env


def node_command(name: str) -> list[str]:
    """The installed ROS executable (what `ros2 run` starts) when built, else its module."""
    for prefix in [
        PACKAGE_ROOT / "install" / "showroom_ros",
        *map(Path, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)),
    ]:
        installed = prefix / "lib" / "showroom_ros" / name
        if str(prefix) and installed.is_file():
            return [sys.executable, str(installed)]
    return [sys.executable, "-m", MODULES[name]]


def parameter_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(parameter_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return f"'{value}'" if value == "" or value[0] in "[{" else value
    return repr(value)


class NodeProcess:
    """A node in its own process; its output goes to a log file."""

    def __init__(
        self,
        name: str,
        parameters: dict[str, Any],
        log_dir: Path,
        params_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        args = [*node_command(name), "--ros-args"]
        if params_file is not None:
            args += ["--params-file", str(params_file)]
        for key, value in parameters.items():
            args += ["-p", f"{key}:={parameter_literal(value)}"]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            args, env=env or ros_environment(), stdout=self._log, stderr=subprocess.STDOUT, cwd=PACKAGE_ROOT
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def signal_and_wait(self, signum: int, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``signum`` and wait for the exit: (exit code, seconds from the signal to the exit), what the
        "every state stops within 2 s" rule is judged on."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - sent

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(2)  # SIGINT: the node's normal shutdown path
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
