"""Start the showroom node with config/showroom.yaml (and RViz with rviz:=true).

    ros2 launch showroom_ros showroom.launch.py image_topic:=/camera/color/image_raw \
        depth_topic:=/camera/aligned_depth_to_color/image_raw camera_info_topic:=/camera/color/camera_info \
        backend:=auto output_dir:=~/showroom rviz:=true

Topic arguments left empty keep the values of the parameter file (params_file:=... for several cameras).
lifecycle:=true starts it as a managed node (waiting in 'unconfigured'); autostart:=true (the default)
then configures and activates it, as nav2's lifecycle_manager would; autostart:=false leaves that to you
(ros2 lifecycle set /showroom configure, then activate).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = "showroom_ros"

# launch argument -> (node parameter, is a list parameter)
OVERRIDES = {
    "image_topic": ("image_topics", True),
    "depth_topic": ("depth_topics", True),
    "camera_info_topic": ("camera_info_topics", True),
    "pose_topic": ("pose_topics", True),
    "pose_source": ("pose_source", False),
    "map_frame": ("map_frame", False),
    "image_transport": ("image_transport", False),
    "backend": ("backend", False),
    "output_dir": ("output_dir", False),
}


def _is_true(context, name: str) -> bool:
    return LaunchConfiguration(name).perform(context).strip().lower() in ("1", "true", "yes", "on")


def _showroom_node(context, *args, **kwargs):
    overrides = {}
    for argument, (parameter, is_list) in OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context).strip()
        if value:
            overrides[parameter] = [value] if is_list else value
    params_file = LaunchConfiguration("params_file").perform(context)
    managed = _is_true(context, "lifecycle")
    overrides["lifecycle"] = managed
    common = {
        "package": PACKAGE,
        "executable": "showroom_node",
        "name": "showroom",
        "output": "screen",
        "emulate_tty": True,
        "parameters": [params_file, overrides],
    }
    if not managed:
        return [Node(**common)]
    node = LifecycleNode(namespace="", **common)
    actions = [node]
    if _is_true(context, "autostart"):
        # configure now; activate once it reports 'inactive' (what nav2's lifecycle_manager does).
        actions += [
            RegisterEventHandler(
                OnStateTransition(
                    target_lifecycle_node=node,
                    goal_state="inactive",
                    entities=[
                        EmitEvent(
                            event=ChangeState(
                                lifecycle_node_matcher=matches_action(node),
                                transition_id=Transition.TRANSITION_ACTIVATE,
                            )
                        )
                    ],
                )
            ),
            EmitEvent(
                event=ChangeState(
                    lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE
                )
            ),
        ]
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "showroom.yaml"),
                              description="Parameter file of the showroom node"),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz with rviz/showroom.rviz"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="Start showroom as a managed (lifecycle) node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="With lifecycle:=true, configure and activate it at launch"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS profile (shared memory with a 32 MB segment); '' to keep yours"),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=f"Overrides parameter '{parameter}' when set")
        for name, (parameter, _) in OVERRIDES.items()
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "rviz", "showroom.rviz")],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(
        [
            *arguments,
            SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
            OpaqueFunction(function=_showroom_node),
            rviz,
        ]
    )
