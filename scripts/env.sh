# Source me: the environment every make target runs in (venv + our built interfaces + DDS profile).
# Works from any directory; a real ROS 2 user sources /opt/ros/<distro>/setup.bash instead of the venv.
_showroom_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -f "$_showroom_root/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$_showroom_root/.venv/bin/activate"
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
if [ -f "$_showroom_root/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  . "$_showroom_root/install/setup.bash"
fi
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_showroom_root/config/fastdds_shm.xml}"
unset _showroom_root
