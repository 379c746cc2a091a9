"""Launch one robot's side of split_infer: the edge node (head + encoder) and, by default, the
bandwidth monitor and scheduler that adapt it.

    ros2 launch split_infer edge.launch.py namespace:=r1 image_topic:=/camera/image_raw
    ros2 launch split_infer edge.launch.py bundle:=/path/to/bundle namespace:=r1 adaptive:=false

Everything runs in ``namespace`` with relative topics: the edge takes ``image`` (or
``image/compressed``) and publishes ``features``; the cloud answers on ``receipts``; the
monitor turns the receipts into ``bandwidth_bps``, ``rtt_ms`` and ``bandwidth_lower_bound``,
which the edge's backpressure and the scheduler consume; the scheduler sets the edge's
``split_point`` and ``ratio`` through its parameter services. ``image_topic`` remaps the
camera input.

The monitor and scheduler only need the cloud's ``<ns>/receipts`` and the edge's parameter
services, so they could run on either host; they belong to one robot, so they start here, with
the edge, and ``edge.launch.py`` alone gives an adaptive robot. On a robot short of CPU they
take a share of it that the frames would use: the real-link testbed runs them beside the
cloud node with ``--control-side server`` (``bench/README.md``, "The robot's spare time").
``adaptive:=false`` leaves them out: the edge then stays on ``split_point``/``ratio`` unless
someone sets them (``ros2 param set``). With them starts the link prober, which sends short
packet trains on ``probe`` (at most 5 % of the estimate) so that the monitor measures the
link's capacity even when the frames use a small part of it; the cloud's ``probe_echo``
answers on ``probe_receipts``. ``probing:=false`` keeps it quiet (the estimate is then only a
lower bound whenever the frames do not fill the link).

``bundle`` defaults to the bundle the package installs (``share/split_infer/bundles/default``).
Tuning lives in ``config/edge.yaml``, ``config/bandwidth_monitor.yaml`` and
``config/scheduler.yaml`` (``params_file``, ``monitor_params_file``,
``scheduler_params_file``); the deployment values (bundle, input type, initial split point
and ratio, the scheduler's objective, frame rate and override) are launch arguments.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import (
    EnvironmentVariable,
    LaunchConfiguration,
    PathJoinSubstitution,
)
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

#: The edge node's name; the scheduler addresses it by this name, relative to the namespace
#: both run in.
EDGE_NODE = "edge_node"


def config_file(name):
    return PathJoinSubstitution([FindPackageShare("split_infer"), "config", name])


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
    monitor = Node(
        package="split_infer",
        executable="bandwidth_monitor",
        name="bandwidth_monitor",
        namespace=namespace,
        parameters=[LaunchConfiguration("monitor_params_file")],
        output="screen",
        emulate_tty=True,
    )
    scheduler = Node(
        package="split_infer",
        executable="scheduler",
        name="scheduler",
        namespace=namespace,
        parameters=[
            LaunchConfiguration("scheduler_params_file"),
            {
                "bundle": ParameterValue(LaunchConfiguration("bundle"), value_type=str),
                # Relative: resolved in the scheduler's namespace, which is the edge's.
                "edge_node": EDGE_NODE,
                "objective": ParameterValue(LaunchConfiguration("objective"), value_type=str),
                "frame_rate": ParameterValue(LaunchConfiguration("frame_rate"),
                                             value_type=float),
                "override": ParameterValue(LaunchConfiguration("override"), value_type=str),
            },
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
                              description="also start the bandwidth monitor and the scheduler "
                                          "(true/false)"),
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
        GroupAction([monitor, scheduler, prober],
                    condition=IfCondition(LaunchConfiguration("adaptive"))),
    ])
