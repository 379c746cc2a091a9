"""Launch a whole split-inference graph on one host: the cloud node and one edge node per robot.

    ros2 launch split_infer split_inference.launch.py bundle:=/path/to/bundle
    ros2 launch split_infer split_inference.launch.py bundle:=/path/to/bundle robots:="r1 r2"

With ``robots`` empty, one edge node and the cloud share the launch namespace; otherwise each
robot gets an edge node in ``/<robot>`` (camera on ``/<robot>/image`` unless ``image_topic``
is given, relative to the robot) and the cloud serves all of them. It includes
``edge.launch.py`` and ``cloud.launch.py`` so the per-node arguments stay in one place.
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
from launch.substitutions import LaunchConfiguration

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
    actions = [include("cloud.launch.py", {"bundle": bundle,
                                           "robots": " ".join(robots)})]
    for robot in robots or [""]:
        actions.append(include("edge.launch.py", {
            "bundle": bundle,
            "namespace": "/" + robot.strip("/") if robot else "",
            "image_topic": LaunchConfiguration("image_topic"),
            "input_type": LaunchConfiguration("input_type"),
            "split_point": LaunchConfiguration("split_point"),
            "ratio": LaunchConfiguration("ratio"),
        }))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("bundle", description="path of the bundle directory"),
        DeclareLaunchArgument("robots", default_value="",
                              description="robot namespaces, e.g. 'r1 r2'; empty: one edge "
                                          "in the launch namespace"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera topic of every edge, relative to its robot"),
        DeclareLaunchArgument("input_type", default_value="raw", choices=["raw", "compressed"],
                              description="raw Image or CompressedImage input"),
        DeclareLaunchArgument("split_point", default_value="-1",
                              description="initial split point of every edge"),
        DeclareLaunchArgument("ratio", default_value="0.0",
                              description="initial ratio of every edge"),
        OpaqueFunction(function=graph),
    ])
