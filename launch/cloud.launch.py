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

``control_side:=server`` (with ``adaptive`` true, the default) also starts each robot's control
plane here (``control.launch.py``:
its bandwidth monitor and scheduler, in ``<ns>``, with ``objective``, ``frame_rate`` and
``override`` for every robot); launch the robots' ``edge.launch.py`` with the same
``control_side:=server`` so that they do not start theirs as well. On a robot short of CPU
this leaves the frames the robot's whole budget (``bench/README.md``, "The robot's spare
time").
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import (
    EnvironmentVariable,
    LaunchConfiguration,
    PathJoinSubstitution,
)
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

LAUNCH_DIR = Path(__file__).resolve().parent


def robot_namespaces(text):
    """'r1 r2' or 'r1,/r2' → ['/r1', '/r2']; '' → [] (the cloud's own namespace)."""
    names = text.replace(",", " ").split()
    return ["/" + name.strip("/") for name in names]


def include(name, arguments):
    # A scoped group: the included file's launch configurations stay inside it.
    return GroupAction([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_DIR / name)),
        launch_arguments=list(arguments.items()),
    )])


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
    controls = []
    if (LaunchConfiguration("control_side").perform(context) == "server"
            and LaunchConfiguration("adaptive").perform(context).lower() in ("true", "1")):
        # One control plane per robot, in the robot's namespace.
        controls = [include("control.launch.py", {
            "bundle": LaunchConfiguration("bundle"),
            "namespace": robot or LaunchConfiguration("namespace"),
            "objective": LaunchConfiguration("objective"),
            "frame_rate": LaunchConfiguration("frame_rate"),
            "override": LaunchConfiguration("override"),
        }) for robot in (namespaces or [""])]
    return [Node(
        package="split_infer",
        executable="cloud_node",
        name="cloud_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=parameters,
        output="screen",
        emulate_tty=True,
    ), *echoes, *controls]


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
        DeclareLaunchArgument("control_side", default_value="robot",
                              choices=["robot", "server"],
                              description="server: also start each robot's bandwidth monitor "
                                          "and scheduler here (control.launch.py)"),
        DeclareLaunchArgument("adaptive", default_value="true",
                              description="with control_side:=server, start the monitors "
                                          "and schedulers (true/false)"),
        DeclareLaunchArgument("objective", default_value="effective_accuracy",
                              choices=["effective_accuracy", "latency", "accuracy"],
                              description="what the schedulers optimise "
                                          "(control_side:=server)"),
        DeclareLaunchArgument("frame_rate", default_value="10.0",
                              description="camera frame rate (Hz) the schedulers plan for "
                                          "(control_side:=server)"),
        DeclareLaunchArgument("override", default_value="",
                              description="'split:ratio' pins every scheduler to one "
                                          "configuration (control_side:=server)"),
        OpaqueFunction(function=cloud_node),
    ])
