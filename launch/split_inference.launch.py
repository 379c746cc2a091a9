"""Launch a whole adaptive split-inference graph on one host: the cloud node and, per robot, an
edge node with its link prober, bandwidth monitor and scheduler.

    ros2 launch split_infer split_inference.launch.py
    ros2 launch split_infer split_inference.launch.py bundle:=/path/to/bundle robots:="r1 r2"

With ``robots`` empty, one robot (edge node, link prober, bandwidth monitor, scheduler) and the
cloud share the launch namespace; otherwise each robot gets its four nodes in ``/<robot>``
(camera on ``/<robot>/image`` unless ``image_topic`` is given, relative to the robot) and the
one cloud node serves all of them. ``adaptive:=false`` leaves out the probers, monitors and
schedulers (fixed ``split_point``/``ratio``); ``control_side:=server`` starts the monitors and
schedulers from ``cloud.launch.py`` instead of each ``edge.launch.py`` (on one host the same
nodes in the same namespaces). ``bundle`` defaults to the bundle the package installs. It
includes ``edge.launch.py`` (once per robot) and ``cloud.launch.py``, which include
``control.launch.py``, so the per-node arguments stay in one place; their params files keep
the defaults given there.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

LAUNCH_DIR = Path(__file__).resolve().parent


def include(name, arguments):
    # A scoped group: each include's launch configurations stay inside it, so the second
    # robot does not inherit the first one's namespace.
    return GroupAction([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_DIR / name)),
        launch_arguments=list(arguments.items()),
    )])


def graph(context):
    robots = LaunchConfiguration("robots").perform(context).replace(",", " ").split()
    bundle = LaunchConfiguration("bundle")
    actions = [include("cloud.launch.py", {
        "bundle": bundle,
        "robots": " ".join(robots),
        "control_side": LaunchConfiguration("control_side"),
        "adaptive": LaunchConfiguration("adaptive"),
        "objective": LaunchConfiguration("objective"),
        "frame_rate": LaunchConfiguration("frame_rate"),
        "override": LaunchConfiguration("override"),
    })]
    for robot in robots or [""]:
        actions.append(include("edge.launch.py", {
            "bundle": bundle,
            "namespace": "/" + robot.strip("/") if robot else "",
            "image_topic": LaunchConfiguration("image_topic"),
            "input_type": LaunchConfiguration("input_type"),
            "split_point": LaunchConfiguration("split_point"),
            "ratio": LaunchConfiguration("ratio"),
            "adaptive": LaunchConfiguration("adaptive"),
            "control_side": LaunchConfiguration("control_side"),
            "objective": LaunchConfiguration("objective"),
            "frame_rate": LaunchConfiguration("frame_rate"),
            "override": LaunchConfiguration("override"),
        }))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "bundle",
            default_value=PathJoinSubstitution([FindPackageShare("split_infer"), "bundles",
                                                "default"]),
            description="path of the bundle directory (edges and cloud); default: the "
                        "bundle the package ships"),
        DeclareLaunchArgument("robots", default_value="",
                              description="robot namespaces, e.g. 'r1 r2'; empty: one robot "
                                          "in the launch namespace"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera topic of every edge, relative to its robot"),
        DeclareLaunchArgument("input_type", default_value="raw", choices=["raw", "compressed"],
                              description="raw Image or CompressedImage input"),
        DeclareLaunchArgument("split_point", default_value="-1",
                              description="initial split point of every edge"),
        DeclareLaunchArgument("ratio", default_value="0.0",
                              description="initial ratio of every edge"),
        DeclareLaunchArgument("adaptive", default_value="true",
                              description="start a bandwidth monitor and a scheduler per robot "
                                          "(true/false)"),
        DeclareLaunchArgument("control_side", default_value="robot",
                              choices=["robot", "server"],
                              description="where each robot's monitor and scheduler run: in "
                                          "its edge.launch.py or in cloud.launch.py (one host "
                                          "here; the choice matters across hosts)"),
        DeclareLaunchArgument("objective", default_value="effective_accuracy",
                              choices=["effective_accuracy", "latency", "accuracy"],
                              description="what every robot's scheduler optimises"),
        DeclareLaunchArgument("frame_rate", default_value="10.0",
                              description="camera frame rate (Hz) the schedulers plan for"),
        DeclareLaunchArgument("override", default_value="",
                              description="'split:ratio' pins every scheduler to one "
                                          "configuration; empty: their policy decides"),
        OpaqueFunction(function=graph),
    ])
