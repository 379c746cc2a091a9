"""Launch one robot's control plane: the bandwidth monitor and the scheduler that adapt its edge.

    ros2 launch split_infer control.launch.py namespace:=r1

``edge.launch.py`` includes it on the robot (``control_side:=robot``, the default) and
``cloud.launch.py`` once per robot namespace on the server (``control_side:=server``); started
alone it adapts an edge that runs elsewhere. Both nodes run in the robot's ``namespace`` with
relative names: the monitor turns the cloud's ``receipts`` (and the prober's
``probe_receipts``) into ``bandwidth_bps``, ``rtt_ms`` and ``bandwidth_lower_bound``; the
scheduler reads those and the edge's ``metrics/*`` and sets ``edge_node``'s ``split_point``
and ``ratio`` through its parameter services, so the two only need the topics and services of
that namespace and run on either host.

Where they run matters on a robot short of CPU: beside the edge they take a share of it that
the frames would use; on the server only the edge's 1-Hz metrics and its parameter events
cross the link for them (``bench/README.md``, "The robot's spare time"). ``bundle`` must be
the edge's bundle (the scheduler plans with its measured table).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def config_file(name):
    return PathJoinSubstitution([FindPackageShare("split_infer"), "config", name])


def generate_launch_description():
    namespace = LaunchConfiguration("namespace")
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
                "edge_node": ParameterValue(LaunchConfiguration("edge_node"), value_type=str),
                "objective": ParameterValue(LaunchConfiguration("objective"), value_type=str),
                "frame_rate": ParameterValue(LaunchConfiguration("frame_rate"),
                                             value_type=float),
                "override": ParameterValue(LaunchConfiguration("override"), value_type=str),
            },
        ],
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription([
        DeclareLaunchArgument(
            "bundle",
            default_value=PathJoinSubstitution([FindPackageShare("split_infer"), "bundles",
                                                "default"]),
            description="path of the edge's bundle directory; default: the bundle the "
                        "package ships"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="the robot's namespace (the edge node's)"),
        DeclareLaunchArgument("edge_node", default_value="edge_node",
                              description="the edge node's name, relative to the namespace"),
        DeclareLaunchArgument("objective", default_value="effective_accuracy",
                              choices=["effective_accuracy", "latency", "accuracy"],
                              description="what the scheduler optimises"),
        DeclareLaunchArgument("frame_rate", default_value="10.0",
                              description="camera frame rate (Hz) the scheduler plans for"),
        DeclareLaunchArgument("override", default_value="",
                              description="'split:ratio' pins the scheduler to one "
                                          "configuration; empty: its policy decides"),
        DeclareLaunchArgument("monitor_params_file",
                              default_value=config_file("bandwidth_monitor.yaml"),
                              description="YAML file with the bandwidth monitor's parameters"),
        DeclareLaunchArgument("scheduler_params_file",
                              default_value=config_file("scheduler.yaml"),
                              description="YAML file with the scheduler's tuning parameters"),
        monitor,
        scheduler,
    ])
