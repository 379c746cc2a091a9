"""Launch split_infer's cloud node (decoder + tail), serving one or more robots.

    ros2 launch split_infer cloud.launch.py robots:="r1 r2"
    ros2 launch split_infer cloud.launch.py bundle:=/path/to/bundle robots:="r1 r2"

For each robot namespace ``<ns>`` in ``robots`` (space or comma separated; empty = the cloud
node's own namespace) the node subscribes ``<ns>/features`` and publishes ``<ns>/results``,
``<ns>/receipts`` and ``<ns>/metrics/*``, and a ``probe_echo`` in ``<ns>`` answers the
robot's probe trains (``<ns>/probe`` → ``<ns>/probe_receipts``). Robot namespaces are made
absolute (``r1`` → ``/r1``) so they match edges launched with ``namespace:=r1``. ``bundle``
defaults to the bundle the package installs (``share/split_infer/bundles/default``); it must be
the edges' bundle. Tuning lives in ``config/cloud.yaml`` (``params_file``). ``auth_key_file``
turns frame authentication on (keys per robot; see the README's threat model).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import (
    EnvironmentVariable,
    LaunchConfiguration,
    PathJoinSubstitution,
)
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def robot_namespaces(text):
    """'r1 r2' or 'r1,/r2' → ['/r1', '/r2']; '' → [] (the cloud's own namespace)."""
    names = text.replace(",", " ").split()
    return ["/" + name.strip("/") for name in names]


def cloud_node(context):
    parameters = [
        LaunchConfiguration("params_file"),
        {"bundle": ParameterValue(LaunchConfiguration("bundle"), value_type=str),
         "auth_key_file": ParameterValue(LaunchConfiguration("auth_key_file"),
                                         value_type=str)},
    ]
    namespaces = robot_namespaces(LaunchConfiguration("robots").perform(context))
    if namespaces:
        parameters.append({"edge_namespaces": namespaces})
    echoes = [Node(
        package="split_infer",
        executable="probe_echo",
        name="probe_echo",
        # One per robot, in the robot's namespace (relative topics: probe, probe_receipts).
        namespace=robot or LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
    ) for robot in (namespaces or [""])]
    return [Node(
        package="split_infer",
        executable="cloud_node",
        name="cloud_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=parameters,
        output="screen",
        emulate_tty=True,
    ), *echoes]


def generate_launch_description():
    return LaunchDescription([
        # Camera-size messages between processes: a larger shared-memory segment (the
        # profile's comment says why), unless the environment names a profile already.
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", EnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE",
            default_value=PathJoinSubstitution([FindPackageShare("split_infer"), "config",
                                                "fastdds_robot.xml"]))),
        DeclareLaunchArgument(
            "bundle",
            default_value=PathJoinSubstitution([FindPackageShare("split_infer"), "bundles",
                                                "default"]),
            description="path of the bundle directory; default: the bundle the package ships"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="the cloud node's namespace"),
        DeclareLaunchArgument("robots", default_value="",
                              description="robot namespaces to serve, e.g. 'r1 r2'; empty: "
                                          "the cloud node's own namespace"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("split_infer"), "config",
                                                "cloud.yaml"]),
            description="YAML file with the cloud node's tuning parameters"),
        DeclareLaunchArgument("auth_key_file", default_value="",
                              description="accept only frames signed with a key of this file "
                                          "(split_infer.frame_auth); empty: off"),
        OpaqueFunction(function=cloud_node),
    ])
