"""Launch split_infer's edge node (head + encoder) for one robot.

    ros2 launch split_infer edge.launch.py bundle:=/path/to/bundle namespace:=r1 \
        image_topic:=/camera/image_raw

Topics are relative to ``namespace`` (``image`` or ``image/compressed`` in, ``features`` out,
``receipts`` and ``bandwidth_bps`` back); ``image_topic`` remaps the camera input. Tuning lives
in ``config/edge.yaml`` (``params_file``); the deployment-specific values (bundle, input type,
initial split point and ratio) are launch arguments.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    image_topic = LaunchConfiguration("image_topic")
    return LaunchDescription([
        DeclareLaunchArgument("bundle", description="path of the bundle directory"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="robot namespace (one per robot)"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera topic (sensor_msgs/Image, or the base of "
                                          "<topic>/compressed with input_type:=compressed)"),
        DeclareLaunchArgument("input_type", default_value="raw", choices=["raw", "compressed"],
                              description="raw Image or CompressedImage (PNG/JPEG) input"),
        DeclareLaunchArgument("split_point", default_value="-1",
                              description="initial split point; -1: the bundle's first "
                                          "preloaded configuration"),
        DeclareLaunchArgument("ratio", default_value="0.0",
                              description="initial ratio; 0: the first preloaded one for the "
                                          "split point"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("split_infer"), "config",
                                                "edge.yaml"]),
            description="YAML file with the edge node's tuning parameters"),
        Node(
            package="split_infer",
            executable="edge_node",
            name="edge_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    # Typed explicitly: launch parses untyped substitutions as YAML, which
                    # would turn "8" into an int for a double parameter (and a numeric path
                    # into a number).
                    "bundle": ParameterValue(LaunchConfiguration("bundle"), value_type=str),
                    "input_type": ParameterValue(LaunchConfiguration("input_type"),
                                                 value_type=str),
                    "split_point": ParameterValue(LaunchConfiguration("split_point"),
                                                  value_type=int),
                    "ratio": ParameterValue(LaunchConfiguration("ratio"), value_type=float),
                },
            ],
            remappings=[
                ("image", image_topic),
                ("image/compressed", [image_topic, "/compressed"]),
            ],
            output="screen",
            emulate_tty=True,
        ),
    ])
