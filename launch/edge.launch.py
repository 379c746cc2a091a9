"""Launch one robot's side of split_infer: the edge node (head + encoder), the link prober and,
by default, the bandwidth monitor and scheduler that adapt it (``control.launch.py``).

    ros2 launch split_infer edge.launch.py namespace:=r1 image_topic:=/camera/image_raw
    ros2 launch split_infer edge.launch.py bundle:=/path/to/bundle namespace:=r1 adaptive:=false
    ros2 launch split_infer edge.launch.py namespace:=r1 control_side:=server

Everything runs in ``namespace`` with relative topics: the edge takes ``image`` (or
``image/compressed``) and publishes ``features``; the cloud answers on ``receipts``; the
monitor turns the receipts into ``bandwidth_bps``, ``rtt_ms`` and ``bandwidth_lower_bound``,
which the edge's backpressure and the scheduler consume; the scheduler sets the edge's
``split_point`` and ``ratio`` through its parameter services. ``image_topic`` remaps the
camera input.

The monitor and scheduler only need the cloud's ``<ns>/receipts`` and the edge's parameter
services, so they run on either host. ``control_side:=robot`` (the default) starts them here,
so that ``edge.launch.py`` alone gives an adaptive robot. On a robot short of CPU they take a
share of it that the frames would use: ``control_side:=server`` leaves them to the server's
``cloud.launch.py control_side:=server``, which starts them per robot namespace
(``bench/README.md``, "The robot's spare time", measures both). ``adaptive:=false`` leaves
them and the prober out: the edge then stays on ``split_point``/``ratio`` unless someone sets
them (``ros2 param set``). The link prober stays on the robot wherever the control plane runs:
it sends short packet trains on ``probe`` (at most 5 % of the estimate) so that the monitor
measures the link's capacity even when the frames use a small part of it; the cloud's
``probe_echo`` answers on ``probe_receipts``. ``probing:=false`` keeps it quiet (the estimate
is then only a lower bound whenever the frames do not fill the link).

``bundle`` defaults to the bundle the package installs (``share/split_infer/bundles/default``).
Tuning lives in ``config/edge.yaml``, ``config/bandwidth_monitor.yaml`` and
``config/scheduler.yaml`` (``params_file``, ``monitor_params_file``,
``scheduler_params_file``); the deployment values (bundle, input type, initial split point
and ratio, the scheduler's objective, frame rate and override) are launch arguments.
"""
from pathlib import Path

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    IncludeLaunchDescription,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import (
    AndSubstitution,
    EnvironmentVariable,
    EqualsSubstitution,
    LaunchConfiguration,
    PathJoinSubstitution,
)
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

#: The edge node's name; the scheduler addresses it by this name, relative to the namespace
#: both run in.
EDGE_NODE = "edge_node"
LAUNCH_DIR = Path(__file__).resolve().parent


def config_file(name):
    return PathJoinSubstitution([FindPackageShare("split_infer"), "config", name])


def include(name, arguments, condition):
    # A scoped group: the included file's launch configurations stay inside it.
    return GroupAction([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_DIR / name)),
        launch_arguments=list(arguments.items()),
    )], condition=condition)


def generate_launch_description():
    namespace = LaunchConfiguration("namespace")
    image_topic = LaunchConfiguration("image_topic")
    edge = Node(
        package="split_infer",
        executable="edge_node",
        name=EDGE_NODE,
        namespace=namespace,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                # Typed explicitly: launch parses untyped substitutions as YAML, which
                # would turn "8" into an int for a double parameter (and a numeric path
                # into a number).
                "bundle": ParameterValue(LaunchConfiguration("bundle"), value_type=str),
                "input_type": ParameterValue(LaunchConfiguration("input_type"), value_type=str),
                "split_point": ParameterValue(LaunchConfiguration("split_point"),
                                              value_type=int),
                "ratio": ParameterValue(LaunchConfiguration("ratio"), value_type=float),
                "auth_key_file": ParameterValue(LaunchConfiguration("auth_key_file"),
                                                value_type=str),
            },
        ],
        remappings=[
            ("image", image_topic),
            ("image/compressed", [image_topic, "/compressed"]),
        ],
        output="screen",
        emulate_tty=True,
    )
    prober = Node(
        package="split_infer",
        executable="link_prober",
        name="link_prober",
        namespace=namespace,
        parameters=[{"enabled": ParameterValue(LaunchConfiguration("probing"), value_type=bool),
                     "edge_node": EDGE_NODE}],
        output="screen",
        emulate_tty=True,
    )
    control = include("control.launch.py", {
        "bundle": LaunchConfiguration("bundle"),
        "namespace": namespace,
        "edge_node": EDGE_NODE,
        "objective": LaunchConfiguration("objective"),
        "frame_rate": LaunchConfiguration("frame_rate"),
        "override": LaunchConfiguration("override"),
        "monitor_params_file": LaunchConfiguration("monitor_params_file"),
        "scheduler_params_file": LaunchConfiguration("scheduler_params_file"),
    }, condition=IfCondition(AndSubstitution(
        LaunchConfiguration("adaptive"),
        EqualsSubstitution(LaunchConfiguration("control_side"), "robot"))))
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
                              description="robot namespace (one per robot)"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera topic (sensor_msgs/Image, or the base of "
                                          "<topic>/compressed with input_type:=compressed)"),
        DeclareLaunchArgument("input_type", default_value="raw", choices=["raw", "compressed"],
                              description="raw Image or CompressedImage (PNG/JPEG) input"),
        DeclareLaunchArgument("split_point", default_value="-1",
                              description="initial split point; -1: the preloaded "
                                          "configuration with the best effective accuracy "
                                          "on a link carrying just the smallest frames"),
        DeclareLaunchArgument("ratio", default_value="0.0",
                              description="initial ratio; 0: chosen the same way, at the "
                                          "split point"),
        DeclareLaunchArgument("auth_key_file", default_value="",
                              description="sign every frame with this robot's key "
                                          "(split_infer.frame_auth); empty: off"),
        DeclareLaunchArgument("adaptive", default_value="true",
                              description="also start the link prober, the bandwidth monitor "
                                          "and the scheduler (true/false)"),
        DeclareLaunchArgument("control_side", default_value="robot",
                              choices=["robot", "server"],
                              description="where the monitor and scheduler run: here, or on "
                                          "the server (cloud.launch.py control_side:=server)"),
        DeclareLaunchArgument("objective", default_value="effective_accuracy",
                              choices=["effective_accuracy", "latency", "accuracy"],
                              description="what the scheduler optimises"),
        DeclareLaunchArgument("frame_rate", default_value="10.0",
                              description="camera frame rate (Hz) the scheduler plans for"),
        DeclareLaunchArgument("override", default_value="",
                              description="'split:ratio' pins the scheduler to one "
                                          "configuration; empty: its policy decides"),
        DeclareLaunchArgument("params_file", default_value=config_file("edge.yaml"),
                              description="YAML file with the edge node's tuning parameters"),
        DeclareLaunchArgument("monitor_params_file",
                              default_value=config_file("bandwidth_monitor.yaml"),
                              description="YAML file with the bandwidth monitor's parameters"),
        DeclareLaunchArgument("scheduler_params_file",
                              default_value=config_file("scheduler.yaml"),
                              description="YAML file with the scheduler's tuning parameters"),
        edge,
        DeclareLaunchArgument("probing", default_value="true", choices=["true", "false"],
                              description="send probe trains so the monitor measures the "
                                          "link's headroom (needs the cloud's probe_echo)"),
        GroupAction([prober], condition=IfCondition(LaunchConfiguration("adaptive"))),
        control,
    ])
